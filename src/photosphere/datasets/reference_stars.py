"""Real stars with reference labels (the benchmark's table) and the tier each star belongs to.

``labels.csv`` (one row per star) has the columns ``file`` (relative to the table's folder; it may
point outside it, e.g. ``../optical/...``), ``star``, ``instrument``, ``resolution`` (resolving
power R), ``teff``/``teff_err`` (K), ``logg``/``logg_err`` (dex, cgs), ``feh``/``feh_err`` (dex),
``vsini`` (km/s, may be empty), ``label_source`` and ``notes``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BenchmarkError

LABELS: tuple[str, ...] = ("teff", "logg", "feh")
"""The labels compared with the references, in table order."""

TIERS: tuple[str, ...] = ("FGK", "metal-poor", "M dwarf", "giant", "MILES", "other")
"""Tier names, in the order summaries list them."""

HIGH_RESOLUTION = 20_000.0
"""R at and above which a spectrum is high-resolution; below it the star is in the MILES tier."""

REQUIRED_COLUMNS = ("file", "star", "instrument", "resolution", "teff", "teff_err", "logg",
                    "logg_err", "feh", "feh_err")


def tier_of(teff: float, logg: float, feh: float, resolution: float) -> str:
    """The benchmark tier of a star, from its reference labels and the file's resolving power.

    teff: K; logg: dex (cgs); feh: [Fe/H] dex; resolution: R = λ/Δλ of the spectrum.
    Rules, first match wins:

    - ``MILES``: R < 20 000 (low resolution, whatever the star);
    - ``M dwarf``: Teff < 4000 K and log g ≥ 4;
    - ``metal-poor``: [Fe/H] < −1.5;
    - ``giant``: log g < 3.5 (and not metal-poor);
    - ``FGK``: 4000 ≤ Teff ≤ 7000 K and [Fe/H] ≥ −1.5 (high-resolution FGK dwarfs and subgiants);
    - ``other``: anything else (hotter than 7000 K, or a cool star with 3.5 ≤ log g < 4).
    """
    if not resolution >= HIGH_RESOLUTION:
        return "MILES"
    if teff < 4000.0 and logg >= 4.0:
        return "M dwarf"
    if feh < -1.5:
        return "metal-poor"
    if logg < 3.5:
        return "giant"
    if 4000.0 <= teff <= 7000.0:
        return "FGK"
    return "other"


@dataclass(frozen=True)
class Star:
    """One row of ``labels.csv``.

    path: the spectrum file (or folder) resolved against the table's folder.
    reference: ``{label: (value, uncertainty)}`` for teff (K), logg (dex), feh (dex).
    resolution: R from the table (used when the file's header does not give it).
    """

    star: str
    file: str
    path: Path
    instrument: str
    resolution: float
    reference: dict[str, tuple[float, float]]
    vsini: float | None = None
    label_source: str = ""
    notes: str = ""

    def tier(self, resolution: float | None = None) -> str:
        """:func:`tier_of` this star at ``resolution`` (default: the table's R)."""
        ref = {k: v for k, (v, _) in self.reference.items()}
        return tier_of(ref["teff"], ref["logg"], ref["feh"],
                       self.resolution if resolution is None else resolution)


def _number(row: dict[str, str], column: str, where: str, optional: bool = False) -> float | None:
    text = (row.get(column) or "").strip()
    if not text and optional:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BenchmarkError(f"{where}: column {column!r} is {text!r}, not a finite number; fix "
                             "the table")
    return value


def read_stars(table: str | os.PathLike) -> list[Star]:
    """The stars of a ``labels.csv`` table, in file order (see the module docstring)."""
    table = Path(table)
    if not table.is_file():
        raise BenchmarkError(f"no labels table at {table}; pass the stars folder that holds "
                             "labels.csv")
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{table} lacks the columns {missing}; it needs "
                                 f"{', '.join(REQUIRED_COLUMNS)}")
        rows = list(reader)
    stars = []
    for i, row in enumerate(rows, start=2):
        where = f"{table} line {i}"
        stars.append(Star(
            star=row["star"].strip(), file=row["file"].strip(),
            path=table.parent / row["file"].strip(), instrument=row["instrument"].strip(),
            resolution=_number(row, "resolution", where),
            reference={n: (_number(row, n, where), _number(row, f"{n}_err", where))
                       for n in LABELS},
            vsini=_number(row, "vsini", where, optional=True),
            label_source=(row.get("label_source") or "").strip(),
            notes=(row.get("notes") or "").strip()))
    return stars


def resolution_of(spectrum, star: Star) -> tuple[float, str]:
    """The resolving power of ``spectrum``: the reader's (``meta.extra['resolution']`` or
    ``['resolving_power']``, from the file header) when it gives one, else the table's."""
    extra = getattr(spectrum.meta, "extra", {}) or {}
    for key in ("resolution", "resolving_power"):
        value = extra.get(key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value, "header"
    return float(star.resolution), "table"


def select(stars: Sequence[Star], names: Iterable[str] | None = None, tier: str | None = None,
           limit: int | None = None) -> list[Star]:
    """A subset of ``stars``: those matching any of ``names`` (case-insensitive substring of the
    star's name or of its file), then those of ``tier``, then the first ``limit``."""
    out = list(stars)
    if names:
        chosen = []
        for name in names:
            key = name.lower()
            hits = [s for s in stars if key in s.star.lower() or key in s.file.lower()]
            if not hits:
                raise BenchmarkError(f"--stars {name!r} matches no star or file of the table; "
                                     "give part of a name in its 'star' or 'file' column")
            chosen += [s for s in hits if s not in chosen]
        out = [s for s in out if s in chosen]
    if tier is not None:
        if tier not in TIERS:
            raise BenchmarkError(f"tier {tier!r} is not known; use one of {', '.join(TIERS)}")
        out = [s for s in out if s.tier() == tier]
    if limit is not None:
        if limit < 1:
            raise BenchmarkError(f"--limit {limit} must be at least 1")
        out = out[:limit]
    return out


def default_stars_dir() -> Path:
    """``$PHOTOSPHERE_SHARED_DATA/stars``, else ``../shared/data/stars`` beside the repository
    this package is installed from (a source checkout)."""
    env = os.environ.get("PHOTOSPHERE_SHARED_DATA")
    if env:
        return Path(env) / "stars"
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "stars"
