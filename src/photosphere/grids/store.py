"""The HDF5 grid store: one file per grid, written atomically, read via :class:`GridStore`.

Layout (format ``photosphere-grid`` version 1; see docs/grids.md)::

    /labels/<name>         (n_i,) node values of each label axis, attr ``unit``
    /wavelength            (n_pix,) Å, log-uniform; attrs ``medium``, ``velocity_step`` (km/s)
    /flux                  (n_nodes, n_pix) normalised flux, one chunk per node, gzip+shuffle;
                           float32, or uint16 with attrs ``scale_factor``/``add_offset``
                           (flux = stored * scale_factor + add_offset)
    /continuum             (n_nodes, n_cont) float32 surface-flux continuum, erg/s/cm²/Å, sampled
                           at /continuum_wavelength (every ``continuum_stride`` pixels; smooth)
    /continuum_error       (n_nodes,) max relative error of that reduced continuum, per node
    /mean_flux             (n_nodes, n_chunks) mean absolute flux per chunk (/chunk_edges, Å)
    /present, /missing     (n_nodes,) bool: node computed; node has no model atmosphere
    /atmosphere_id         (n_nodes,) str: which atmosphere each node used

Nodes are flattened in C order over the axes. Absolute flux = flux × continuum (interpolated in
ln λ onto /wavelength). Root attributes hold the grid definition (``grid_spec`` JSON) and the
provenance (code version, line list hash, atmosphere family, command line, date), and
``content_sha256``: a SHA-256 of the label axes, wavelengths, stored flux with its scaling,
continuum and node flags (:func:`content_digest`), written at build and verified by
``photosphere grid info --check`` (:meth:`GridStore.verify`).

Every open checks the structure that a fit relies on (:func:`_check_structure`): strictly
increasing finite label axes (a duplicated node makes σ wrong), finite increasing wavelengths,
a finite positive ``scale_factor`` and a finite ``add_offset``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import GridError, MissingFileError
from . import _sampling
from .presets import LABEL_UNITS, GridSpec

#: content checksum (:func:`content_digest`) of the embedded default grid as shipped
DEFAULT_GRID_CONTENT_SHA256 = "5bca5c96b25e5afd492c01737de82600c76ecdf0055cdda9bf89bdb825ce7803"
FORMAT = "photosphere-grid"
FORMAT_VERSION = 1
_REQUIRED = ("wavelength", "flux", "continuum", "continuum_wavelength", "continuum_error",
             "mean_flux", "chunk_edges", "present", "missing", "atmosphere_id")


@dataclass
class NodeResult:
    """One synthesised node reduced to the stored sampling (what a worker returns to the writer).

    flux: (n_pix,) normalised; continuum: (n_cont,) erg/s/cm²/Å at the continuum wavelengths;
    mean_flux: (n_chunks,) mean absolute flux per chunk; continuum_error: max relative error of
    the reduced continuum vs the full one; missing: True when no model atmosphere exists.
    """

    index: int
    flux: np.ndarray | None = None
    continuum: np.ndarray | None = None
    mean_flux: np.ndarray | None = None
    continuum_error: float = 0.0
    missing: bool = False
    atmosphere_id: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"index": np.array(self.index), "missing": np.array(self.missing),
               "continuum_error": np.array(self.continuum_error),
               "atmosphere_id": np.array(self.atmosphere_id),
               "provenance": np.array(json.dumps(self.provenance, sort_keys=True, default=str))}
        if not self.missing:
            out.update(flux=self.flux, continuum=self.continuum, mean_flux=self.mean_flux)
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> NodeResult:
        missing = bool(d["missing"])
        return cls(index=int(d["index"]), missing=missing,
                   flux=None if missing else np.asarray(d["flux"]),
                   continuum=None if missing else np.asarray(d["continuum"]),
                   mean_flux=None if missing else np.asarray(d["mean_flux"]),
                   continuum_error=float(d["continuum_error"]),
                   atmosphere_id=str(d["atmosphere_id"]),
                   provenance=json.loads(str(d["provenance"])))


@dataclass(frozen=True)
class GridSampling:
    """The stored sampling implied by a :class:`GridSpec`: wavelengths, continuum points, chunks."""

    wavelength: np.ndarray
    continuum_index: np.ndarray
    chunk_edges: np.ndarray

    @classmethod
    def from_spec(cls, spec: GridSpec) -> GridSampling:
        wave = _sampling.log_uniform_wavelength(spec.wavelength_min, spec.wavelength_max,
                                                spec.velocity_step)
        return cls(wave, _sampling.continuum_indices(wave.size, spec.continuum_stride),
                   _sampling.chunk_edges(wave, spec.n_chunks))

    @property
    def continuum_wavelength(self) -> np.ndarray:
        return self.wavelength[self.continuum_index]


def reduce_node(index: int, sampling: GridSampling, wavelength: np.ndarray, flux: np.ndarray,
                continuum: np.ndarray, *, atmosphere_id: str = "",
                provenance: Mapping[str, Any] | None = None) -> NodeResult:
    """Resample one synthetic spectrum (any linear sampling, Å) onto the stored grid.

    flux: normalised flux; continuum: absolute continuum (erg/s/cm²/Å) on ``wavelength``. The
    absolute flux flux × continuum is rebinned flux-conservingly; the stored normalised flux is
    rebinned absolute flux / rebinned continuum, so flux × continuum reproduces it exactly.
    """
    wave = sampling.wavelength
    absolute = _sampling.rebin(wavelength, np.asarray(flux) * np.asarray(continuum), wave)
    cont = _sampling.rebin(wavelength, continuum, wave)
    if not np.all(np.isfinite(cont)) or np.any(cont <= 0):
        raise GridError(f"node {index}: the synthesised continuum is not positive and finite")
    coarse = cont[sampling.continuum_index]
    rebuilt = _sampling.expand_continuum(sampling.continuum_wavelength, coarse, wave)
    return NodeResult(
        index=index, flux=(absolute / cont).astype(np.float32),
        continuum=coarse.astype(np.float32),
        mean_flux=_sampling.chunk_means(wave, absolute, sampling.chunk_edges),
        continuum_error=float(np.max(np.abs(rebuilt / cont - 1))),
        atmosphere_id=atmosphere_id, provenance=dict(provenance or {}))


class GridWriter:
    """Writes a complete grid file node by node (use :func:`write_grid` or the build module).

    The file is created at ``tmp_path``; the caller renames it into place when every node is
    written (``finish`` checks that).
    """

    def __init__(self, tmp_path: Path, spec: GridSpec, provenance: Mapping[str, Any]):
        self.spec = spec
        self.sampling = GridSampling.from_spec(spec)
        n, n_pix = spec.n_nodes, self.sampling.wavelength.size
        self.file = h5py.File(tmp_path, "w")
        f = self.file
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
                        "name": spec.name, "label_names": json.dumps(list(spec.label_names)),
                        "fixed_labels": json.dumps(spec.fixed), "grid_spec": spec.to_json(),
                        "medium": spec.medium, "velocity_step": spec.velocity_step})
        for key, value in provenance.items():
            f.attrs[f"provenance_{key}"] = value if isinstance(value, str | int | float) \
                else json.dumps(value, default=str)
        g = f.create_group("labels")
        for name, vals in spec.axes.items():
            g.create_dataset(name, data=np.asarray(vals, float)).attrs["unit"] = LABEL_UNITS[name]
        w = f.create_dataset("wavelength", data=self.sampling.wavelength)
        w.attrs.update({"unit": "Angstrom", "medium": spec.medium,
                        "velocity_step": spec.velocity_step})
        comp = {"compression": "gzip", "compression_opts": 6, "shuffle": True}
        if spec.flux_encoding == "uint16":
            self.scale = spec.flux_max / (2 ** spec.flux_bits - 1)
            fl = f.create_dataset("flux", (n, n_pix), dtype="u2", chunks=(1, n_pix), **comp)
            fl.attrs.update({"scale_factor": self.scale, "add_offset": 0.0})
        else:
            self.scale = None
            fl = f.create_dataset("flux", (n, n_pix), dtype="f4", chunks=(1, n_pix), **comp)
        fl.attrs.update({"encoding": spec.flux_encoding, "unit": "normalized"})
        self.quantisation_error = 0.0
        self.n_clipped = 0
        n_cont = self.sampling.continuum_index.size
        f.create_dataset("continuum", (n, n_cont), dtype="f4", chunks=(min(n, 256), n_cont),
                         **comp).attrs["unit"] = "erg/s/cm2/Angstrom"
        f.create_dataset("continuum_wavelength", data=self.sampling.continuum_wavelength)
        f.create_dataset("continuum_error", (n,), dtype="f4")
        f.create_dataset("mean_flux", (n, spec.n_chunks), dtype="f8").attrs["unit"] = \
            "erg/s/cm2/Angstrom"
        f.create_dataset("chunk_edges", data=self.sampling.chunk_edges)
        f.create_dataset("present", (n,), dtype=bool)
        f.create_dataset("missing", (n,), dtype=bool)
        f.create_dataset("atmosphere_id", (n,), dtype=h5py.string_dtype())

    def write(self, node: NodeResult) -> None:
        f, i = self.file, node.index
        if node.missing:
            f["missing"][i] = True
            f["present"][i] = False
            f["atmosphere_id"][i] = node.atmosphere_id
            return
        flux = np.asarray(node.flux, dtype=np.float64)
        if flux.shape != (self.sampling.wavelength.size,):
            raise GridError(f"node {i}: flux has shape {flux.shape}, expected "
                            f"({self.sampling.wavelength.size},); the node was made for another "
                            "grid definition")
        if self.scale is not None:
            clipped = np.clip(flux, 0.0, self.spec.flux_max)
            self.n_clipped += int(np.sum(clipped != flux))
            q = np.round(clipped / self.scale).astype(np.uint16)
            self.quantisation_error = max(self.quantisation_error,
                                          float(np.max(np.abs(q * self.scale - clipped))))
            f["flux"][i] = q
        else:
            f["flux"][i] = flux.astype(np.float32)
        f["continuum"][i] = node.continuum
        f["continuum_error"][i] = node.continuum_error
        f["mean_flux"][i] = node.mean_flux
        f["present"][i] = True
        f["missing"][i] = False
        f["atmosphere_id"][i] = node.atmosphere_id

    def finish(self) -> None:
        f = self.file
        present, missing = f["present"][:], f["missing"][:]
        todo = int(np.sum(~present & ~missing))
        if todo:
            raise GridError(f"grid {self.spec.name!r} still has {todo} node(s) not computed; "
                            "rerun the build to finish it")
        f["flux"].attrs["quantisation_max_error"] = self.quantisation_error
        f["flux"].attrs["n_clipped"] = self.n_clipped
        err = f["continuum_error"][:][present]
        f["continuum"].attrs["max_relative_error"] = float(err.max()) if err.size else 0.0
        f.attrs["content_sha256"] = content_digest(f)
        f.attrs["complete"] = True
        f.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def write_grid(path: str | Path, spec: GridSpec, nodes, provenance: Mapping[str, Any]) -> Path:
    """Write a complete grid file atomically from an iterable of :class:`NodeResult`."""
    from .._files import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        writer = GridWriter(tmp, spec, provenance)
        try:
            for node in nodes:
                writer.write(node)
            writer.finish()
        finally:
            writer.close()
    return path


class GridStore:
    """Read-only view of a grid file. Small arrays are read at open; spectra on demand.

    label_names: axis labels in order; axes: name -> (n_i,) node values; shape: axes lengths;
    wavelength: (n_pix,) Å log-uniform in ``medium``; present/missing: axis-shaped bool arrays.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _open_checked(self.path)
        f = self._file
        try:
            self.spec = GridSpec.from_json(f.attrs["grid_spec"])
            self.label_names: tuple[str, ...] = tuple(json.loads(f.attrs["label_names"]))
            self.axes = {name: np.asarray(f["labels"][name][:], float)
                         for name in self.label_names}
            self.fixed_labels: dict[str, float] = json.loads(f.attrs["fixed_labels"])
            self.wavelength = np.asarray(f["wavelength"][:], float)
            self.medium = str(f.attrs["medium"])
            self.velocity_step = float(f.attrs["velocity_step"])
            self.shape = tuple(v.size for v in self.axes.values())
            self.present = f["present"][:].reshape(self.shape)
            self.missing = f["missing"][:].reshape(self.shape)
            self.continuum_wavelength = np.asarray(f["continuum_wavelength"][:], float)
            self.chunk_edges = np.asarray(f["chunk_edges"][:], float)
            fl = f["flux"]
            self._scale = float(fl.attrs.get("scale_factor", 1.0))
            self._offset = float(fl.attrs.get("add_offset", 0.0))
            self._encoded = fl.dtype == np.uint16
            self.provenance = {k[len("provenance_"):]: _attr(v) for k, v in f.attrs.items()
                               if k.startswith("provenance_")}
            _check_structure(self.path, self.axes, self.wavelength, self._scale, self._offset,
                             self._encoded)
            n = int(np.prod(self.shape))
            if fl.shape != (n, self.wavelength.size):
                raise GridError(f"grid file {self.path}: flux shape {fl.shape} does not match "
                                f"{n} nodes × {self.wavelength.size} pixels; rebuild the grid")
            # read the first and last stored spectra so that a truncated file fails here
            for i in np.flatnonzero(self.present.ravel())[[0, -1]] if self.present.any() else ():
                self.flux(int(i))
        except GridError:
            self.close()
            raise
        except (KeyError, OSError, ValueError, IndexError) as exc:
            self.close()
            raise GridError(f"grid file {self.path} is corrupt or incomplete ({exc}); rebuild it "
                            "with `photosphere grid build` or download it again") from None

    @classmethod
    def open(cls, path: str | Path) -> GridStore:
        return cls(path)

    def __enter__(self) -> GridStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_file", None) is not None and self._file.id.valid:
            self._file.close()

    def __repr__(self) -> str:
        axes = ", ".join(f"{k} {v[0]:g}..{v[-1]:g} ({v.size})" for k, v in self.axes.items())
        return (f"GridStore({self.path.name}: {axes}; {self.wavelength.size} px "
                f"{self.wavelength[0]:.1f}-{self.wavelength[-1]:.1f} Å {self.medium})")

    # ------------------------------------------------------------------ nodes
    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_pix(self) -> int:
        return int(self.wavelength.size)

    def node_index(self, index: int | tuple[int, ...]) -> int:
        """Flat node index from a flat index or a tuple of per-axis indices."""
        if isinstance(index, tuple):
            return int(np.ravel_multi_index(index, self.shape))
        if not 0 <= int(index) < self.n_nodes:
            raise GridError(f"node index {index} is outside 0..{self.n_nodes - 1}")
        return int(index)

    def node_labels(self, index: int | tuple[int, ...]) -> dict[str, float]:
        idx = np.unravel_index(self.node_index(index), self.shape)
        return {name: float(self.axes[name][i]) for name, i in zip(self.label_names, idx,
                                                                   strict=True)}

    def _read(self, name: str, index) -> np.ndarray:
        try:
            return self._file[name][index]
        except (OSError, ValueError) as exc:
            raise GridError(f"grid file {self.path}: cannot read {name}[{index}] ({exc}); the "
                            "file is corrupt, rebuild it") from None

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        if self._encoded:
            return (raw.astype(np.float32) * np.float32(self._scale) + np.float32(self._offset))
        return raw.astype(np.float32, copy=False)

    def flux(self, index: int | tuple[int, ...]) -> np.ndarray:
        """(n_pix,) float32 normalised flux of one node (a GridError if the node is missing)."""
        i = self.node_index(index)
        if not self.present.ravel()[i]:
            raise GridError(f"node {self.node_labels(i)} has no spectrum (no model atmosphere)")
        return self._decode(self._read("flux", i))

    def flux_all(self) -> np.ndarray:
        """(n_nodes, n_pix) float32 normalised flux; missing nodes are NaN."""
        out = self._decode(self._read("flux", slice(None)))
        out[~self.present.ravel()] = np.nan
        return out

    def continuum_coarse(self) -> np.ndarray:
        """(n_nodes, n_cont) float32 continuum at ``continuum_wavelength`` (erg/s/cm²/Å)."""
        out = self._read("continuum", slice(None)).astype(np.float32)
        out[~self.present.ravel()] = np.nan
        return out

    def continuum(self, index: int | tuple[int, ...]) -> np.ndarray:
        """(n_pix,) continuum of one node on ``wavelength`` (erg/s/cm²/Å)."""
        i = self.node_index(index)
        self.flux(i)  # raises for missing nodes
        return _sampling.expand_continuum(self.continuum_wavelength,
                                          self._read("continuum", i).astype(float),
                                          self.wavelength)

    def absolute_flux(self, index: int | tuple[int, ...]) -> np.ndarray:
        """(n_pix,) surface flux of one node, erg/s/cm²/Å."""
        return self.flux(index) * self.continuum(index)

    def mean_flux_all(self) -> np.ndarray:
        """(n_nodes, n_chunks) mean absolute flux per chunk (NaN for missing nodes)."""
        out = np.asarray(self._read("mean_flux", slice(None)), float)
        out[~self.present.ravel()] = np.nan
        return out

    def attribute(self, name: str) -> Any:
        """A dataset attribute such as ``flux.quantisation_max_error`` or root ``velocity_step``."""
        ds, _, key = name.rpartition(".")
        obj = self._file[ds] if ds else self._file
        return _attr(obj.attrs[key])

    def node_result(self, index: int | tuple[int, ...]) -> NodeResult:
        """One node as stored (decoded), ready to be written into another grid file."""
        i = self.node_index(index)
        atm = _attr(self._read("atmosphere_id", i))
        if not self.present.ravel()[i]:
            return NodeResult(index=i, missing=True, atmosphere_id=atm)
        return NodeResult(index=i, flux=self.flux(i), continuum=self._read("continuum", i),
                          mean_flux=self._read("mean_flux", i),
                          continuum_error=float(self._read("continuum_error", i)),
                          atmosphere_id=atm)

    def subset(self, output: str | Path, *, flux_encoding: str | None = None,
               **keep: Any) -> Path:
        """Write a grid holding only some node values of some axes, e.g. ``teff=[4000, 4500]``.

        Values not on the axis raise GridError. The new file keeps this grid's sampling and
        provenance (plus ``subset_of``); used to hold nodes out when testing interpolation, and
        (with ``flux_encoding="uint16"``, no axes) to measure what quantisation adds.
        """
        axes = dict(self.spec.axes)
        for name, values in keep.items():
            if name not in axes:
                raise GridError(f"subset: {name!r} is not an axis of {self.path} "
                                f"({', '.join(self.label_names)})")
            values = tuple(float(v) for v in values)
            absent = [v for v in values if not np.any(np.isclose(self.axes[name], v))]
            if absent:
                raise GridError(f"subset: {name} values {absent} are not nodes of {self.path}")
            axes[name] = values
        encoding = {"flux_encoding": flux_encoding} if flux_encoding else {}
        spec = GridSpec.from_dict({**self.spec.to_dict(), "axes": axes, **encoding,
                                   "name": f"{self.spec.name}-subset"})
        old = [np.array([int(np.argmin(np.abs(self.axes[n] - v))) for v in spec.axes[n]])
               for n in self.label_names]

        def nodes():
            for i in range(spec.n_nodes):
                idx = np.unravel_index(i, spec.shape)
                node = self.node_result(tuple(int(o[j]) for o, j in zip(old, idx, strict=True)))
                node.index = i
                yield node

        provenance = {**self.provenance, "subset_of": str(self.path)}
        return write_grid(output, spec, nodes(), provenance)

    # ------------------------------------------------------------------ integrity
    def verify(self) -> dict[str, Any]:
        """Recompute the content checksum and compare it with the one stored at build.

        Returns ``{"checksum": "ok" | "absent", "content_sha256": hex}``; raises GridError when
        the content differs (flux or labels changed after the build). ``absent``: the grid was
        written before checksums existed, only its structure was checked.
        """
        stored = _attr(self._file.attrs.get("content_sha256"))
        actual = content_digest(self._file)
        if stored is None and self._is_embedded():
            # the embedded grid predates checksums and its bytes are pinned by the networks'
            # grid digests: its content checksum ships in the package instead
            stored = DEFAULT_GRID_CONTENT_SHA256
        if stored is None:
            return {"checksum": "absent", "content_sha256": actual}
        if stored != actual:
            raise GridError(f"grid file {self.path}: its content does not match the checksum "
                            f"written at build (stored {stored[:12]}…, now {actual[:12]}…): the "
                            "flux or labels were changed or damaged; rebuild or download it "
                            "again")
        return {"checksum": "ok", "content_sha256": actual}

    def _is_embedded(self) -> bool:
        from .presets import default_grid_path

        try:
            return Path(self.path).resolve() == default_grid_path().resolve()
        except OSError:
            return False

    # ------------------------------------------------------------------ summary
    def info(self) -> dict[str, Any]:
        """JSON-ready summary: each label's min/max/step, wavelength range, sizes, provenance."""
        labels = {}
        for name, vals in self.axes.items():
            steps = np.diff(vals)
            uniform = bool(np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9))
            labels[name] = {"min": float(vals[0]), "max": float(vals[-1]),
                            "step": float(steps[0]) if uniform else None,
                            "n": int(vals.size), "unit": LABEL_UNITS.get(name, ""),
                            **({} if uniform else {"values": vals.tolist()})}
        return {
            "path": str(self.path), "name": self.spec.name, "labels": labels,
            "fixed_labels": self.fixed_labels,
            "wavelength_range": [float(self.wavelength[0]), float(self.wavelength[-1])],
            "medium": self.medium, "velocity_step": self.velocity_step, "n_pixels": self.n_pix,
            "n_nodes": self.n_nodes, "n_present": int(self.present.sum()),
            "n_missing": int(self.missing.sum()),
            "flux_encoding": str(self._file["flux"].attrs.get("encoding", "float32")),
            "quantisation_max_error": float(self._file["flux"].attrs.get(
                "quantisation_max_error", 0.0)),
            "continuum_max_relative_error": float(self._file["continuum"].attrs.get(
                "max_relative_error", 0.0)),
            "file_size_bytes": self.path.stat().st_size, "provenance": self.provenance,
        }


def hdf5_format(path: str | Path) -> str | None:
    """The ``format`` attribute of an HDF5 file (a grid's :data:`FORMAT`, a training set's, an
    emulator's, The Cannon's), or None when it has none or does not open as HDF5 (its own
    reader then gives the clear error)."""
    try:
        with h5py.File(path, "r") as f:
            value = _attr(f.attrs.get("format", ""))
    except OSError:
        return None
    return str(value) or None


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def content_digest(f: h5py.File) -> str:
    """SHA-256 of what a fit reads from a grid file: label axes, wavelengths, the stored flux
    (raw, with its scale and offset), continuum, present/missing; node by node."""
    h = hashlib.sha256()

    def add(name: str, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())

    for name in sorted(f["labels"]):
        add(f"labels/{name}", f["labels"][name][:])
    for name in ("wavelength", "continuum_wavelength", "present", "missing"):
        add(name, f[name][:])
    flux = f["flux"]
    h.update(repr([float(flux.attrs.get(k, d)) for k, d in (("scale_factor", 1.0),
                                                             ("add_offset", 0.0))]).encode())
    step = max(1, (64 << 20) // max(flux.shape[1] * flux.dtype.itemsize, 1))
    for name in ("flux", "continuum"):
        d = f[name]
        for i in range(0, d.shape[0], step):
            add(name, d[i:i + step])
    return h.hexdigest()


def _check_structure(path: Path, axes: Mapping[str, np.ndarray], wavelength: np.ndarray,
                     scale: float, offset: float, encoded: bool) -> None:
    """The invariants interpolation relies on; a GridError naming the first broken one."""
    for name, vals in axes.items():
        if vals.size == 0 or not np.all(np.isfinite(vals)):
            raise GridError(f"grid file {path}: label axis {name} is empty or holds NaN/inf "
                            f"({vals.tolist()[:8]}); rebuild the grid")
        steps = np.diff(vals)
        if np.any(steps <= 0):
            k = int(np.argmax(steps <= 0))
            what = "duplicated" if steps[k] == 0 else "out of order"
            raise GridError(f"grid file {path}: label axis {name} is not strictly increasing "
                            f"(node {vals[k + 1]:g} after {vals[k]:g} is {what}); a grid with "
                            "repeated or unsorted nodes gives wrong labels and σ: rebuild it")
    if wavelength.size < 2 or not np.all(np.isfinite(wavelength)) or np.any(
            np.diff(wavelength) <= 0):
        raise GridError(f"grid file {path}: /wavelength is not finite and strictly increasing; "
                        "rebuild the grid")
    if encoded and not (np.isfinite(scale) and scale > 0):
        raise GridError(f"grid file {path}: flux scale_factor {scale} is not a finite number "
                        "> 0, so every spectrum would decode to NaN or zero; rebuild the grid")
    if not np.isfinite(offset):
        raise GridError(f"grid file {path}: flux add_offset {offset} is not finite; rebuild "
                        "the grid")


def _open_checked(path: Path) -> h5py.File:
    if path.name.endswith(".partial") or path.is_dir():
        raise GridError(f"{path} is an unfinished grid build, not a grid; rerun the same "
                        "`photosphere grid build` command to resume and finish it")
    if not path.exists():
        raise MissingFileError(f"grid file {path} does not exist; build one with "
                               "`photosphere grid build` or pass the path of an existing grid")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise GridError(f"grid file {path} cannot be opened as HDF5 ({exc}); it is truncated or "
                        "corrupt: rebuild it with `photosphere grid build`") from None
    if _attr(f.attrs.get("format")) != FORMAT:
        f.close()
        raise GridError(f"{path} is an HDF5 file but not a photosphere grid (no "
                        f"format='{FORMAT}' attribute); pass a grid made by `photosphere grid`")
    try:
        version = int(_attr(f.attrs.get("format_version", -1)))
    except (TypeError, ValueError):
        version = -1
    if version > FORMAT_VERSION:
        f.close()  # the version is read above: nothing is read from the closed file
        raise GridError(f"grid file {path} has format version {version}, newer than this "
                        f"photosphere reads ({FORMAT_VERSION}); upgrade photosphere "
                        "(pip install -U photosphere) to read it")
    if version < 1:
        f.close()
        raise GridError(f"grid file {path} declares no valid format version (the "
                        "'format_version' attribute is missing or not a number >= 1); rebuild "
                        "it with `photosphere grid build`")
    if not bool(f.attrs.get("complete", False)):
        f.close()
        raise GridError(f"grid file {path} is marked incomplete (a build that did not finish); "
                        "rerun `photosphere grid build` to finish it")
    absent = [name for name in _REQUIRED if name not in f]
    if absent:
        f.close()
        raise GridError(f"grid file {path} lacks dataset(s) {absent}; rebuild it")
    return f
