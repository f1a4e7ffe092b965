"""On-the-fly training data: 2D échelle images simulated from a spectrum source.

A *spectrum source* is any forward model (``photosphere.model.ForwardModel``): the
:class:`~photosphere.grids.interpolate.GridInterpolator` over the ATLAS9 grid (linear
interpolation between grid nodes gives continuous labels, as in the study), or a tiny analytic
model in the tests. For each star (teff, logg, feh, vsini):

    source.predict -> rotational broadening (vsini, ops.rotation) -> Gaussian LSF at R
    (ops.lsf) -> flux-conserving rebinning onto the order layout (ops.resample; 8 × 4096 for
    HARPS-N 5050–5350 Å) -> linear slant across each order -> white Gaussian noise at a
    per-sample S/N (σ = continuum / S/N, ops.noise) -> per-order continuum normalisation
    (:func:`normalise_orders`, also applied to real data).

Splits cannot leak. Each split (train / val / test) owns a fixed set of noise-free stars whose
labels come from its own seed stream (``SeedSequence([seed, split_id])``); :func:`make_splits`
refuses label sets that come closer than ``min_separation`` in scaled units. Augmentation (noise,
slant, radial velocity) is drawn per (split, star, epoch) and applied only to that split's own
stars, so no augmented training sample is ever made from a validation or test star.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ModelError, OutOfGridError
from ..model import ForwardModel
from .augment import (
    curvature_factors,
    line_strength_jitter,
    pixel_velocity,
    unmodelled_lines,
    veil,
)

LABELS = ("teff", "logg", "feh", "vsini")
#: labels an estimator may add after :data:`LABELS` (in ``DataConfig.bounds``)
EXTRA_LABELS = ("alpha",)
STUDY_BOUNDS = {"teff": (3500.0, 9750.0), "logg": (0.0, 5.0), "feh": (-2.5, 0.5),
                "vsini": (0.0, 30.0)}
SPLITS = {"train": 0, "val": 1, "test": 2}
_CHUNK = 1024  # labels drawn at a time
Validity = Callable[[torch.Tensor], torch.Tensor]  # labels (m, 4) -> bool (m,)
C_KMS = 299_792.458
_IMAGE_VERSION = 1  # bump when EchelleSimulator.images changes, to invalidate disk caches


class Layout(Protocol):
    """An echelle order layout (``ops.echelle.OrderLayout``): wavelength (n_orders, n_pixels) Å."""

    wavelength: np.ndarray
    medium: str


@dataclass(frozen=True)
class StoredLayout:
    """The order layout recorded in a checkpoint: wavelength (n_orders, n_pixels) Å, medium."""

    wavelength: np.ndarray
    medium: str = "air"

    @classmethod
    def of(cls, checkpoint) -> StoredLayout:
        """The layout a checkpoint's model was trained on."""
        data = checkpoint.data
        return cls(np.asarray(data["layout_wavelength"]), data.get("layout_medium", "air"))


SOURCE_MARGIN_KMS = 50.0  # room at the layout edges for 30 km/s rotation + LSF + RV shifts


def default_layout(source: ForwardModel | None = None) -> Layout:
    """The HARPS-N 5050–5350 Å layout of the study: 8 orders × 4096 pixels.

    With ``source``, the window is narrowed (to 0.1 Å) where needed so that the source covers it
    with a ``SOURCE_MARGIN_KMS`` margin: the embedded grid spans exactly 5050–5350 Å, so its
    models are trained on 8 × 4096 pixels over ≈ 5050.9–5349.1 Å.
    """
    from ..ops.echelle import HARPSN_5050_5350, OrderLayout

    layout = HARPSN_5050_5350()
    if source is None:
        return layout
    wave = np.asarray(source.wavelength, dtype=float)
    margin = 1 + SOURCE_MARGIN_KMS / C_KMS
    lo, hi = layout.wavelength_range
    new_lo = max(lo, math.ceil(wave[0] * margin * 10) / 10)
    new_hi = min(hi, math.floor(wave[-1] / margin * 10) / 10)
    if (new_lo, new_hi) == (lo, hi) or new_hi - new_lo < 0.5 * (hi - lo):
        return layout  # covered, or too little overlap (EchelleSimulator says why)
    return OrderLayout.from_instrument(new_lo, new_hi, layout.n_orders, layout.n_pixels,
                                       resolving_power=115_000.0, medium=layout.medium,
                                       name=f"HARPS-N {new_lo:g}-{new_hi:g} Å (8 orders)")


@dataclass(frozen=True)
class DataConfig:
    """How training images are made. Plain values only, so it is stored in checkpoints.

    bounds: label box (physical units) that stars are drawn from (uniformly);
    snr: S/N per pixel at the continuum; a pair (lo, hi) draws it log-uniformly per sample;
    slant: largest fractional change of the flux from one end of an order to the other;
    rv_max: radial-velocity augmentation in km/s (0 = none; > 0 disables the clean-image cache);
    unmodelled_lines: training only: largest mean number per order of random weak absorption
    lines the grid lacks (``nn.augment``; 0 = none); curvature: training only: largest
    fractional bow of each order's continuum (0 = none); veiling: training only: largest added
    continuum s, flux (f + s) / (1 + s), drawn uniformly per sample (0 = none); line_jitter:
    training only: largest σ of the log of a per-line depth factor, drawn uniformly per sample
    (0 = none);
    resolution: R of the Gaussian LSF, or a pair (lo, hi): R drawn log-uniformly per star
    (every split; an instrument-independent model); macroturbulence: radial–tangential ζ in
    km/s, or a pair (lo, hi): ζ drawn uniformly per star (0 = none, the study); both are
    nuisances, not estimated, drawn from the star's own seed stream;
    epsilon: limb darkening of the rotation kernel;
    fixed: values for source labels that are not estimated (e.g. alpha, vmic);
    relations: draw [α/Fe] and vmic per star from the Galactic [α/Fe]–[Fe/H] trend and the
    vmic(Teff, log g) relation of ``grids.tied_labels``, each with its real stars' scatter
    (instead of ``fixed``): the spread of real stars, not one value;
    window_dropout: training only: probability that each wavelength window of the layout
    (:func:`~photosphere.nn.layouts.layout_groups`) is blanked to the continuum in a sample
    (at least :data:`MIN_WINDOWS_KEPT` kept), so the model reads spectra that cover only some of
    its windows (0 = never).

    ``bounds`` holds :data:`LABELS` in order and, optionally, ``alpha`` after them: the model
    then also estimates [α/Fe] (drawn from the trend with ``relations``, else uniformly).
    """

    bounds: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(STUDY_BOUNDS))
    n_train: int = 400
    n_val: int = 100
    n_test: int = 200
    snr: float | tuple[float, float] = 20.0
    slant: float = 0.1
    rv_max: float = 0.0
    unmodelled_lines: float = 0.0
    curvature: float = 0.0
    veiling: float = 0.0
    line_jitter: float = 0.0
    resolution: float | tuple[float, float] = 115_000.0
    macroturbulence: float | tuple[float, float] = 0.0
    epsilon: float = 0.6
    seed: int = 0
    min_separation: float = 1e-4
    fixed: dict[str, float] = field(default_factory=lambda: {"alpha": 0.0, "vmic": 1.0})
    relations: bool = False
    window_dropout: float = 0.0

    def __post_init__(self) -> None:
        bounds = {k: (float(v[0]), float(v[1])) for k, v in dict(self.bounds).items()}
        names = tuple(bounds)
        if names[:len(LABELS)] != LABELS or not set(names[len(LABELS):]) <= set(EXTRA_LABELS):
            raise ModelError(f"bounds must give {LABELS} in that order, optionally followed by "
                             f"{EXTRA_LABELS}; got {names}")
        for name, (lo, hi) in bounds.items():
            if not hi > lo:
                raise ModelError(f"bounds[{name!r}] = ({lo}, {hi}) is empty; give lo < hi")
        object.__setattr__(self, "bounds", bounds)
        snr = self.snr
        if isinstance(snr, list | tuple):
            snr = (float(snr[0]), float(snr[1]))
            if not 0 < snr[0] <= snr[1]:
                raise ModelError(f"snr range {snr} must satisfy 0 < lo <= hi")
        elif not snr > 0:
            raise ModelError(f"snr={snr} must be positive")
        object.__setattr__(self, "snr", snr)
        for name, positive in (("resolution", True), ("macroturbulence", False)):
            value = getattr(self, name)
            pair = isinstance(value, list | tuple)
            lo, hi = (float(value[0]), float(value[1])) if pair else (float(value),) * 2
            if not (lo <= hi and (lo > 0 if positive else lo >= 0) and math.isfinite(hi)):
                raise ModelError(f"{name}={value} must be {'positive' if positive else '>= 0'}"
                                 " (a pair: lo <= hi)")
            object.__setattr__(self, name, (lo, hi) if pair else lo)
        for name in ("slant", "rv_max", "unmodelled_lines", "curvature", "veiling",
                     "line_jitter"):
            if not getattr(self, name) >= 0:
                raise ModelError(f"{name}={getattr(self, name)} must be >= 0 (0 turns it off)")
        if not 0 <= self.window_dropout < 1:
            raise ModelError(f"window_dropout={self.window_dropout} must be in [0, 1)")

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels the model estimates: :data:`LABELS`, then ``alpha`` when in ``bounds``."""
        return tuple(self.bounds)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns of a split's star labels: the estimated labels, then the nuisance labels
        drawn per star (``alpha`` and ``vmic`` with ``relations``)."""
        cols = list(self.label_names)
        if self.relations:
            cols += [n for n in ("alpha", "vmic") if n not in cols]
        return tuple(cols)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        for name in ("snr", "resolution", "macroturbulence"):
            value = getattr(self, name)
            d[name] = list(value) if isinstance(value, tuple) else value
        return d

    @property
    def nominal_resolution(self) -> float:
        """R of the simulator: the value, or the geometric middle of a drawn range."""
        r = self.resolution
        return math.sqrt(r[0] * r[1]) if isinstance(r, tuple) else float(r)

    @property
    def draws_broadening(self) -> bool:
        """True when R or ζ differ from star to star."""
        return isinstance(self.resolution, tuple) or isinstance(self.macroturbulence, tuple)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _split_generator(seed: int, *keys: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_labels(bounds: Mapping[str, tuple[float, float]], n: int, seed: int, split: str,
                valid: Validity | None = None, relations: bool = False) -> torch.Tensor:
    """(n, k) physical labels uniform in ``bounds`` (k labels), from the seed stream of
    ``split``; with ``relations``, [α/Fe] (when in ``bounds``: clipped to them) and then vmic
    come from :func:`nuisance_labels` instead (columns as ``DataConfig.columns``).

    valid: labels (m, k) -> bool (m,); rejected draws (e.g. in the holes of a model-atmosphere
    grid) are skipped. Draws come in fixed chunks, so the first n stars of a split never depend
    on how many are asked for.
    """
    if split not in SPLITS:
        raise ModelError(f"split={split!r} is not known; use one of {tuple(SPLITS)}")
    g = _split_generator(seed, 1, SPLITS[split])
    names = tuple(bounds)
    lo = torch.tensor([bounds[k][0] for k in names], dtype=torch.float64)
    hi = torch.tensor([bounds[k][1] for k in names], dtype=torch.float64)
    kept, total, drawn = [], 0, 0
    while total < n:
        cand = lo + (hi - lo) * torch.rand(_CHUNK, len(names), generator=g, dtype=torch.float64)
        if relations:
            cand = torch.cat([cand[:, :len(LABELS)],
                              nuisance_labels(cand[:, :len(LABELS)], g, bounds.get("alpha"))],
                             dim=1)
        if valid is not None:
            cand = cand[valid(cand)]
        kept.append(cand)
        total += len(cand)
        drawn += _CHUNK
        if drawn >= 20 * _CHUNK and total < 0.01 * drawn:
            raise ModelError(f"fewer than 1 % of the labels drawn in {dict(bounds)} can be "
                             "simulated by the spectrum source; choose bounds inside the grid")
    return torch.cat(kept)[:n]


def nuisance_labels(labels: torch.Tensor, generator: torch.Generator | None = None,
                    alpha_bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """(m, 2) [α/Fe] and vmic (km/s) for stars (m, ≥ 3: teff, logg, feh, ...): the Galactic
    trend and the vmic relation of :mod:`photosphere.grids.tied_labels`, plus Gaussian scatter
    of ``ALPHA_SCATTER`` and ``VMIC_SCATTER`` drawn from ``generator`` (None: no scatter, the
    relations' own values). [α/Fe] is clipped to ``alpha_bounds`` (default −0.1..0.5) and vmic to
    0.5–2.5 km/s (the optical training set's box)."""
    from ..grids.tied_labels import ALPHA_SCATTER, VMIC_SCATTER, alpha_trend, vmic_relation

    lab = labels.double()
    alpha = alpha_trend(lab[:, 2])
    vmic = vmic_relation(lab[:, 0], lab[:, 1])
    if generator is not None:
        z = torch.randn(len(lab), 2, generator=generator, dtype=torch.float64)
        alpha = alpha + ALPHA_SCATTER * z[:, 0]
        vmic = vmic + VMIC_SCATTER * z[:, 1]
    a_lo, a_hi = alpha_bounds or (-0.1, 0.5)
    return torch.stack([alpha.clamp(a_lo, a_hi), vmic.clamp(0.5, 2.5)], dim=1)


def complete_labels(labels: np.ndarray | torch.Tensor, config: DataConfig) -> torch.Tensor:
    """Estimated labels (m, len(config.label_names)) -> star labels (m, len(config.columns)),
    the nuisance columns at their relations' values (no scatter): what a consistency check or a
    twin simulates at a prediction."""
    lab = torch.as_tensor(np.asarray(labels, dtype=float)).reshape(-1, len(config.label_names))
    if len(config.columns) == lab.shape[1]:
        return lab
    extra = nuisance_labels(lab, None, config.bounds.get("alpha"))
    wanted = [("alpha", 0), ("vmic", 1)]
    cols = [extra[:, j:j + 1] for name, j in wanted if name in config.columns[lab.shape[1]:]]
    return torch.cat([lab, *cols], dim=1)


def labels_in_bounds(labels: np.ndarray | torch.Tensor, config: DataConfig,
                     bounds: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """:func:`complete_labels` of one estimate (k,), with Teff, log g and [Fe/H] moved inside
    the source's ``bounds`` and vsini (column 3) at least 0: labels a model can image."""
    out = complete_labels(labels, config).clone()  # may share the caller's array
    for j, name in enumerate(("teff", "logg", "feh")):
        lo, hi = bounds[name]
        out[0, j] = min(max(float(out[0, j]), lo), hi)
    out[0, 3] = max(float(out[0, 3]), 0.0)
    return out


def emulator_coverage(source: ForwardModel, columns: Sequence[str],
                      fixed: Mapping[str, float] | None = None,
                      factor: float = 2.0) -> Validity | None:
    """A ``valid`` function for :func:`draw_labels` over an emulator of scattered spectra: True
    where the nearest training spectrum lies within ``factor`` × the training set's 90th
    percentile nearest-neighbour distance (labels scaled by the emulator's own scales), so that
    no star is drawn where the emulator only extrapolates (e.g. hot supergiants). None for
    sources that record no training labels."""
    base = source
    while not hasattr(base, "train_labels_") and hasattr(base, "base"):
        base = base.base
    nodes = getattr(base, "train_labels_", None)
    if nodes is None:
        return None
    nodes = torch.as_tensor(np.asarray(nodes, dtype=float))  # scaled by the emulator
    offset = torch.as_tensor(np.asarray(base.label_offset_, dtype=float))
    scale = torch.as_tensor(np.asarray(base.label_scale_, dtype=float))
    d_nodes = torch.cdist(nodes, nodes)
    d_nodes.fill_diagonal_(math.inf)
    limit = factor * float(torch.quantile(d_nodes.min(dim=1).values, 0.9))
    source_cols = _source_columns(source, fixed or {}, columns)

    def valid(labels: torch.Tensor) -> torch.Tensor:
        x = (_to_source(labels, source_cols) - offset) / scale
        return torch.cdist(x, nodes).min(dim=1).values <= limit

    return valid


def source_coverage(source: ForwardModel,
                    fixed: Mapping[str, float] | None = None) -> Validity | None:
    """A ``valid`` function for :func:`draw_labels`: True where the source can make a spectrum
    (not in a hole of the grid), probed with the source's cheap ``predict_mean_flux``
    (GridInterpolator); rows are tried one by one only when a whole chunk fails. None (accept
    everything) for sources without that method.
    """
    probe = getattr(source, "predict_mean_flux", None)
    if probe is None:
        return None
    columns = _source_columns(source, fixed or {})

    def ok(labels: torch.Tensor) -> bool:
        try:
            probe(_to_source(labels, columns))
        except OutOfGridError:
            return False
        return True

    def valid(labels: torch.Tensor) -> torch.Tensor:
        if ok(labels):
            return torch.ones(len(labels), dtype=torch.bool)
        return torch.tensor([ok(row[None]) for row in labels], dtype=torch.bool)

    return valid


def min_scaled_distance(a: torch.Tensor, b: torch.Tensor,
                        bounds: Mapping[str, tuple[float, float]]) -> float:
    """Smallest distance between rows of ``a`` and ``b`` with each label scaled to [0, 1]."""
    if len(a) == 0 or len(b) == 0:
        return math.inf
    width = torch.tensor([bounds[k][1] - bounds[k][0] for k in LABELS], dtype=torch.float64)
    return float(torch.cdist(a.double() / width, b.double() / width).min())


def make_splits(config: DataConfig, valid: Validity | None = None) -> dict[str, torch.Tensor]:
    """The noise-free star labels of every split (columns ``config.columns``), checked to be
    disjoint."""
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    labels = {s: draw_labels(config.bounds, n, config.seed, s, valid, config.relations)
              for s, n in sizes.items()}
    k = len(LABELS)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        d = min_scaled_distance(labels[a][:, :k], labels[b][:, :k], config.bounds)
        if d < config.min_separation:
            raise ModelError(f"{a} and {b} stars come within {d:.2e} (scaled) of each other; "
                             f"choose another seed or a smaller min_separation")
    return labels


def _source_columns(source: ForwardModel, fixed: Mapping[str, float],
                    columns: Sequence[str] = LABELS) -> list[tuple[str, int | float]]:
    """Per source label: the index of the star-label column that feeds it, or a fixed value."""
    cols: list[tuple[str, int | float]] = []
    for name in source.label_names:
        if name in columns and name != "vsini":
            cols.append((name, list(columns).index(name)))
        else:
            lo, hi = source.bounds[name]
            value = fixed.get(name, 0.5 * (lo + hi))
            cols.append((name, float(min(max(value, lo), hi))))
    missing = set(LABELS[:3]) - {n for n, _ in cols}
    if missing:
        raise ModelError(f"the spectrum source has labels {source.label_names}; it lacks "
                         f"{sorted(missing)} needed by the estimator")
    return cols


def _to_source(labels: torch.Tensor, columns: list[tuple[str, int | float]]) -> torch.Tensor:
    out = [labels[:, v] if isinstance(v, int) else torch.full_like(labels[:, 0], v)
           for _, v in columns]
    return torch.stack(out, dim=-1)


def _window_gaps(wave: np.ndarray) -> np.ndarray:
    """(n - 1,) True between two pixels of ``wave`` that lie in different windows (a step
    more than 3 × the median step in ln λ)."""
    d = np.diff(np.log(wave))
    return d > 3 * np.median(d)


def _check_covers(wave: np.ndarray, layout: np.ndarray) -> None:
    """Raise unless every layout row lies inside one stretch of the source's wavelengths
    ``wave`` (split at gaps between windows) with room for rotation and LSF: the
    ``SOURCE_MARGIN_KMS`` margin, less 5 km/s for the source's own sampling."""
    cuts = np.flatnonzero(_window_gaps(wave)) + 1
    stretches = [(seg[0], seg[-1]) for seg in np.split(wave, cuts)]
    room = (SOURCE_MARGIN_KMS - 5.0) / C_KMS
    for row in np.asarray(layout, dtype=float):
        lo, hi = row.min() * (1 - room), row.max() * (1 + room)
        if not any(a <= lo and b >= hi for a, b in stretches):
            covered = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in stretches[:8])
            raise ModelError(
                f"the spectrum source covers {covered} Å but the layout needs "
                f"{lo:.1f}-{hi:.1f} Å in one piece (a {SOURCE_MARGIN_KMS:g} km/s margin around "
                f"an order of {row.min():.1f}-{row.max():.1f} Å); use a grid that covers the "
                "orders")


class EchelleSimulator:
    """Noise-free échelle images (B, n_orders, n_pixels) of stars with given labels."""

    def __init__(self, source: ForwardModel, layout: Layout, resolution: float = 115_000.0,
                 epsilon: float = 0.6, fixed: Mapping[str, float] | None = None,
                 columns: Sequence[str] = LABELS):
        from ..ops.grid import velocity_step

        self.source = source
        self.layout = layout
        self.resolution = float(resolution)
        self.epsilon = float(epsilon)
        self.layout_wavelength = torch.tensor(np.array(layout.wavelength, dtype=float))
        wave = np.asarray(source.wavelength, dtype=float)
        if getattr(source, "medium", layout.medium) != layout.medium:
            from ..ops.airvac import air_to_vacuum, vacuum_to_air

            wave = air_to_vacuum(wave) if layout.medium == "vacuum" else vacuum_to_air(wave)
        # a source of several windows (an emulator of line windows) is log-uniform within each
        # and states its step; rotation and LSF then act within windows (50 km/s margins)
        step = getattr(source, "velocity_step", None)
        if step is not None and math.isfinite(float(step)) and step > 0:
            self.velocity_step = float(step)
        else:
            d = np.diff(np.log(wave))
            jumps = _window_gaps(wave)
            self.velocity_step = (velocity_step(wave) if not jumps.any()
                                  else float(np.median(d[~jumps]) * C_KMS))
        self.source_wavelength = torch.tensor(np.array(wave, dtype=float))
        _check_covers(wave, self.layout_wavelength.numpy())
        self.fixed = dict(fixed or {})
        self.columns = tuple(columns)
        self._columns = _source_columns(source, self.fixed, self.columns)

    @functools.cached_property
    def cache_key(self) -> str | None:
        """A digest of everything that makes an image besides the labels: the source file's
        bytes, the source's ``cache_token`` if any (a correction of its spectra), the order
        layout, R, ε and the fixed labels. None when the source is not a file
        (e.g. an analytic model), so its images are never cached on disk."""
        path = getattr(self.source, "path", None)
        if path is None or not Path(path).is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(np.ascontiguousarray(self.layout_wavelength.numpy()).tobytes())
        h.update(json.dumps([_IMAGE_VERSION, self.layout.medium, self.resolution, self.epsilon,
                             self._columns], sort_keys=True).encode())
        token = getattr(self.source, "cache_token", None)  # e.g. empirical line strengths
        if token is not None:
            h.update(str(token).encode())
        return h.hexdigest()

    def source_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, n_columns) star labels -> (B, n_source_labels) in the source's order."""
        return _to_source(labels, self._columns)

    @torch.no_grad()
    def images(self, labels: torch.Tensor, rv: torch.Tensor | None = None,
               resolution: torch.Tensor | None = None,
               macroturbulence: torch.Tensor | None = None) -> torch.Tensor:
        """labels: (B, n_columns) physical star labels (teff, logg, feh, vsini, ...); rv: (B,)
        km/s or None; resolution: (B,) R per star (None:
        the simulator's); macroturbulence: (B,) ζ_RT km/s per star (None: none)
        -> (B, n_orders, n_pixels) float32."""
        from ..ops._kernels import convolve
        from ..ops.lsf import gaussian_broaden
        from ..ops.macroturbulence import radial_tangential_kernel
        from ..ops.resample import rebin
        from ..ops.rotation import rotational_broaden

        labels = labels.double()
        for j, name in enumerate(LABELS[:3]):
            lo, hi = self.source.bounds[name]
            bad = (labels[:, j] < lo) | (labels[:, j] > hi)
            if bool(bad.any()):
                raise OutOfGridError(f"{name}={float(labels[bad, j][0]):g} is outside the "
                                     f"source ({lo:g}-{hi:g}); shrink the data bounds")
        flux = torch.as_tensor(self.source.predict(self.source_labels(labels))).double()
        flux = rotational_broaden(flux, labels[:, 3], self.velocity_step, self.epsilon)
        if macroturbulence is not None and bool((macroturbulence > 0).any()):
            kernel = radial_tangential_kernel(self.velocity_step, macroturbulence.double())
            flux = convolve(flux, kernel.reshape(len(flux), -1))
        r = self.resolution if resolution is None else resolution.double()
        flux = gaussian_broaden(flux, r, self.velocity_step)  # (B, n_src)
        wave_in = self.source_wavelength
        if rv is not None:  # (B, n_src): shifted rest-frame wavelengths
            beta = rv.double().unsqueeze(-1) / C_KMS
            wave_in = wave_in * torch.sqrt((1 + beta) / (1 - beta))
            wave_in = wave_in.unsqueeze(1)  # (B, 1, n_src)
        out = rebin(wave_in, flux.unsqueeze(1), self.layout_wavelength)  # (B, n_orders, n_pix)
        return out.float()


#: windows a blanked training sample keeps at least (``DataConfig.window_dropout``)
MIN_WINDOWS_KEPT = 2


def blank_windows(images: torch.Tensor, groups: torch.Tensor, probability: float,
                  generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Training augmentation: each window (rows of one ``groups`` value) of each image
    (B, n_orders, n_pixels) set to the continuum (1) with ``probability``, as
    :func:`~photosphere.nn.inputs.prepare_image` fills the windows a real spectrum does not
    cover; at least :data:`MIN_WINDOWS_KEPT` windows stay (all when the layout has fewer)."""
    n_groups = int(groups.max()) + 1
    if n_groups <= MIN_WINDOWS_KEPT:
        return images
    out = images.clone()
    for b, g in enumerate(generators):
        u = torch.rand(n_groups, generator=g)
        drop = u < probability
        if int((~drop).sum()) < MIN_WINDOWS_KEPT:  # keep the windows least likely dropped
            drop[torch.argsort(u, descending=True)[:MIN_WINDOWS_KEPT]] = False
        rows = drop[groups]
        out[b, rows] = 1.0
    return out


def slant_factors(slopes: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """slopes: (B, n_orders) fractional change across an order -> (B, n_orders, n_pixels)."""
    x = torch.linspace(-0.5, 0.5, n_pixels, dtype=slopes.dtype)
    return 1 + slopes.unsqueeze(-1) * x


def normalise_orders(images: torch.Tensor, n_iter: int = 4, clip: float = 1.0) -> torch.Tensor:
    """Divide each order (..., n_pixels) by a straight-line fit to its upper envelope.

    Iteratively refits a line to the pixels above ``fit - clip·σ_residual`` (absorption lines drop
    out), so normalised flux, a slanted order and a deblazed real order all come out near 1 at the
    continuum. The same step runs on training images and on real data.
    """
    n = images.shape[-1]
    # scale-free: flux in physical units (1e-13 erg/s/cm²/Å) is normalised like counts or 1s
    level = images.abs().amax(-1, keepdim=True)
    images = images / torch.where(level > 0, level, torch.ones_like(level))
    x = torch.linspace(-1, 1, n, dtype=images.dtype)
    weight = torch.ones_like(images)
    for _ in range(n_iter):  # weighted straight-line fit in closed form
        s0 = weight.sum(-1, keepdim=True)
        s1 = (weight * x).sum(-1, keepdim=True)
        s2 = (weight * x * x).sum(-1, keepdim=True)
        t0 = (weight * images).sum(-1, keepdim=True)
        t1 = (weight * images * x).sum(-1, keepdim=True)
        det = (s0 * s2 - s1 * s1).clamp_min(1e-12)
        slope = (s0 * t1 - s1 * t0) / det
        fit = (t0 - slope * s1) / s0.clamp_min(1e-12) + slope * x  # (..., n)
        resid = images - fit
        scale = (resid.pow(2) * weight).sum(-1, keepdim=True) / s0.clamp_min(1e-12)
        weight = (resid >= -clip * scale.sqrt()).to(images.dtype)  # >=: flat orders keep all
    return images / fit.clamp_min(1e-3)


def add_noise(images: torch.Tensor, continuum: torch.Tensor, snr: torch.Tensor,
              seeds: list[int]) -> torch.Tensor:
    """White Gaussian noise of σ = continuum / S/N (the study's noise model, as ``ops.noise``).

    images, continuum: (B, n_orders, n_pixels); snr: (B,); seeds: one per sample, so a sample's
    noise does not depend on the batch it lands in.
    """
    unit = np.stack([np.random.default_rng(seed).standard_normal(images.shape[1:],
                                                                 dtype=np.float32)
                     for seed in seeds])  # (B, n_orders, n_pixels)
    sigma = continuum / snr.to(images.dtype).view(-1, 1, 1)
    return images + sigma * torch.from_numpy(unit).to(images.dtype)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 1, n_orders, n_pixels) model input
    labels: torch.Tensor  # (B, k) physical estimated labels (DataConfig.label_names)
    snr: torch.Tensor  # (B,) S/N of each sample
    index: torch.Tensor  # (B,) star index within the split
    slanted: torch.Tensor  # (B, n_orders, n_pixels) the same image without noise, unnormalised

    @functools.cached_property
    def clean(self) -> torch.Tensor:
        """(B, 1, n_orders, n_pixels) the noise-free, normalised image (the DAE target)."""
        return normalise_orders(self.slanted).unsqueeze(1)


class EchelleDataset:
    """The stars of one split, turned into noisy images batch by batch.

    Training samples differ every epoch (noise, slant, RV drawn from (seed, split, star, epoch));
    validation and test samples are the same every time (epoch fixed to 0). The noise-free images
    of all stars are simulated once and kept in memory (unless RV augmentation is on); with
    ``cache_dir`` they are also stored there as ``.npy`` files named by a digest of the source
    file, the simulator settings and the split's labels, so later runs and ``eval`` on the same
    stars skip the simulation. Each epoch then only adds the cheap per-sample augmentation.
    """

    def __init__(self, simulator: EchelleSimulator, labels: torch.Tensor, config: DataConfig,
                 split: str, snr: float | tuple[float, float] | None = None, cache: bool = True,
                 cache_dir: str | Path | None = None):
        if split not in SPLITS:
            raise ModelError(f"split={split!r} is not known; use one of {tuple(SPLITS)}")
        self.simulator = simulator
        self.labels = labels.double()
        self.config = config
        self.split = split
        self.snr = config.snr if snr is None else snr
        self.augment = split == "train"
        self.cache_enabled = cache and not (self.augment and config.rv_max > 0)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._cache: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def _pixel_kms(self) -> float:
        return pixel_velocity(self.simulator.layout_wavelength)

    def cache_file(self) -> Path | None:
        """Where this split's noise-free images are stored on disk (None: not stored)."""
        key = self.simulator.cache_key if self.cache_dir is not None else None
        if key is None or not self.cache_enabled:
            return None
        h = hashlib.sha256(key.encode())
        h.update(np.ascontiguousarray(self.labels.numpy()).tobytes())
        if self.config.draws_broadening or self.config.macroturbulence != 0:
            cfg = self.config.to_dict()
            h.update(json.dumps([cfg["resolution"], cfg["macroturbulence"], cfg["seed"]]).encode())
        return self.cache_dir / f"{self.split}-{len(self)}-{h.hexdigest()[:24]}.npy"

    def clean_images(self, batch_size: int = 64) -> torch.Tensor:
        """(n_stars, n_orders, n_pixels) float32 noise-free images of all stars (cached)."""
        if self._cache is not None:
            return self._cache
        path = self.cache_file()
        if path is not None and path.is_file():
            try:
                images = np.load(path)
                if images.shape[0] == len(self):
                    self._cache = torch.from_numpy(images)
                    return self._cache
            except (OSError, ValueError):
                pass  # unreadable (e.g. truncated by a full disk): simulate again
        parts = []
        for s in tqdm(range(0, len(self), batch_size), desc=f"simulating {self.split}",
                      leave=False, disable=len(self) <= batch_size):
            index = torch.arange(s, min(s + batch_size, len(self)))
            parts.append(self.simulator.images(self.labels[index], **self.broadening(index)))
        self._cache = torch.cat(parts)
        if path is not None:
            from .._files import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, self._cache.numpy())
        return self._cache

    def broadening(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-star nuisance broadening (``resolution``, ``macroturbulence``: (B,)) for the
        stars ``index``, drawn from each star's own stream when given as ranges; a fixed ζ > 0
        for every star; empty when neither applies (the simulator's own R, no ζ)."""
        cfg = self.config
        r, z = cfg.resolution, cfg.macroturbulence
        out = {}
        if cfg.draws_broadening:
            u = torch.stack([torch.rand(2, generator=_split_generator(
                cfg.seed, 5, SPLITS[self.split], int(i))) for i in index])
        if isinstance(r, tuple):
            out["resolution"] = torch.exp(math.log(r[0]) + (math.log(r[1]) - math.log(r[0]))
                                          * u[:, 0].double())
        if isinstance(z, tuple):
            out["macroturbulence"] = z[0] + (z[1] - z[0]) * u[:, 1].double()
        elif z > 0:
            out["macroturbulence"] = torch.full((len(index),), float(z), dtype=torch.float64)
        return out

    def _clean(self, index: torch.Tensor, epoch: int, batch_size: int) -> torch.Tensor:
        if self.cache_enabled:
            return self.clean_images(batch_size)[index]
        rv = None
        if self.augment and self.config.rv_max > 0:
            rv = torch.stack([(2 * torch.rand(1, generator=self._gen(int(i), epoch, 3)) - 1)
                              * self.config.rv_max for i in index]).squeeze(-1)
        return self.simulator.images(self.labels[index], rv, **self.broadening(index))

    def _seed(self, star: int, epoch: int) -> int:
        return int(np.random.SeedSequence([self.config.seed, 2, SPLITS[self.split], star,
                                           epoch if self.augment else 0, 2]).generate_state(1)[0])

    def _gen(self, star: int, epoch: int, purpose: int) -> torch.Generator:
        return _split_generator(self.config.seed, 2, SPLITS[self.split], star,
                                epoch if self.augment else 0, purpose)

    def batch(self, index: torch.Tensor, epoch: int = 0, batch_size: int = 64) -> Batch:
        """Noisy, slanted, normalised images of the stars ``index`` (within this split)."""
        index = torch.as_tensor(index, dtype=torch.long)
        clean = self._clean(index, epoch, batch_size)  # (B, n_orders, n_pix)
        b, n_orders, n_pix = clean.shape
        draws = [torch.rand(n_orders + 1, generator=self._gen(int(i), epoch, 1)) for i in index]
        u = torch.stack(draws)  # (B, n_orders + 1) uniform
        slopes = (2 * u[:, :n_orders] - 1) * self.config.slant
        if isinstance(self.snr, tuple):
            lo, hi = math.log(self.snr[0]), math.log(self.snr[1])
            snr = torch.exp(lo + (hi - lo) * u[:, -1])
        else:
            snr = torch.full((b,), float(self.snr))
        continuum = slant_factors(slopes, n_pix)  # (B, n_orders, n_pix)
        if self.augment and self.config.curvature > 0:
            bows = torch.stack([2 * torch.rand(n_orders, generator=self._gen(int(i), epoch, 5))
                                - 1 for i in index]) * self.config.curvature
            continuum = continuum * curvature_factors(bows, n_pix)
        if self.augment and self.config.line_jitter > 0:
            gens = [self._gen(int(i), epoch, 7) for i in index]
            sigma = torch.cat([torch.rand(1, generator=g) for g in gens]) * self.config.line_jitter
            clean = line_strength_jitter(clean, sigma, gens)
        if self.augment and self.config.veiling > 0:
            clean = veil(clean, torch.cat([torch.rand(1, generator=self._gen(int(i), epoch, 6))
                                           for i in index]) * self.config.veiling)
        if self.augment and self.config.unmodelled_lines > 0:
            clean = clean * unmodelled_lines(
                n_orders, n_pix, self.labels[index, 3], self.config.unmodelled_lines,
                self._pixel_kms, [self._gen(int(i), epoch, 4) for i in index])
        slanted = clean * continuum
        noisy = add_noise(slanted, continuum, snr, [self._seed(int(i), epoch) for i in index])
        images = normalise_orders(noisy)
        if self.augment and self.config.window_dropout > 0:
            images = blank_windows(images, self._groups, self.config.window_dropout,
                                   [self._gen(int(i), epoch, 8) for i in index])
        n_est = len(self.config.label_names)
        return Batch(images.unsqueeze(1), self.labels[index, :n_est].float(), snr, index,
                     slanted)

    @functools.cached_property
    def _groups(self) -> torch.Tensor:
        from .layouts import layout_groups

        return torch.as_tensor(layout_groups(self.simulator.layout_wavelength.numpy()))

    def batches(self, batch_size: int, epoch: int = 0, shuffle: bool = False) -> Iterator[Batch]:
        """All stars once, in batches; shuffled by (seed, epoch) when ``shuffle``."""
        if shuffle:
            order = torch.randperm(len(self), generator=_split_generator(self.config.seed, 3,
                                                                         epoch))
        else:
            order = torch.arange(len(self))
        for s in range(0, len(self), batch_size):
            yield self.batch(order[s:s + batch_size], epoch, batch_size)


def build_datasets(source: ForwardModel, config: DataConfig, layout: Layout | None = None,
                   cache: bool = True, cache_dir: str | Path | None = None,
                   ) -> dict[str, EchelleDataset]:
    """Train, validation and test datasets over one source with leak-free splits.

    cache: keep noise-free images in memory; cache_dir: also store them there (see
    :class:`EchelleDataset`)."""
    layout = default_layout(source) if layout is None else layout
    for name in LABELS[:3]:
        lo, hi = source.bounds[name]
        blo, bhi = config.bounds[name]
        if blo < lo or bhi > hi:
            raise OutOfGridError(f"data bounds for {name} ({blo:g}-{bhi:g}) exceed the source "
                                 f"({lo:g}-{hi:g}); pass bounds inside the grid")
    simulator = EchelleSimulator(source, layout, config.nominal_resolution, config.epsilon,
                                 config.fixed, config.columns)
    valid = (emulator_coverage(source, config.columns, config.fixed)
             or source_coverage(source, config.fixed))
    labels = make_splits(config, valid)
    return {s: EchelleDataset(simulator, labels[s], config, s, cache=cache, cache_dir=cache_dir)
            for s in SPLITS}
