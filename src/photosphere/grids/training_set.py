"""Training sets: syntheses at scattered labels over line windows (The Payne's approach).

A rectilinear grid needs ``n**k`` syntheses for ``k`` labels; over the box real stars need
(Teff 3500-7500 K, log g 0-5, [Fe/H] -4..+0.5, [α/Fe], vmic) and the information-rich optical
windows, that is days on 2 cores. A training set instead synthesises ``n_samples`` spectra at
labels drawn quasi-randomly (scrambled Sobol, seeded, so a resumed build draws the same labels)
inside the box and a physical envelope of the Kiel diagram, over a list of wavelength windows.
An emulator trained on it (PCA + GP, or a network) is the forward model.

Windows rather than the full 4800-6800 Å: a Turbospectrum synthesis costs ~3.3 CPU-s per 100 Å
at 0.01 Å steps (measured: 6.6 CPU-s for 4800-5000 Å at the Sun, 5.8 for 6510-6610 Å), so the
full range costs ~66 CPU-s per star and the windows of :data:`OPTICAL_WINDOWS` (630 Å) ~21. The
windows keep what separates Teff, log g, [Fe/H] and [α/Fe]: the Hβ and Hα wings (±40 and ±50 Å),
Mg b and the Fe I/Fe II lines of 5140-5340 Å, Na D, Ca I and Fe I/II near 6100-6180 Å, the Fe II
lines at 6238/6247 Å and 6416/6432 Å with Fe I lines of several excitation potentials at 6400-6440.

File layout (format ``photosphere-training-set`` version 1)::

    /labels           (n, k) float64, attr ``label_names`` (JSON list), ``units``
    /wavelength       (n_pix,) Å (air), log-uniform inside each window; attr ``velocity_step``
    /window           (n_pix,) int16: the window of each pixel; /windows (n_win, 2) Å
    /flux             (n, n_pix) float32 normalised flux, one chunk per spectrum, gzip+shuffle
    /continuum        (n, n_cont) float32 erg/s/cm²/Å at /continuum_wavelength
    /missing          (n,) bool: no model atmosphere for these labels
    /atmosphere_id    (n,) str

Root attributes: ``format``, ``format_version``, ``complete``, ``name``, ``spec`` (JSON) and the
provenance as ``provenance_*``. The file is written under a temporary name and renamed, so one
that exists is complete; the build journals every synthesis first (:mod:`.build`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import GridError, MissingFileError, OutOfGridError
from . import _sampling
from .presets import LABEL_UNITS
from .store import NodeResult, hdf5_format

FORMAT = "photosphere-training-set"
FORMAT_VERSION = 1
#: Å synthesised beyond each end of a window, so rebinning has input at the edges.
WINDOW_MARGIN = 1.0
#: The continuum is kept every this many pixels of a window (plus its last pixel).
CONTINUUM_STRIDE = 64

#: Air wavelengths (Å) of the optical training set's windows (module docstring says why each).
OPTICAL_WINDOWS = ((4821.0, 4901.0), (5140.0, 5340.0), (5860.0, 5910.0), (6100.0, 6180.0),
                   (6230.0, 6260.0), (6400.0, 6440.0), (6510.0, 6610.0))


def kiel_envelope(teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """True where stars exist in the Kiel diagram, broadly: not hotter-than-the-giant-branch
    supergiants (log g < 1.2 (Teff - 4500 K)/1000 K, where ATLAS9 has holes and FGK benchmark
    stars are absent) and not the empty gap of cool stars between giants and dwarfs
    (Teff < 4300 K with 2.5 < log g < 4.2). teff K, logg dex; any broadcastable shapes."""
    teff, logg = np.asarray(teff, float), np.asarray(logg, float)
    above_giant_branch = logg >= 1.2 * (teff - 4500.0) / 1000.0
    cool_gap = (teff < 4300.0) & (logg > 2.5) & (logg < 4.2)
    return above_giant_branch & ~cool_gap


@dataclass(frozen=True)
class TrainingSetSpec:
    """What a training set contains; enough to build it again (labels are drawn from ``seed``).

    box: label -> (min, max) over which labels are drawn uniformly (Sobol); all five labels
    ``teff`` K, ``logg`` dex, ``feh`` dex, ``alpha`` dex, ``vmic`` km/s. envelope: ``"kiel"``
    (keep :func:`kiel_envelope`) or ``"box"`` (the whole box). windows: air Å. velocity_step:
    km/s of the stored sampling; synthesis_step: Å asked of the synthesizer. warps: label ->
    (u knots, value knots), a piecewise-linear map of the uniform Sobol coordinate u in [0, 1]
    onto the label (more samples where the value knots are dense), instead of a uniform box.
    molecules: synthesise with the molecular line list too (``synthesizer(..., molecules=True)``).
    """

    name: str
    windows: tuple[tuple[float, float], ...]
    box: Mapping[str, tuple[float, float]]
    n_samples: int
    seed: int = 0
    envelope: str = "kiel"
    velocity_step: float = 1.0
    synthesis_step: float = 0.01
    atmosphere: str = "auto"
    medium: str = "air"
    warps: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] | None = None
    molecules: bool = False

    def __post_init__(self) -> None:
        where = f"training set {self.name!r}"
        windows = tuple((float(lo), float(hi)) for lo, hi in self.windows)
        box = {str(k): (float(v[0]), float(v[1])) for k, v in dict(self.box).items()}
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "box", box)
        if set(box) != set(LABEL_UNITS):
            raise GridError(f"{where}: the box needs exactly the labels {sorted(LABEL_UNITS)}, "
                            f"got {sorted(box)} (give min == max to hold one fixed)")
        for name, (lo, hi) in box.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise GridError(f"{where}: box {name} = ({lo}, {hi}) must be finite, min <= max")
        if not windows:
            raise GridError(f"{where}: no wavelength windows; give at least one (min, max) in Å")
        edges = np.array(windows)
        if np.any(edges[:, 0] >= edges[:, 1]) or np.any(edges[1:, 0] < edges[:-1, 1]):
            raise GridError(f"{where}: windows {windows} must be non-empty, increasing and "
                            "not overlapping")
        if not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise GridError(f"{where}: n_samples={self.n_samples!r} must be a positive integer")
        if self.envelope not in ("kiel", "box"):
            raise GridError(f"{where}: envelope={self.envelope!r}; use 'kiel' or 'box'")
        warps = {str(k): (tuple(map(float, u)), tuple(map(float, x)))
                 for k, (u, x) in dict(self.warps or {}).items()}
        object.__setattr__(self, "warps", warps)
        for name, (u, x) in warps.items():
            if name not in box or len(u) != len(x) or len(u) < 2 or u[0] != 0 or u[-1] != 1 \
                    or np.any(np.diff(u) <= 0) or np.any(np.diff(x) <= 0) \
                    or (x[0], x[-1]) != box[name]:
                raise GridError(f"{where}: warp of {name} {warps[name]} must map increasing u "
                                f"knots from 0 to 1 onto increasing values from the box's "
                                f"{box.get(name)}")
        if not 0 < self.velocity_step <= 100 or not self.synthesis_step > 0:
            raise GridError(f"{where}: velocity_step and synthesis_step must be positive")

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(LABEL_UNITS)

    @property
    def n_nodes(self) -> int:
        """Number of syntheses (the build's name for them: nodes)."""
        return self.n_samples

    @cached_property
    def labels(self) -> np.ndarray:
        """(n_samples, 5) labels in :attr:`label_names` order, drawn from ``seed``."""
        return draw_labels(self.box, self.n_samples, self.seed, self.envelope, self.warps)

    def node_labels(self, index: int) -> dict[str, float]:
        return dict(zip(self.label_names, (float(v) for v in self.labels[int(index)]),
                        strict=True))

    def iter_nodes(self) -> Iterator[tuple[int, dict[str, float]]]:
        for i in range(self.n_samples):
            yield i, self.node_labels(i)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "training-set", "name": self.name,
                "windows": [list(w) for w in self.windows],
                "box": {k: list(v) for k, v in self.box.items()},
                "n_samples": self.n_samples, "seed": self.seed, "envelope": self.envelope,
                "velocity_step": self.velocity_step, "synthesis_step": self.synthesis_step,
                "atmosphere": self.atmosphere, "medium": self.medium,
                "warps": {k: [list(u), list(x)] for k, (u, x) in self.warps.items()},
                "molecules": self.molecules,
                # the molecular list's identity: a build with another list is another set
                **({"molecular_list": molecular_list_id()} if self.molecules else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TrainingSetSpec:
        d = json.loads(text)
        d.pop("kind", None)
        d.pop("molecular_list", None)
        d["windows"] = tuple(tuple(w) for w in d["windows"])
        d["box"] = {k: tuple(v) for k, v in d["box"].items()}
        d["warps"] = {k: (tuple(u), tuple(x)) for k, (u, x) in (d.get("warps") or {}).items()}
        return cls(**d)


def molecular_list_id() -> str:
    """The identity of the molecular line list syntheses use (:data:`.synth.molecules.LIST_ID`)."""
    from .synth.molecules import LIST_ID

    return LIST_ID


def draw_labels(box: Mapping[str, tuple[float, float]], n: int, seed: int,
                envelope: str = "kiel", warps: Mapping | None = None) -> np.ndarray:
    """(n, 5) labels (teff, logg, feh, alpha, vmic order) drawn by scrambled Sobol in ``box``
    (through the piecewise-linear ``warps`` of :class:`TrainingSetSpec` where given).

    Points outside the envelope are dropped and the draw continues, so the first ``n`` accepted
    points are the same for the same (box, seed, envelope) whatever ``n``.
    """
    from scipy.stats import qmc

    names = tuple(LABEL_UNITS)
    lo = np.array([box[k][0] for k in names])
    hi = np.array([box[k][1] for k in names])
    sampler = qmc.Sobol(d=len(names), scramble=True, seed=seed)
    accepted: list[np.ndarray] = []
    total = 0
    for _ in range(64):
        unit = sampler.random_base2(m=10) if total == 0 else sampler.random(1024)
        points = lo + unit * (hi - lo)
        for name, (u_knots, x_knots) in dict(warps or {}).items():
            j = names.index(name)
            points[:, j] = np.interp(unit[:, j], u_knots, x_knots)
        keep = np.ones(len(points), bool) if envelope == "box" else \
            kiel_envelope(points[:, 0], points[:, 1])
        accepted.append(points[keep])
        total += int(keep.sum())
        if total >= n:
            return np.concatenate(accepted)[:n]
    raise GridError(f"the envelope {envelope!r} keeps too few points of the box {dict(box)} "
                    f"({total} of {64 * 1024}); widen the box or use envelope 'box'")


# ------------------------------------------------------------------------------ sampling
@dataclass(frozen=True)
class WindowSampling:
    """Stored pixels of a training set: log-uniform inside each window, concatenated.

    wavelength (n_pix,) Å; window (n_pix,) window index; continuum_index (n_cont,) the pixels
    where the continuum is kept (every CONTINUUM_STRIDE of each window plus its last pixel).
    """

    wavelength: np.ndarray
    window: np.ndarray
    continuum_index: np.ndarray

    @classmethod
    def from_spec(cls, spec: TrainingSetSpec) -> WindowSampling:
        waves, which, cont = [], [], []
        offset = 0
        for k, (lo, hi) in enumerate(spec.windows):
            w = _sampling.log_uniform_wavelength(lo, hi, spec.velocity_step)
            idx = np.arange(0, len(w), CONTINUUM_STRIDE)
            if idx[-1] != len(w) - 1:
                idx = np.append(idx, len(w) - 1)
            waves.append(w)
            which.append(np.full(len(w), k, np.int16))
            cont.append(idx + offset)
            offset += len(w)
        return cls(np.concatenate(waves), np.concatenate(which), np.concatenate(cont))

    @property
    def continuum_wavelength(self) -> np.ndarray:
        return self.wavelength[self.continuum_index]

    def expand_continuum(self, coarse: np.ndarray) -> np.ndarray:
        """(n_pix,) continuum from its kept values, interpolated in ln λ within each window."""
        out = np.empty(len(self.wavelength))
        cw = self.continuum_wavelength
        cwin = self.window[self.continuum_index]
        for k in np.unique(self.window):
            pix, kept = self.window == k, cwin == k
            out[pix] = _sampling.expand_continuum(cw[kept], coarse[kept], self.wavelength[pix])
        return out


def synthesize_sample(synthesizer, spec_json: str, index: int) -> NodeResult:
    """Synthesise training spectrum ``index`` window by window and reduce it to the stored
    sampling (runs on a build worker). A missing model atmosphere marks it missing."""
    spec = TrainingSetSpec.from_json(spec_json)
    labels = spec.node_labels(index)
    sampling = WindowSampling.from_spec(spec)
    flux, cont, atmospheres = [], [], set()
    provenance: dict[str, Any] = {}
    extra = {"molecules": True} if spec.molecules else {}
    for k, (lo, hi) in enumerate(spec.windows):
        try:
            syn = synthesizer(labels["teff"], labels["logg"], labels["feh"], labels["alpha"],
                              labels["vmic"], wavelength_min=lo - WINDOW_MARGIN,
                              wavelength_max=hi + WINDOW_MARGIN, step=spec.synthesis_step,
                              atmosphere=spec.atmosphere, **extra)
        except OutOfGridError as exc:
            return NodeResult(index=index, missing=True, atmosphere_id=f"none: {exc}")
        wave = sampling.wavelength[sampling.window == k]
        absolute = _sampling.rebin(np.asarray(syn.wavelength),
                                   np.asarray(syn.flux) * np.asarray(syn.continuum), wave)
        c = _sampling.rebin(np.asarray(syn.wavelength), np.asarray(syn.continuum), wave)
        if not np.all(np.isfinite(c)) or np.any(c <= 0):
            raise GridError(f"training spectrum {index} ({labels}): the synthesised continuum "
                            f"of window {lo:g}-{hi:g} Å is not positive and finite")
        flux.append(absolute / c)
        cont.append(c)
        provenance = dict(getattr(syn, "provenance", {}) or {})
        atmospheres.add(str(provenance.get("atmosphere_id", "")))
    full_cont = np.concatenate(cont)
    coarse = full_cont[sampling.continuum_index]
    rebuilt = sampling.expand_continuum(coarse)
    for per_window in ("linelist_lines_used", "molecular_lines_used"):
        provenance.pop(per_window, None)
    return NodeResult(index=index, flux=np.concatenate(flux).astype(np.float32),
                      continuum=coarse.astype(np.float32),
                      mean_flux=np.array([np.mean(f * c) for f, c in zip(flux, cont,
                                                                         strict=True)]),
                      continuum_error=float(np.max(np.abs(rebuilt / full_cont - 1))),
                      atmosphere_id=";".join(sorted(atmospheres)), provenance=provenance)


# ------------------------------------------------------------------------------ file
def write_training_set(path: str | Path, spec: TrainingSetSpec, nodes: list[NodeResult],
                       provenance: Mapping[str, Any]) -> Path:
    """Write a complete training set (every node computed or missing) atomically."""
    path = Path(path)
    if len(nodes) != spec.n_samples:
        raise GridError(f"training set {spec.name!r} has {len(nodes)} of {spec.n_samples} "
                        "spectra; finish the build first")
    sampling = WindowSampling.from_spec(spec)
    n_pix, n_cont = len(sampling.wavelength), len(sampling.continuum_index)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        lab = f.create_dataset("labels", data=spec.labels)
        lab.attrs["label_names"] = json.dumps(list(spec.label_names))
        lab.attrs["units"] = json.dumps([LABEL_UNITS[k] for k in spec.label_names])
        wave = f.create_dataset("wavelength", data=sampling.wavelength)
        wave.attrs["medium"] = spec.medium
        wave.attrs["velocity_step"] = spec.velocity_step
        f.create_dataset("window", data=sampling.window)
        f.create_dataset("windows", data=np.array(spec.windows))
        f.create_dataset("continuum_wavelength", data=sampling.continuum_wavelength)
        flux = f.create_dataset("flux", (spec.n_samples, n_pix), dtype="float32",
                                chunks=(1, n_pix), compression="gzip", compression_opts=6,
                                shuffle=True, fillvalue=np.nan)
        cont = f.create_dataset("continuum", (spec.n_samples, n_cont), dtype="float32",
                                fillvalue=np.nan)
        missing = np.zeros(spec.n_samples, bool)
        atm = []
        for node in sorted(nodes, key=lambda n: n.index):
            missing[node.index] = node.missing
            atm.append(node.atmosphere_id)
            if not node.missing:
                flux[node.index] = node.flux
                cont[node.index] = node.continuum
        f.create_dataset("missing", data=missing)
        f.create_dataset("atmosphere_id", data=np.array(atm, dtype=h5py.string_dtype()))
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": True,
                        "name": spec.name, "spec": spec.to_json()})
        for k, v in provenance.items():
            f.attrs[f"provenance_{k}"] = v if isinstance(v, str) else json.dumps(v)
    os.replace(tmp, path)
    return path


def is_training_set(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file in the training-set format (False for anything else,
    including files that do not open: their own reader gives the clear error)."""
    return hdf5_format(path) == FORMAT


class TrainingSet:
    """A training set read into memory: the spectra that have a model atmosphere.

    labels (n, 5) in ``label_names`` order; flux (n, n_pix) normalised; wavelength (n_pix,) Å
    (``medium``); window (n_pix,) window index; windows (n_win, 2) Å; spec; provenance.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"training set {path} does not exist; build it with "
                                   "`photosphere grid build --preset optical -o FILE`")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise GridError(f"{path} is not a photosphere training set (format "
                                    f"{f.attrs.get('format')!r})")
                version = int(f.attrs.get("format_version", -1))
                if version > FORMAT_VERSION:
                    raise GridError(f"{path} is training-set format version {version}, newer "
                                    f"than this photosphere reads ({FORMAT_VERSION}); upgrade")
                keep = ~f["missing"][:]
                self.spec = TrainingSetSpec.from_json(f.attrs["spec"])
                self.label_names = tuple(json.loads(f["labels"].attrs["label_names"]))
                self.labels = f["labels"][:][keep]
                self.flux = f["flux"][:][keep]
                self.continuum = f["continuum"][:][keep]
                self.wavelength = f["wavelength"][:]
                self.medium = str(f["wavelength"].attrs["medium"])
                self.window = f["window"][:]
                self.windows = f["windows"][:]
                self.n_missing = int((~keep).sum())
                self.provenance = {k[len("provenance_"):]: v for k, v in f.attrs.items()
                                   if k.startswith("provenance_")}
        except OSError as exc:
            raise GridError(f"{path} cannot be read as HDF5 ({exc}); it is damaged or not a "
                            "training set: build it again") from None
        except KeyError as exc:
            raise GridError(f"{path} lacks {exc} of a training set; build it again") from None
        if not np.all(np.isfinite(self.flux)):
            raise GridError(f"{path} holds non-finite flux; build it again")
        self.path = path

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.spec.name, "kind": "training-set",
                "n_spectra": len(self.labels), "n_missing": self.n_missing,
                "labels": {k: {"min": float(self.labels[:, i].min()),
                               "max": float(self.labels[:, i].max()), "unit": LABEL_UNITS[k]}
                           for i, k in enumerate(self.label_names)},
                "windows": [list(map(float, w)) for w in self.windows],
                "n_pixels": len(self.wavelength), "medium": self.medium,
                "velocity_step": self.spec.velocity_step,
                "provenance": dict(self.provenance)}


#: Named training sets. ``optical``: the default physics of real-star fits (docs/grids.md).
TRAINING_PRESETS = {
    "optical": lambda: TrainingSetSpec(
        name="optical", windows=OPTICAL_WINDOWS,
        box={"teff": (3800.0, 7500.0), "logg": (0.0, 5.0), "feh": (-4.0, 0.5),
             "alpha": (-0.1, 0.5), "vmic": (0.5, 2.5)},
        n_samples=768, seed=20261206, molecules=True,
        # a quarter of the draws below [Fe/H] -1.5, 10 % below -2.5: most benchmark and survey
        # stars are near solar, yet the metal-poor tail must be covered down to -4
        warps={"feh": ((0.0, 0.10, 0.25, 1.0), (-4.0, -2.5, -1.5, 0.5))}),
}


def built_nodes(preset: str, path: str | Path | None = None) -> tuple[TrainingSetSpec, list]:
    """``(spec, nodes)``: the spectra of a preset built so far: every spectrum of its finished
    file at PATH (default: the preset's output in the photosphere cache) when the build is
    complete; else its build's journal (``PATH.partial/nodes``) and the package's shipped seed
    (:mod:`.seed`, when made for this definition), journal first."""
    from .._files import cache_dir
    from .build import Journal
    from .seed import read_seed, seed_path

    if preset not in TRAINING_PRESETS:
        raise GridError(f"no training-set preset {preset!r}; choose from "
                        f"{', '.join(TRAINING_PRESETS)}")
    spec = TRAINING_PRESETS[preset]()
    path = Path(path) if path is not None else cache_dir("grids") / f"{preset}.h5"
    if path.is_file():
        finished_spec, nodes = finished_nodes(path)
        if finished_spec.to_json() != spec.to_json():
            raise GridError(f"{path} was built from another definition of {preset!r} than "
                            "this photosphere's; build it again (`photosphere grid build "
                            f"--preset {preset}`)")
        return spec, nodes
    nodes = {}
    if Path(str(path) + ".partial").is_dir():
        journal = Journal(path, spec)
        nodes = {i: journal.load(i) for i in sorted(journal.done())}
    if seed_path(preset).is_file():
        spec_json, seeded = read_seed(seed_path(preset))
        if spec_json == spec.to_json():
            for node in seeded:
                nodes.setdefault(node.index, node)
    return spec, [nodes[i] for i in sorted(nodes)]


def finished_nodes(path: str | Path) -> tuple[TrainingSetSpec, list[NodeResult]]:
    """``(spec, nodes)`` of a finished training-set file: every spectrum as the build's journal
    held it (those without a model atmosphere marked missing), so that a finished build can be
    written as a seed. The file keeps the continuum only at its coarse sampling and no per-node
    provenance: ``mean_flux`` is taken over the continuum interpolated from it, ``continuum_error``
    is NaN (not known) and ``provenance`` is the file's."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or not f.attrs.get("complete", False):
                raise GridError(f"{path} is not a finished training set")
            spec = TrainingSetSpec.from_json(f.attrs["spec"])
            flux, cont = f["flux"][:], f["continuum"][:]
            missing, atm = f["missing"][:], f["atmosphere_id"].asstr()[:]
            provenance = {k[len("provenance_"):]: v for k, v in f.attrs.items()
                          if k.startswith("provenance_")}
    except (OSError, KeyError) as exc:
        raise GridError(f"{path} cannot be read as a training set ({exc}); build it again with "
                        "`photosphere grid build --preset NAME`") from None
    sampling = WindowSampling.from_spec(spec)
    nodes = []
    for i in range(len(missing)):
        if missing[i]:
            nodes.append(NodeResult(index=i, missing=True, atmosphere_id=str(atm[i])))
            continue
        absolute = flux[i] * sampling.expand_continuum(cont[i])
        mean = np.array([absolute[sampling.window == k].mean() for k in range(len(spec.windows))])
        nodes.append(NodeResult(index=i, flux=flux[i], continuum=cont[i], mean_flux=mean,
                                continuum_error=float("nan"), atmosphere_id=str(atm[i]),
                                provenance=dict(provenance)))
    return spec, nodes


def read_built(preset: str, path: str | Path | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, TrainingSetSpec, int]:
    """A preset's spectra as built so far: ``(labels (n, L), flux (n, n_pix), wavelength
    (n_pix,) Å, spec, n_planned)`` from the finished file at ``path`` (default: the preset's
    output in the photosphere cache) or, while its build runs, from the spectra journalled in
    ``PATH.partial/nodes`` and those shipped in the package's seed (:func:`built_nodes`;
    spectra without a model atmosphere left out)."""
    from .._files import cache_dir

    if preset not in TRAINING_PRESETS:
        raise GridError(f"no training-set preset {preset!r}; choose from "
                        f"{', '.join(TRAINING_PRESETS)}")
    path = Path(path) if path is not None else cache_dir("grids") / f"{preset}.h5"
    if path.is_file():
        ts = TrainingSet(path)  # spectra without a model atmosphere are already left out
        return (ts.labels, np.asarray(ts.flux, float), ts.wavelength, ts.spec,
                len(ts.labels) + ts.n_missing)
    spec, nodes = built_nodes(preset, path)
    nodes = [n for n in nodes if not n.missing]
    if len(nodes) < 2:
        raise GridError(f"the {preset!r} training set has {len(nodes)} spectra built at {path} "
                        f"(or its .partial journal); build it with `photosphere grid build "
                        f"--preset {preset}` first")
    labels = spec.labels[[n.index for n in nodes]]
    flux = np.stack([n.flux for n in nodes]).astype(float)
    return labels, flux, WindowSampling.from_spec(spec).wavelength, spec, len(spec.labels)
