"""Build a grid file: synthesise every node in parallel with Dask, resumably; write it atomically.

Resumability. While a build runs, each finished node is saved as its own small file in the
journal directory ``PATH.partial/nodes/`` (written to a temporary name, then renamed: a node file
that exists is complete). A killed build (even ``kill -9``) loses at most the nodes in flight;
rerunning the same build skips every journalled node. When all nodes are done the journal is
assembled into ``PATH`` through a temporary file and one rename, and the journal is removed, so
``PATH`` exists only as a complete grid. (A journal of per-node files is used instead of writing
into one HDF5 file because HDF5 is not crash-consistent: a process killed inside ``H5Fflush`` can
leave a file that no longer opens, losing every finished node with it.)

Parallelism. Tasks run on a ``dask.distributed`` cluster: a ``LocalCluster`` with one thread per
worker by default, or an existing cluster given by scheduler address. Workers return spectra
already reduced to the stored sampling; this process is the only writer.

Synthesizer. Any function ``synthesizer(teff, logg, feh, alpha, vmic, *, wavelength_min,
wavelength_max, step, atmosphere)`` returning an object with ``wavelength`` (Å), ``flux``
(normalised), ``continuum`` (erg/s/cm²/Å) and ``provenance`` (dict), like
``photosphere.grids.synth.turbospectrum.synthesize`` (the default). A synthesizer that raises
:class:`~photosphere.errors.OutOfGridError` marks the node as missing (no model atmosphere).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._lock import file_lock
from .._version import __version__
from ..errors import DependencyError, GridError, NetworkError, OutOfGridError
from .presets import GridSpec
from .seed import seed_journal
from .store import GridSampling, NodeResult, reduce_node, write_grid

Synthesizer = Callable[..., Any]
#: Å synthesised beyond each end of the grid, so flux-conserving rebinning has input at the edges.
SYNTHESIS_MARGIN = 1.0
#: How long to wait for an existing Dask scheduler (``scheduler=ADDRESS``) to answer.
SCHEDULER_TIMEOUT = "10s"


@dataclass(frozen=True)
class BuildReport:
    """What a build did in this run (``n_computed`` nodes, of which ``n_synthesised`` gave spectra;
    nodes without an atmosphere cost nothing and do not count in the throughput).
    """

    path: Path
    n_nodes: int
    n_computed: int
    n_reused: int
    n_missing: int
    seconds: float
    n_cores: int
    n_synthesised: int = 0

    @property
    def models_per_hour(self) -> float:
        return 3600.0 * self.n_synthesised / self.seconds if self.seconds > 0 else float("nan")

    def throughput_line(self) -> str:
        per_core = self.models_per_hour / max(self.n_cores, 1)
        return (f"{self.n_synthesised} models in {self.seconds:.1f} s: "
                f"{self.models_per_hour:.1f} models/hour ({per_core:.1f} per core)")

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "n_nodes": self.n_nodes, "n_computed": self.n_computed,
                "n_reused": self.n_reused, "n_missing": self.n_missing,
                "n_synthesised": self.n_synthesised,
                "seconds": self.seconds, "n_cores": self.n_cores,
                "models_per_hour": self.models_per_hour}


# ------------------------------------------------------------------------------------ journal
class Journal:
    """The ``PATH.partial`` directory of a build in progress: the spec and one file per node."""

    def __init__(self, output: Path, spec: GridSpec):
        self.root = Path(str(output) + ".partial")
        self.nodes = self.root / "nodes"
        self.spec = spec
        spec_file = self.root / "spec.json"
        if spec_file.exists():
            text = spec_file.read_text()
            if text != spec.to_json():
                previous = json.loads(text)
                raise GridError(
                    f"{self.root} holds an unfinished build of a different grid definition "
                    f"({previous.get('name')!r}); rerun that build to finish it, or delete "
                    f"{self.root} to start this one")
        else:
            self.nodes.mkdir(parents=True, exist_ok=True)
            tmp = self.root / "spec.json.tmp"
            tmp.write_text(spec.to_json())
            os.replace(tmp, spec_file)
        self.nodes.mkdir(parents=True, exist_ok=True)

    def _node_path(self, index: int) -> Path:
        return self.nodes / f"{index:07d}.npz"

    def done(self) -> set[int]:
        """Indices of journalled nodes (each file complete: written under a temporary name)."""
        out = set()
        for p in self.nodes.glob("*.npz"):
            try:
                out.add(int(p.stem))
            except ValueError:
                continue
        return out

    def save(self, node: NodeResult) -> None:
        tmp = self.nodes / f".{node.index:07d}.tmp.npz"
        np.savez(tmp, **node.to_arrays())
        os.replace(tmp, self._node_path(node.index))

    def load(self, index: int) -> NodeResult:
        path = self._node_path(index)
        try:
            with np.load(path) as d:
                return NodeResult.from_arrays(d)
        except (OSError, ValueError, KeyError) as exc:
            path.unlink(missing_ok=True)
            raise GridError(f"journalled node {path} is unreadable ({exc}); it was removed, "
                            "rerun the build to compute it again") from None

    def remove(self) -> None:
        shutil.rmtree(self.root)


# ------------------------------------------------------------------------------------ workers
def synthesize_node(synthesizer: Synthesizer, spec_json: str, index: int) -> NodeResult:
    """Synthesise node ``index`` and reduce it to the stored sampling (runs on a worker)."""
    spec = GridSpec.from_json(spec_json)
    labels = spec.node_labels(index)
    try:
        syn = synthesizer(labels["teff"], labels["logg"], labels["feh"], labels["alpha"],
                          labels["vmic"], wavelength_min=spec.wavelength_min - SYNTHESIS_MARGIN,
                          wavelength_max=spec.wavelength_max + SYNTHESIS_MARGIN,
                          step=spec.synthesis_step, atmosphere=spec.atmosphere)
    except OutOfGridError as exc:
        return NodeResult(index=index, missing=True, atmosphere_id=f"none: {exc}")
    provenance = dict(getattr(syn, "provenance", {}) or {})
    atm = provenance.get("atmosphere_id", provenance.get("atmosphere", ""))
    return reduce_node(index, GridSampling.from_spec(spec), np.asarray(syn.wavelength),
                       np.asarray(syn.flux), np.asarray(syn.continuum),
                       atmosphere_id=str(atm), provenance=provenance)


def default_synthesizer() -> Synthesizer:
    """Turbospectrum's ``synthesize`` once its binaries are built (else DependencyError)."""
    try:
        from .synth import turbospectrum
    except ImportError as exc:
        raise DependencyError(f"Turbospectrum synthesis is not available in this installation "
                              f"({exc}); install photosphere with its synthesis module") from None
    turbospectrum.ensure_built()
    return turbospectrum.synthesize


def _run_serial(synthesizer, spec_json, todo, node_fn=synthesize_node
                ) -> Iterator[tuple[int, NodeResult | Exception]]:
    for i in todo:
        try:
            yield i, node_fn(synthesizer, spec_json, i)
        except Exception as exc:  # reported per node after the others have finished
            yield i, exc


def _run_dask(client, synthesizer, spec_json, todo, node_fn=synthesize_node):
    from dask.distributed import as_completed

    futures = client.map(node_fn, [synthesizer] * len(todo), [spec_json] * len(todo),
                         todo, pure=False)
    index = {f.key: i for f, i in zip(futures, todo, strict=True)}
    try:
        for fut in as_completed(futures):
            try:
                yield index[fut.key], fut.result()
            except Exception as exc:
                yield index[fut.key], exc
            fut.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def _client(scheduler: str | None, n_workers: int | None, processes: bool):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise DependencyError("parallel builds need dask.distributed: pip install "
                              "'dask[distributed]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout=SCHEDULER_TIMEOUT), None
        except (OSError, TimeoutError) as exc:
            raise NetworkError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); check "
                               "the address or leave --scheduler out for a local cluster") from None
    n = n_workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                           dashboard_address=":0")  # any free port: 8787 may be taken
    return Client(cluster), cluster


def _provenance(spec: GridSpec, synthesizer: Synthesizer, nodes: list[NodeResult],
                command: str | None) -> dict[str, Any]:
    """Grid-level provenance: ours, plus every synthesizer provenance key that all nodes share.

    Keys whose value differs between nodes (atmosphere id, hashes of interpolated atmospheres)
    belong to the nodes: the /atmosphere_id dataset keeps the atmosphere of each.
    """
    merged: dict[str, set[str]] = {}
    computed = [n for n in nodes if not n.missing]
    for node in computed:
        for k, v in node.provenance.items():
            merged.setdefault(k, set()).add(v if isinstance(v, str) else json.dumps(v))
    prov: dict[str, Any] = {
        "code_version": f"photosphere {__version__}",
        "atmosphere_family": spec.atmosphere,
        "synthesizer": f"{getattr(synthesizer, '__module__', '?')}."
                       f"{getattr(synthesizer, '__qualname__', repr(synthesizer))}",
        "command": command if command is not None else " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "linelist_sha256": "",
    }
    for k, values in merged.items():
        if len(values) == 1 and all(k in n.provenance for n in computed):
            key = k if k not in prov or k == "linelist_sha256" else f"synthesis_{k}"
            prov[key] = next(iter(values))
    return prov


def _kind(spec) -> tuple[Callable[..., NodeResult], Callable[..., Path]]:
    """The node synthesis and the file writer of a grid or a training set."""
    from .training_set import TrainingSetSpec, synthesize_sample, write_training_set

    if isinstance(spec, TrainingSetSpec):
        return synthesize_sample, write_training_set
    return synthesize_node, write_grid


def build_grid(spec: GridSpec, output: str | Path, *, synthesizer: Synthesizer | None = None,
               scheduler: str | None = None, n_workers: int | None = None,
               processes: bool = True, client=None, progress: bool = True,
               overwrite: bool = False, command: str | None = None,
               seed: str | Path | None = None) -> BuildReport:
    """Synthesise every node of ``spec`` and write the grid file ``output`` (resumable).

    spec: a :class:`GridSpec` (rectilinear grid) or a
    :class:`~photosphere.grids.training_set.TrainingSetSpec` (scattered labels over windows).

    scheduler: ``None`` for a local Dask cluster of ``n_workers`` single-threaded workers
    (``processes=False`` keeps them as threads), a scheduler address (``"tcp://host:8786"``) to
    use an existing cluster, or ``"synchronous"`` to run in this process without Dask.
    client: an existing ``dask.distributed.Client`` (overrides ``scheduler``).
    seed: a training-set seed file (:mod:`.seed`) whose spectra are journalled first, so only
    the rest is synthesised (ignored when made for another definition).
    Returns a :class:`BuildReport`; prints the throughput line on stderr. Holds the output's
    lock (:mod:`photosphere._lock`) throughout: a second build of the same output raises
    :class:`~photosphere.errors.BusyError` at once.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # one build per output at a time: a second one refuses at once instead of synthesising
    # every node again and colliding with the first at the end
    with file_lock(output, wait=False, what="grid",
                   hint="wait for that build to finish (it resumes where it stops), or choose "
                        "another -o"):
        return _build_grid(spec, output, synthesizer=synthesizer, scheduler=scheduler,
                           n_workers=n_workers, processes=processes, client=client,
                           progress=progress, overwrite=overwrite, command=command,
                           seed=seed)


def _build_grid(spec: GridSpec, output: Path, *, synthesizer, scheduler, n_workers, processes,
                client, progress, overwrite, command, seed=None) -> BuildReport:
    from tqdm import tqdm

    if output.exists() and not overwrite:
        raise GridError(f"{output} already exists; pass overwrite=True (--overwrite) to rebuild "
                        "it, or choose another output path")
    synthesizer = synthesizer or default_synthesizer()
    journal = Journal(output, spec)
    seeded = seed_journal(journal, seed, quiet=not progress)
    if progress and seeded:
        print(f"{seeded} spectra taken from the shipped seed {seed}", file=sys.stderr)
    done = journal.done()
    todo = [i for i in range(spec.n_nodes) if i not in done]
    if progress and done:
        print(f"resuming {journal.root}: {len(done)} of {spec.n_nodes} nodes already done",
              file=sys.stderr)
    spec_json = spec.to_json()
    node_fn, write = _kind(spec)
    start = time.perf_counter()
    failures: dict[int, Exception] = {}
    n_synthesised = 0
    own_client = cluster = None
    n_cores = 1
    if todo and client is None and scheduler != "synchronous":
        own_client, cluster = _client(scheduler, n_workers, processes)
        client = own_client
    try:
        if todo and client is not None:
            n_cores = max(sum(client.nthreads().values()), 1)
            results = _run_dask(client, synthesizer, spec_json, todo, node_fn)
        else:
            results = _run_serial(synthesizer, spec_json, todo, node_fn)
        bar = tqdm(total=spec.n_nodes, initial=len(done), desc=f"grid {spec.name}", unit="model",
                   file=sys.stderr, disable=not progress)
        with bar:
            for i, res in results:
                if isinstance(res, Exception):
                    failures[i] = res
                else:
                    journal.save(res)
                    n_synthesised += not res.missing
                bar.update(1)
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - start
    if failures:
        first_i, first = next(iter(failures.items()))
        if isinstance(first, DependencyError):
            raise first
        raise GridError(
            f"{len(failures)} node(s) failed, first {spec.node_labels(first_i)}: "
            f"{type(first).__name__}: {first}; the {spec.n_nodes - len(failures)} finished "
            f"node(s) are kept in {journal.root}, rerun the build to retry the failed ones")
    nodes = [journal.load(i) for i in range(spec.n_nodes)]
    provenance = _provenance(spec, synthesizer, nodes, command)
    write(output, spec, nodes, provenance)
    journal.remove()
    report = BuildReport(path=output, n_nodes=spec.n_nodes, n_computed=len(todo),
                         n_reused=len(done), n_missing=sum(n.missing for n in nodes),
                         seconds=seconds, n_cores=n_cores, n_synthesised=n_synthesised)
    if progress:
        print(report.throughput_line(), file=sys.stderr)
    return report
