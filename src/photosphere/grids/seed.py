"""Training-set spectra shipped with the package, compressed, so a build starts from them.

The ``optical`` training set takes 3-6 hours on 2 cores. The spectra already synthesised ship
inside the package as a *seed* (``photosphere/data/training/<preset>-seed.h5``): a build of
that preset copies them into its journal first (:func:`seed_journal`) and synthesises only the
rest; ``read_built`` and the emulator training use them too. A seed is valid only for the exact
training-set definition it was made with (its spec JSON, which records the molecular line
list's identity): a seed of another definition is ignored with a note, never mixed in.

Compression: the normalised flux is quantised in steps of 1e-4 of the continuum over
[0, :data:`FLUX_MAX`] (a hundred times below the emulator's error and below the noise of any
real spectrum) into 16-bit integers, gzip + shuffle: about 31 kB per spectrum (measured: 41 kB
at 1.9e-5 steps; storing adjacent-pixel differences instead saved only 6 %); the continuum
stays float32. ``photosphere grid seed --preset NAME -o FILE`` writes one from a build's
journal.

File layout (format ``photosphere-training-seed`` version 1)::

    /index            (n,) int32 node indices of the spec
    /flux             (n, n_pix) uint16 quantised normalised flux, attr ``scale`` (flux = q·scale)
    /continuum        (n, n_cont) float32 erg/s/cm²/Å
    /mean_flux        (n, n_win) float64
    /continuum_error  (n,) float64
    /missing          (n,) bool;  /atmosphere_id, /provenance (n,) str (JSON)

Root attributes: ``format``, ``format_version``, ``name``, ``spec`` (JSON).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..errors import GridError
from .store import NodeResult, hdf5_format

FORMAT = "photosphere-training-seed"
FORMAT_VERSION = 1
#: upper end of the quantised flux range (normalised flux of a synthesis stays below 1.01)
FLUX_MAX = 1.25
#: quantisation levels over [0, FLUX_MAX]: a step of 1e-4 of the continuum
_LEVELS = 12500


def seed_path(preset: str) -> Path:
    """Where the package keeps the seed of a training-set preset (may not exist)."""
    return Path(__file__).resolve().parents[1] / "data" / "training" / f"{preset}-seed.h5"


def write_seed(path: str | Path, spec, nodes: Sequence[NodeResult]) -> Path:
    """Write the journalled ``nodes`` of training set ``spec`` as a seed file (atomically)."""
    import h5py

    nodes = sorted(nodes, key=lambda n: n.index)
    if not nodes:
        raise GridError(f"no spectra of {spec.name!r} to put in a seed; build some first")
    computed = [n for n in nodes if not n.missing]
    n_pix = len(computed[0].flux) if computed else 0
    n_cont = len(computed[0].continuum) if computed else 0
    n_win = len(computed[0].mean_flux) if computed else 0
    flux = np.zeros((len(nodes), n_pix), np.uint16)
    cont = np.full((len(nodes), n_cont), np.nan, np.float32)
    mean = np.full((len(nodes), n_win), np.nan)
    for row, node in enumerate(nodes):
        if node.missing:
            continue
        f = np.asarray(node.flux, float)
        if not np.all(np.isfinite(f)) or f.min() < 0 or f.max() > FLUX_MAX:
            raise GridError(f"spectrum {node.index} of {spec.name!r} has flux outside "
                            f"[0, {FLUX_MAX}]; it cannot be quantised into a seed")
        flux[row] = np.round(f / FLUX_MAX * _LEVELS).astype(np.uint16)
        cont[row] = node.continuum
        mean[row] = node.mean_flux
    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("index", data=np.array([n.index for n in nodes], np.int32))
        q = f.create_dataset("flux", data=flux, chunks=(1, max(n_pix, 1)), compression="gzip",
                             compression_opts=9, shuffle=True)
        q.attrs["scale"] = FLUX_MAX / _LEVELS
        f.create_dataset("continuum", data=cont, compression="gzip", shuffle=True)
        f.create_dataset("mean_flux", data=mean)
        f.create_dataset("continuum_error", data=[n.continuum_error for n in nodes])
        f.create_dataset("missing", data=[n.missing for n in nodes])
        strings = h5py.string_dtype()
        f.create_dataset("atmosphere_id", data=np.array([n.atmosphere_id for n in nodes],
                                                        dtype=strings))
        f.create_dataset("provenance", data=np.array(
            [json.dumps(n.provenance, sort_keys=True, default=str) for n in nodes],
            dtype=strings), compression="gzip")
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "name": spec.name, "spec": spec.to_json()})
    return path


def read_seed(path: str | Path) -> tuple[str, list[NodeResult]]:
    """``(spec JSON, nodes)`` of a seed file; GridError when it is not a readable seed."""
    import h5py

    path = Path(path)
    if hdf5_format(path) != FORMAT:
        raise GridError(f"{path} is not a training-set seed (format {hdf5_format(path)!r})")
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise GridError(f"{path} is seed format version {version}, newer than this "
                                f"photosphere reads ({FORMAT_VERSION}); upgrade")
            scale = float(f["flux"].attrs["scale"])
            index, missing = f["index"][:], f["missing"][:]
            flux, cont, mean = f["flux"][:], f["continuum"][:], f["mean_flux"][:]
            error, atm = f["continuum_error"][:], f["atmosphere_id"].asstr()[:]
            prov = f["provenance"].asstr()[:]
            spec_json = str(f.attrs["spec"])
    except (OSError, KeyError) as exc:
        raise GridError(f"{path} cannot be read as a training-set seed ({exc}); it is damaged: "
                        "reinstall photosphere or delete the file") from None
    nodes = [NodeResult(index=int(i), missing=bool(m),
                        flux=None if m else flux[k].astype(np.float32) * np.float32(scale),
                        continuum=None if m else cont[k], mean_flux=None if m else mean[k],
                        continuum_error=float(error[k]), atmosphere_id=str(atm[k]),
                        provenance=json.loads(prov[k]))
             for k, (i, m) in enumerate(zip(index, missing, strict=True))]
    return spec_json, nodes


def seed_journal(journal, path: str | Path | None, quiet: bool = False) -> int:
    """Copy the seed's spectra that ``journal`` (a build's :class:`~.build.Journal`) lacks into
    it; returns how many. A missing seed, or one of another definition, copies nothing (the
    latter with a note on stderr)."""
    if path is None or not Path(path).is_file():
        return 0
    spec_json, nodes = read_seed(path)
    if spec_json != journal.spec.to_json():
        if not quiet:
            print(f"note: the shipped seed {path} was made for another definition of "
                  f"{journal.spec.name!r} (e.g. another line list); not used", file=sys.stderr)
        return 0
    done = journal.done()
    new = [n for n in nodes if n.index not in done and n.index < journal.spec.n_nodes]
    for node in new:
        journal.save(node)
    return len(new)
