"""Delimited tables with a header row naming the columns (``.csv``, ``.tsv``; comma, tab or
semicolon separated), e.g. the iSpec-style ``waveobs  flux  err`` files of Griffith et al. 2022.

The wavelength column is found by name (``waveobs``, ``wavelength``, ``wave``, ``lambda``,
``wl``), flux by ``flux``/``fl``/``norm_flux``, σ by ``err``/``error``/``sigma``/``uncertainty``
(or ``ivar``, σ = 1/√ivar). The unit comes from the column name (``wavelength_nm``,
``wave[A]``, ``lambda(um)``), else from the iSpec convention that ``waveobs`` is in nm, else
the values must look like Å. Wavelengths are converted to Å and the file's unit is recorded in
``meta.extra['wavelength_unit_in_file']``. Air/vacuum: a name such as ``wave_air`` /
``wavelength_vac``, else assumed (air for optical wavelengths) unless ``medium=`` says.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, UnitsError
from ..spectrum import Spectrum, SpectrumMeta
from ._common import angstrom_per_unit, check_path, medium_from_text, resolve_medium, to_angstrom
from ._instrument import instrument_extras
from .text import build_1d

_WAVE = ("waveobs", "wavelength", "wave", "lambda", "wl", "wavelengths", "lam")
_FLUX = ("flux", "fl", "norm_flux", "normalized_flux", "normalised_flux", "spectrum")
_SIGMA = ("err", "error", "sigma", "uncertainty", "flux_err", "flux_error", "noise", "e_flux")
_IVAR = ("ivar", "inverse_variance", "invvar")
_UNIT = re.compile(r"^(?P<base>.+?)(?:[\s_]*[\[(](?P<bracket>[^\])]+)[\])]|"
                   r"_(?P<suffix>angstroms?|aa|a|ang|nm|um|micron|microns))$", re.I)
_MEDIUM_TOKENS = (("_vacuum", "vacuum"), ("_vac", "vacuum"), ("(vacuum)", "vacuum"),
                  ("(vac)", "vacuum"), ("_air", "air"), ("(air)", "air"))
#: iSpec writes wavelengths in nm under the name ``waveobs`` (Blanco-Cuaresma et al. 2014).
ISPEC_WAVEOBS_UNIT = "nm"


def _split(line: str, delimiter: str | None) -> list[str]:
    return [c.strip().strip('"').strip("'") for c in
            (line.split(delimiter) if delimiter else line.split())]


def _delimiter(line: str) -> str | None:
    for d in ("\t", ",", ";"):
        if d in line:
            return d
    return None


def header_names(path: Path) -> list[str] | None:
    """The column names of the first non-comment line, or None when it is numeric."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            names = _split(s, _delimiter(s))
            try:
                [float(n) for n in names]
            except ValueError:
                return names
            return None
    return None


def _parse_name(name: str) -> tuple[str, str | None, str | None]:
    """(base name, unit or None, medium or None) of a header such as ``wave_air_nm``."""
    low = name.strip().lower()
    medium = None
    for token, med in _MEDIUM_TOKENS:
        if token in low:
            medium, low = med, low.replace(token, "")
            break
    m = _UNIT.match(low)
    if m:
        return m.group("base").strip(" _"), m.group("bracket") or m.group("suffix"), medium
    return low, None, medium


def _find(parsed: list[tuple[str, str | None, str | None]], candidates) -> int | None:
    for cand in candidates:
        for i, (base, _, _) in enumerate(parsed):
            if base == cand:
                return i
    return None


def read_csv_table(path: str | os.PathLike, *, medium: str | None = None,
                   wavelength_unit: str | None = None, flux_unit: str | None = None) -> Spectrum:
    """Read a delimited table with a header row into a :class:`~photosphere.Spectrum` (Å).

    wavelength_unit: overrides the unit taken from the column name. Raises FileFormatError
    naming the columns when no wavelength or flux column is found.
    """
    p = check_path(path)
    what = f"read_csv_table({p})"
    names = header_names(p)
    if names is None:
        raise FileFormatError(f"{what}: no header row naming the columns; add one (e.g. "
                              "'wavelength,flux,sigma') or read the file with read_text")
    parsed = [_parse_name(n) for n in names]
    iw, i_f = _find(parsed, _WAVE), _find(parsed, _FLUX)
    if iw is None or i_f is None:
        role = "wavelength" if iw is None else "flux"
        wanted = ", ".join(_WAVE if iw is None else _FLUX)
        raise FileFormatError(f"{what}: no {role} column among {names}; name one of them "
                              f"{wanted} (with a unit if not Å, e.g. wavelength_nm)")
    i_s, i_iv = _find(parsed, _SIGMA), _find(parsed, _IVAR)
    with open(p, encoding="utf-8", errors="replace") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    delimiter = _delimiter(lines[0])
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = _split(line, delimiter)
        if len(values) != len(names):
            raise FileFormatError(f"{what}: table row {number} (header = row 1) has "
                                  f"{len(values)} values but the header names {len(names)} "
                                  "columns; fix the ragged row")
        try:
            rows.append([np.nan if v in ("", "nan", "NaN") else float(v) for v in values])
        except ValueError:
            raise FileFormatError(f"{what}: table row {number} ({line.strip()[:60]!r}) is not "
                                  "numeric; every row after the header must hold numbers"
                                  ) from None
    if not rows:
        raise FileFormatError(f"{what}: a header but no data rows")
    data = np.array(rows, float)
    unit = wavelength_unit or parsed[iw][1] or \
        (ISPEC_WAVEOBS_UNIT if parsed[iw][0] == "waveobs" else None)
    if unit is not None and angstrom_per_unit(unit) is None:
        raise UnitsError(f"{what}: wavelength unit {unit!r} is not a length; pass "
                         "wavelength_unit='nm' (or 'Angstrom', 'um')")
    wave = to_angstrom(data[:, iw], unit, what=what)
    sigma = data[:, i_s] if i_s is not None else None
    if sigma is None and i_iv is not None:
        iv = data[:, i_iv]
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = np.where(iv > 0, 1.0 / np.sqrt(iv), np.inf)
    recorded = parsed[iw][2] or medium_from_text(names[iw])
    med, medium_extra = resolve_medium(medium, recorded, wave, what=what,
                                       recorded_source=f"column name {names[iw]!r}")
    instrument, extra = instrument_extras(None, p)
    extra.update(medium_extra)
    extra.update({"product": "csv_table", "columns": names,
                  "wavelength_unit_in_file": unit or "Angstrom"})
    if unit and angstrom_per_unit(unit) != 1.0:
        extra["wavelength_note"] = (f"column {names[iw]!r} is in {unit}"
                                    + (" (iSpec convention for waveobs)" if not parsed[iw][1]
                                       and not wavelength_unit else "")
                                    + "; converted to Å")
    flux = data[:, i_f]
    finite = flux[np.isfinite(flux)]
    normalised = "norm" in names[i_f].lower()
    if normalised:
        extra["flux_normalised_from"] = f"column name {names[i_f]!r}"
    elif finite.size and 0.5 < float(np.median(finite)) < 1.5 and \
            float(np.percentile(finite, 99)) < 1.6:
        normalised = True
        extra["flux_normalised_from"] = (f"the values (median {np.median(finite):.3f}, 99th "
                                         f"percentile {np.percentile(finite, 99):.3f})")
    meta = SpectrumMeta(instrument=instrument, source=str(p), extra=extra)
    return build_1d(wave, flux, sigma, med,
                    flux_unit or ("normalized" if normalised else "arbitrary"), what, meta)
