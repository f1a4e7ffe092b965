"""Fit many spectra in parallel with Dask, into one results table that a rerun completes.

:func:`fit_many` reads each file on a Dask worker, fits it (least squares, or MCMC) and returns
one table row; the driver appends each finished row to the ECSV table and rewrites it atomically,
so an interrupted run loses nothing finished. A rerun skips every file whose row has
``status == "ok"`` and retries the others. Any exception while reading or fitting one file,
an ordinary Python error included, becomes that file's ``error: ...`` row: the other files always
run. Each table update holds the table's lock (:mod:`photosphere._lock`) and merges into what is
on disk, so two runs writing the same table never lose each other's rows. A local cluster
(``n_workers`` processes, one thread each) is started unless ``scheduler`` names an existing
Dask scheduler (``tcp://host:8786``).
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
from .._lock import file_lock
from ..errors import FileFormatError, FitError, MissingFileError, PhotosphereError
from ..grids.load import load_grid_model
from ..io.prepare import mask_nonpositive, read_spectrum
from ..ops.noise import with_uncertainty
from .validity import MIN_SNR, check_spectrum

__all__ = ["expand_paths", "fit_file", "fit_many", "load_grid_model", "mask_nonpositive",
           "prepare_spectrum", "read_spectrum", "rows_of", "with_uncertainty"]

_MODEL_CACHE: dict[Any, Any] = {}


def expand_paths(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named or matched by glob patterns, in order, without duplicates (a folder counts
    when it holds a three-file text spectrum, :mod:`photosphere.io.text_folder`)."""
    from ..io.text_folder import is_text_folder

    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches:
            raise MissingFileError(f"no file matches {text!r}; check the pattern")
        for m in matches:
            p = Path(m)
            if not (p.is_file() or (p.is_dir() and is_text_folder(p))):
                raise MissingFileError(f"{p} does not exist or is not a file (or a folder of "
                                       "wavelength/flux/ivar text files)")
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


def _default_reader(path: str, medium: str | None = None):
    return read_spectrum(path, **({"medium": medium} if medium else {}))


def prepare_spectrum(path: str, orders=None, wavelength_range=None, snr: float | None = None,
                     medium: str | None = None):
    """Read ``path`` for fitting: keep ``orders`` (row indices) of an echelle spectrum, mask
    outside ``wavelength_range`` (Å, Å), refuse it when it cannot be a star
    (:func:`.validity.check_spectrum`), mask where the flux is not positive
    (:func:`mask_nonpositive`), and give it σ (from ``snr`` when given, else
    :func:`with_uncertainty`). medium: the air/vacuum frame for files that do not record it
    (``photosphere.io.read(..., medium=)``)."""
    from ..spectrum import EchelleSpectrum

    spectrum = _default_reader(path, medium)
    if orders is not None:
        if not isinstance(spectrum, EchelleSpectrum):
            raise FitError(f"--orders needs an echelle spectrum; {path} is one-dimensional")
        spectrum = spectrum.select_orders(list(orders))
    if wavelength_range is not None:
        spectrum = spectrum.slice(float(wavelength_range[0]), float(wavelength_range[1]))
    check_spectrum(spectrum, path)
    spectrum = mask_nonpositive(spectrum)
    if snr is not None:
        if not (snr > 0 and np.isfinite(snr)):
            raise FitError(f"snr={snr} must be a finite number > 0")
        if snr < MIN_SNR:
            raise FitError(f"snr={snr:g} is below {MIN_SNR:g}, the least S/N per pixel the model "
                           "needs; no labels can be measured from it")
        level = np.median(np.abs(spectrum.flux[~spectrum.mask]))
        spectrum = spectrum.replace(sigma=np.full(spectrum.flux.shape, level / snr))
    return with_uncertainty(spectrum)


def fit_file(path: str, model_factory: Callable[[], Any],
             reader: Callable[[str], Any] | None = None,
             fit_kwargs: Mapping[str, Any] | None = None, mcmc: bool = False) -> dict[str, Any]:
    """Fit one file; returns its table row (``status`` "ok" or the error message).

    Runs on a worker: every exception (bad file, out of grid, or an unexpected Python error)
    becomes a row, ``status = "error: ..."``, not a crash of the batch. An ok row carries
    ``warnings`` (``;``-separated, empty when none): see :func:`.validity.result_warnings`.
    """
    import torch

    from .validity import result_warnings

    torch.set_num_threads(1)
    try:
        from .protocol import model_noted, noted, with_file_resolution, with_systematic_floor

        spectrum = (reader or _default_reader)(path)
        check_spectrum(spectrum, str(path))
        # a factory that chooses per spectrum (grids.default_model.ModelFactory) or a plain one
        choice = model_factory.choose(spectrum) if hasattr(model_factory, "choose") else None
        model = _model(model_factory if choice is None else model_factory.factory(choice))
        kwargs = dict(fit_kwargs or {})
        r_source = None
        if "settings" in kwargs:  # R from the file when the command gave none
            kwargs["settings"], r_source = with_file_resolution(kwargs["settings"], spectrum)
        if mcmc:
            from .mcmc import sample

            result = sample(model, spectrum, progress=False, source=str(path), **kwargs)
        else:
            from .optimize import fit

            result = fit(model, spectrum, source=str(path), **kwargs)
        if r_source is not None:  # a command's fit: its source of R and measured σ_sys
            result = with_systematic_floor(noted(result, r_source), model,
                                           kwargs["settings"].resolution)
        if choice is not None:
            result = model_noted(result, choice)
        row = result.to_row()
        if choice is not None:
            row["model"] = choice.name
        row["status"] = "ok"
        row["warnings"] = "; ".join(result_warnings(result, model=model))
    except PhotosphereError as exc:
        row = {"source": str(path), "status": f"error: {exc}"}
    except Exception as exc:  # one file's failure must not end the batch
        row = {"source": str(path), "status": f"error: {type(exc).__name__}: {exc}"}
    row["source"] = str(path)
    return row


def read_table(path: str | os.PathLike):
    """The results table at ``path`` (astropy Table), or None when it does not exist."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        return None
    try:
        return Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises many types for a non-ECSV file
        raise FileFormatError(f"results table {path} is not a readable ECSV table "
                              f"({type(exc).__name__}: {exc}); move it away or pass another "
                              "-o") from None


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


class _Table:
    """The rows of a results table on disk, updated one row at a time under its lock.

    The file is read again only when another process changed it since our last write (its
    inode and mtime differ), so a long batch does not re-read its own table per row.
    """

    def __init__(self, path: Path):
        self.path = path
        with file_lock(path, what="results table"):
            self.rows = rows_of(read_table(path))
            self._stamp = self._stat()

    def _stat(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def put(self, row: dict[str, Any]) -> None:
        with file_lock(self.path, what="results table"):
            if self._stat() != self._stamp:
                self.rows = rows_of(read_table(self.path))
            self.rows = [r for r in self.rows if r.get("source") != row["source"]] + [row]
            _write_table(self.rows, self.path)
            self._stamp = self._stat()


class _Claims:
    """Which files of a results table a live batch is fitting now, so that a concurrent batch
    on the same table leaves them to it instead of fitting them twice.

    A JSON map ``{file: pid}`` beside the table (``.NAME.claims.json``), read and written under
    the table's lock. A claim whose process is gone (killed, crashed) no longer counts, so a
    rerun after a kill takes its files back.
    """

    def __init__(self, table: Path):
        self.table = table
        self.path = table.parent / f".{table.name}.claims.json"
        self.mine: set[str] = set()

    def _read(self) -> dict[str, int]:
        import json

        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items() if _alive(int(v))}

    def _write(self, claims: dict[str, int]) -> None:
        import json

        if not claims:
            self.path.unlink(missing_ok=True)
            return
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(claims))

    def take(self, files: list[str]) -> tuple[list[str], dict[str, int]]:
        """Claim the ``files`` no live process holds; returns them, and the others with the
        pid holding each."""
        with file_lock(self.table, what="results table"):
            claims = self._read()
            busy = {f: claims[f] for f in files if f in claims and claims[f] != os.getpid()}
            free = [f for f in files if f not in busy]
            claims.update({f: os.getpid() for f in free})
            self._write(claims)
        self.mine.update(free)
        return free, busy

    def release(self) -> None:
        with file_lock(self.table, what="results table"):
            claims = {f: pid for f, pid in self._read().items() if f not in self.mine}
            self._write(claims)
        self.mine.clear()


def _alive(pid: int) -> bool:
    """True when a process with this id exists (this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rows_of(table) -> list[dict[str, Any]]:
    """The rows of a results table as plain dicts (an empty text cell, which ECSV reads back
    masked, as "")."""
    if table is None:
        return []
    rows = []
    for r in table:
        row = {}
        for name in table.colnames:
            v = r[name]
            if v is np.ma.masked:
                v = "" if table[name].dtype.kind in "USO" else None
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
    (e.g. ``functools.partial(load_grid, path)``), or a
    :class:`~photosphere.grids.default_model.ModelFactory` choosing the model per spectrum
    (each row then says which in ``model``, its result in ``provenance["model"]``).
    reader: ``path -> Spectrum`` (default :func:`photosphere.io.read`). fit_kwargs: passed
    to :func:`~photosphere.infer.optimize.fit` (or :func:`~photosphere.infer.mcmc.sample`
    with ``mcmc=True``).
    scheduler: address of an existing Dask scheduler; otherwise a LocalCluster of ``n_workers``
    single-threaded workers (``processes=False``: threads in this process).
    Files already fitted (an "ok" row) are not fitted again; files that another live batch on
    the same table is fitting are left to it and listed in the returned table's
    ``meta["busy"]`` (``{file: pid}``).
    """
    files = expand_paths(paths)
    output = Path(output)
    if n_workers < 1:
        raise FitError(f"n_workers={n_workers} must be >= 1 (--workers)")
    if not output.parent.is_dir() or output.is_dir():
        raise MissingFileError(f"results table {output}: the folder {output.parent} does not "
                               "exist or the path is a folder; create the folder or pass another "
                               "path")
    table = _Table(output)
    done = {r["source"] for r in table.rows if r.get("status") == "ok"}
    claims = _Claims(output)
    free, busy = claims.take([str(p) for p in files if str(p) not in done])
    try:
        if free:
            _fit_files(free, table, model_factory, reader, fit_kwargs, mcmc, scheduler,
                       n_workers, processes, progress)
    finally:
        claims.release()
    from astropy.table import Table

    result = read_table(output)
    result = Table() if result is None else result
    # files another live batch on this table is fitting now: left to it, not fitted twice
    result.meta["busy"] = busy
    return result


def _fit_files(todo: list[str], table: _Table, model_factory, reader, fit_kwargs, mcmc,
               scheduler, n_workers, processes, progress) -> None:
    """Fit ``todo`` on a Dask cluster, each row put in ``table`` as it comes (see fit_many)."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

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
        futures = {client.submit(fit_file, p, model_factory, reader, dict(fit_kwargs or {}),
                                 mcmc, pure=False): p for p in todo}
        bar = tqdm(total=len(futures), desc="fitting", unit="spectrum", file=sys.stderr,
                   disable=not progress)
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:  # a lost worker, an unpicklable result...
                row = {"source": futures[future],
                       "status": f"error: {type(exc).__name__}: {exc}"}
            table.put(row)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
