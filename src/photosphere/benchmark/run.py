"""Run engines over the benchmark's stars into one table that a rerun completes.

Each (engine, star) gives one row (:data:`COLUMNS`): the reference and our labels, their
differences (:mod:`photosphere.benchmark.stats`), the time, the flags, and ``status`` "ok" or
"error" with the message. A star whose file does not read or whose engine raises becomes an error
row; the run goes on. With ``output`` the table is rewritten atomically after every star, as
ECSV and as JSON beside it (same name, ``.json``); a rerun keeps the "ok" rows it finds there and
runs the other (engine, star) pairs again (errors are retried).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_path
from .._json import plain
from ..datasets.reference_stars import LABELS, Star
from ..errors import BenchmarkError
from .engines import Estimate
from .stats import add_differences, summarise

TEXT_COLUMNS = ("engine", "star", "file", "instrument", "tier", "resolution_source", "status",
                "flags", "message")
COLUMNS: tuple[str, ...] = (
    "engine", "star", "file", "instrument", "tier", "resolution", "resolution_source", "status",
    *(f"{n}{s}" for n in LABELS for s in ("_ref", "_ref_err", "", "_sigma", "_diff", "_z")),
    "chi2_reduced", "seconds", "flags", "message")
"""The table's columns, in order (text columns: :data:`TEXT_COLUMNS`; the others are floats)."""


def star_row(star: Star, engine: str, estimate: Estimate | None = None,
             error: BaseException | None = None, seconds: float = math.nan) -> dict[str, Any]:
    """The table row of ``star`` run by ``engine``: from its ``estimate``, or an error row with
    the ``error``'s message (tier and R then from the table)."""
    row: dict[str, Any] = {"engine": engine, "star": star.star, "file": star.file,
                           "instrument": star.instrument, "seconds": float(seconds)}
    for name in LABELS:
        row[f"{name}_ref"], row[f"{name}_ref_err"] = star.reference[name]
    if estimate is None:
        row.update(tier=star.tier(), resolution=star.resolution, resolution_source="table",
                   status="error", chi2_reduced=math.nan, flags="error",
                   message=f"{type(error).__name__}: {error}" if error else "not run")
        for name in LABELS:
            row[name] = row[f"{name}_sigma"] = math.nan
    else:
        row.update(tier=star.tier(estimate.resolution), resolution=estimate.resolution,
                   resolution_source=estimate.resolution_source, status="ok",
                   chi2_reduced=(math.nan if estimate.chi2_reduced is None
                                 else estimate.chi2_reduced),
                   flags=" ".join(estimate.flags), message=estimate.note)
        for name in LABELS:
            row[name], row[f"{name}_sigma"] = estimate.labels[name]
    row = add_differences(row)
    return {c: row[c] for c in COLUMNS}


def run_star(engine: Callable[[Star], Estimate], star: Star) -> dict[str, Any]:
    """One row: ``engine(star)`` timed, or the error it raised (never raises, except on
    KeyboardInterrupt)."""
    start = time.perf_counter()
    try:
        estimate = engine(star)
    except Exception as exc:  # any failure on one star is that star's error row
        return star_row(star, engine.name, error=exc, seconds=time.perf_counter() - start)
    return star_row(star, engine.name, estimate, seconds=time.perf_counter() - start)


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return str(row["engine"]), str(row["file"])


def read_rows(output: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a benchmark ECSV table (empty when the file does not exist)."""
    from astropy.table import Table

    output = Path(output)
    if not output.exists():
        return []
    try:
        table = Table.read(output, format="ascii.ecsv")
    except Exception as exc:
        raise BenchmarkError(f"{output} is not a readable ECSV table ({exc}); give another -o "
                             "or remove it") from None
    if tuple(table.colnames) != COLUMNS:
        raise BenchmarkError(f"{output} is not a benchmark table of this version (columns "
                             f"{table.colnames[:4]}...); give another -o or remove it")
    rows = []
    for record in table:
        row = {}
        for name in COLUMNS:
            value = record[name]
            if np.ma.is_masked(value):
                value = "" if name in TEXT_COLUMNS else math.nan
            row[name] = str(value) if name in TEXT_COLUMNS else float(value)
        rows.append(row)
    return rows


def document(rows: Sequence[dict[str, Any]], stars_dir: str | os.PathLike | None = None
             ) -> dict[str, Any]:
    """The JSON document of a run: rows, per-tier summary and provenance."""
    from .._version import __version__

    return {"photosphere_version": __version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "stars_dir": None if stars_dir is None else str(stars_dir),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "rows": list(rows), "summary": summarise(rows)}


def write_rows(rows: Sequence[dict[str, Any]], output: str | os.PathLike,
               stars_dir: str | os.PathLike | None = None) -> None:
    """Write ``rows`` to ``output`` (ECSV) and its ``.json`` sibling, each atomically."""
    from astropy.table import Table

    output = Path(output)
    columns = {c: [str(r[c]) if c in TEXT_COLUMNS else float(r[c]) for r in rows]
               for c in COLUMNS}
    table = Table(columns, names=COLUMNS,
                  dtype=[str if c in TEXT_COLUMNS else float for c in COLUMNS])
    with atomic_path(output, suffix=".ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    with atomic_path(output.with_suffix(".json"), suffix=".json") as tmp:
        tmp.write_text(json.dumps(plain(document(rows, stars_dir)), indent=1) + "\n")


def run_benchmark(stars: Sequence[Star], engines: Sequence, output: str | os.PathLike | None = None,
                  *, stars_dir: str | os.PathLike | None = None, progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Rows of every engine on every star (engine by engine, stars in order).

    output: ECSV table to complete (and rewrite after each star, with its JSON sibling); its
    "ok" rows for these (engine, star) pairs are reused, and rows of other stars are kept in the
    file. Each engine's model is loaded before its first star, outside the timing.
    """
    from tqdm import tqdm

    if output is not None and Path(output).suffix.lower() != ".ecsv":
        raise BenchmarkError(f"-o {output}: the output is an ECSV table; name it *.ecsv (the "
                             "JSON document is written beside it)")
    kept = read_rows(output) if output is not None else []
    done = {_key(r): r for r in kept if r["status"] == "ok"}
    todo = [(e, s) for e in engines for s in stars if (e.name, s.file) not in done]
    bar = tqdm(total=len(todo), unit="star", file=sys.stderr, disable=not progress)
    loaded: set[str] = set()
    try:
        for engine, star in todo:
            if engine.name not in loaded:
                getattr(engine, "load", lambda: None)()
                loaded.add(engine.name)
            bar.set_description(f"{engine.name} {star.star[:24]}")
            row = run_star(engine, star)
            done[_key(row)] = row
            if output is not None:
                kept = [r for r in kept if _key(r) != _key(row)] + [row]
                write_rows(kept, output, stars_dir)
            bar.update(1)
    finally:
        bar.close()
    return [done[(e.name, s.file)] for e in engines for s in stars]
