"""Fit many spectra in parallel with Dask, into one results table that a rerun completes.

:func:`fit_many` reads each file on a Dask worker, fits it (least squares, or MCMC) and returns
one table row; the driver appends each finished row to the ECSV table and rewrites it atomically,
so an interrupted run loses nothing finished. A rerun skips every file whose row has
``status == "ok"`` and retries the others. A local cluster (``n_workers`` processes, one thread
each) is started unless ``scheduler`` names an existing Dask scheduler (``tcp://host:8786``).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_path
from ..errors import FitError, MissingFileError, PhotosphereError
from ..grids.load import load_grid_model
from ..io.prepare import prepare_spectrum
from ..ops.noise import with_uncertainty

__all__ = ["expand_paths", "fit_file", "fit_many", "load_grid_model", "prepare_spectrum",
           "rows_of", "with_uncertainty"]

_MODEL_CACHE: dict[Any, Any] = {}


def expand_paths(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named or matched by glob patterns, in order, without duplicates."""
    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches:
            raise MissingFileError(f"no file matches {text!r}; check the pattern")
        for m in matches:
            p = Path(m)
            if not p.is_file():
                raise MissingFileError(f"{p} does not exist or is not a file")
            if p not in out:
                out.append(p)
    return out


def _model(factory: Callable[[], Any]):
    """One model per worker process and factory (grids are loaded once, not per spectrum)."""
    import cloudpickle  # a dask dependency; also handles functions defined in __main__

    key = cloudpickle.dumps(factory)  # stable across the copies a worker receives
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = factory()
    return _MODEL_CACHE[key]


def _default_reader(path: str):
    from ..io import read

    return read(path)


def fit_file(path: str, model_factory: Callable[[], Any],
             reader: Callable[[str], Any] | None = None,
             fit_kwargs: Mapping[str, Any] | None = None, mcmc: bool = False) -> dict[str, Any]:
    """Fit one file; returns its table row (``status`` "ok" or the error message).

    Runs on a worker: user errors (bad file, out of grid...) become a row, not a crash.
    """
    import torch

    torch.set_num_threads(1)
    try:
        spectrum = (reader or _default_reader)(path)
        model = _model(model_factory)
        if mcmc:
            from .mcmc import sample

            result = sample(model, spectrum, progress=False, source=str(path),
                            **dict(fit_kwargs or {}))
        else:
            from .optimize import fit

            result = fit(model, spectrum, source=str(path), **dict(fit_kwargs or {}))
        row = result.to_row()
        row["status"] = "ok"
    except PhotosphereError as exc:
        row = {"source": str(path), "status": f"error: {exc}"}
    row["source"] = str(path)
    return row


def read_table(path: str | os.PathLike):
    """The results table at ``path`` (astropy Table), or None when it does not exist."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        return None
    return Table.read(path, format="ascii.ecsv")


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    from astropy.table import Table

    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = [v for v in values if v is not None]
        if numeric and all(isinstance(v, bool | np.bool_) for v in numeric):
            columns[name] = [bool(v) if v is not None else False for v in values]
        elif numeric and all(isinstance(v, int | float | np.number) and not isinstance(v, bool)
                             for v in numeric):
            columns[name] = [float(v) if v is not None else np.nan for v in values]
        else:
            columns[name] = ["" if v is None else str(v) for v in values]
    table = Table(columns, names=names)
    with atomic_path(path, suffix=".ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def rows_of(table) -> list[dict[str, Any]]:
    if table is None:
        return []
    rows = []
    for r in table:
        row = {}
        for name in table.colnames:
            v = r[name]
            row[name] = v.item() if hasattr(v, "item") else v
        rows.append(row)
    return rows


def fit_many(paths: Iterable[str | os.PathLike], model_factory: Callable[[], Any],
             output: str | os.PathLike = "results.ecsv", *, reader=None,
             fit_kwargs: Mapping[str, Any] | None = None, mcmc: bool = False,
             scheduler: str | None = None, n_workers: int = 2, processes: bool = True,
             progress: bool = True):
    """Fit every file in ``paths`` (names or glob patterns); returns the full results Table.

    model_factory: a picklable zero-argument callable building the forward model on a worker
    (e.g. ``functools.partial(load_grid, path)``). reader: ``path -> Spectrum`` (default
    :func:`photosphere.io.read`). fit_kwargs: passed to :func:`~photosphere.infer.optimize.fit`
    (or :func:`~photosphere.infer.mcmc.sample` with ``mcmc=True``).
    scheduler: address of an existing Dask scheduler; otherwise a LocalCluster of ``n_workers``
    single-threaded workers (``processes=False``: threads in this process).
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    files = expand_paths(paths)
    output = Path(output)
    rows = rows_of(read_table(output))
    done = {r["source"] for r in rows if r.get("status") == "ok"}
    todo = [p for p in files if str(p) not in done]
    if not todo:
        return read_table(output)
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                               dashboard_address=":0")
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise FitError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start it "
                           "(dask scheduler) or omit --scheduler for a local cluster") from None
    try:
        futures = [client.submit(fit_file, str(p), model_factory, reader, dict(fit_kwargs or {}),
                                 mcmc, pure=False) for p in todo]
        bar = tqdm(total=len(futures), desc="fitting", unit="spectrum", file=sys.stderr,
                   disable=not progress)
        for future in as_completed(futures):
            row = future.result()
            rows = [r for r in rows if r.get("source") != row["source"]] + [row]
            _write_table(rows, output)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return read_table(output)
