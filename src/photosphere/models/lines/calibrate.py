"""Turn per-line corrections learned on a star into a calibrated Turbospectrum line list.

The close-the-loop step (docs/lines.md): the clone of a synthetic Sun fitted to the real Sun
gives, per cloned line, Δ log10 A = log10(A_fit / A_initial), equal to Δ log gf in the weak-line
limit. :func:`calibrate_linelist` adds that Δ to the log gf of the atomic line in the synthesis
line list (Turbospectrum format, :mod:`photosphere.grids.synth.linelists`) that dominates each
cloned line: within ``tolerance`` Å of the cloned line's initial centre, the line with the
largest Boltzmann-weighted strength log gf − θ χ (θ = 5040 K / T, χ the lower level energy in
eV). Lines that vanished, were not observed or fall outside the fitted range are left alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._files import atomic_path
from ...errors import ModelError


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_linelist` changed: the number of corrections used, of list lines
    changed, and per changed line its wavelength (Å) and Δ log gf (dex)."""

    n_corrections: int
    n_changed: int
    wavelength: np.ndarray
    delta_log_gf: np.ndarray


def _row_fields(row: str) -> tuple[float, float, float]:
    """(wavelength Å, lower level energy eV, log gf) of one Turbospectrum line row."""
    parts = row.split()
    return float(parts[0]), float(parts[1]), float(parts[2])


def _with_log_gf(row: str, log_gf: float) -> str:
    """The row with its third field (log gf) replaced, keeping the other columns as written
    (Turbospectrum reads the rows list-directed, so the field width may change)."""
    return re.sub(r"^(\s*\S+\s+\S+\s+)(\S+)", lambda m: f"{m.group(1)}{log_gf:.3f}", row,
                  count=1)


def calibrate_linelist(source: str | os.PathLike, corrections, dest: str | os.PathLike, *,
                       tolerance: float = 0.01, teff: float = 5772.0,
                       max_correction: float = 1.5, max_depth: float | None = None
                       ) -> Calibration:
    """Write ``source`` (a Turbospectrum line list) to ``dest`` with corrected log gf values.

    corrections: table with ``centre_initial`` (Å, same medium as the list: air for the
    Gaia-ESO list), ``delta_log_amplitude`` (dex) and optionally the flags ``observed`` and
    ``vanished`` (as written by ``benchmarks/close_loop_lines.py``). tolerance: Å between a
    cloned line and the list lines it may stand for; teff: K of the star the corrections were
    learned on (for the Boltzmann weighting); max_correction: |Δ| larger than this (dex) is
    clipped; max_depth: when given, corrections of cloned lines deeper than this
    (``depth_initial``) are skipped — for saturated lines Δ log A is not Δ log gf. Raises
    :class:`ModelError` when the table lacks the columns.
    """
    from ...grids.synth.linelists import read_linelist

    names = getattr(corrections, "colnames", None) or list(corrections)
    missing = [c for c in ("centre_initial", "delta_log_amplitude") if c not in names]
    if missing:
        raise ModelError(f"the correction table lacks {missing}; write one with "
                         "benchmarks/close_loop_lines.py")
    centre = np.asarray(corrections["centre_initial"], float)
    delta = np.clip(np.asarray(corrections["delta_log_amplitude"], float), -max_correction,
                    max_correction)
    use = np.isfinite(delta)
    for flag, wanted in (("observed", True), ("vanished", False)):
        if flag in names:
            use &= np.asarray(corrections[flag], bool) == wanted
    if max_depth is not None and "depth_initial" in names:
        use &= np.asarray(corrections["depth_initial"], float) <= max_depth
    centre, delta = centre[use], delta[use]
    theta = 5040.0 / teff
    species = read_linelist(str(source))
    # every list line: (species index, row index, wavelength, strength)
    index = [(s, r, *_row_fields(row)) for s, sp in enumerate(species)
             for r, row in enumerate(sp.rows)]
    table = np.array([(s, r, w, gf - theta * chi) for s, r, w, chi, gf in index])
    order = np.argsort(table[:, 2])
    table = table[order]
    changes: dict[tuple[int, int], float] = {}
    lo = np.searchsorted(table[:, 2], centre - tolerance)
    hi = np.searchsorted(table[:, 2], centre + tolerance, side="right")
    for k in range(centre.size):
        if hi[k] > lo[k]:
            best = lo[k] + int(np.argmax(table[lo[k]:hi[k], 3]))
            key = (int(table[best, 0]), int(table[best, 1]))
            changes[key] = changes.get(key, 0.0) + float(delta[k])
    out, wave, dgf = [], [], []
    for s, sp in enumerate(species):
        out.append(f"'{sp.code}' {sp.ion:4d} {len(sp.rows):9d}")
        out.append(sp.name_line)
        for r, row in enumerate(sp.rows):
            if (s, r) in changes:
                w, _, gf = _row_fields(row)
                row = _with_log_gf(row, gf + changes[(s, r)])
                wave.append(w)
                dgf.append(changes[(s, r)])
            out.append(row)
    with atomic_path(Path(dest)) as tmp:
        tmp.write_text("\n".join(out) + "\n")
    return Calibration(n_corrections=int(centre.size), n_changed=len(changes),
                       wavelength=np.array(wave), delta_log_gf=np.array(dgf))
