"""The synthetic twin of a real star, and noise on the network's pixels.

To measure the synthetic-to-real gap, the network is shown the real spectrum and its *twin*: the
network's own physics at the star's reference labels, imaged as its training images are.

* :func:`synthesize_twin` runs the grid's synthesizer (Turbospectrum by default) at any labels
  with the grid's own settings (atmosphere family, fixed [α/Fe] and vmic, synthesis step,
  window) and reduces it to the grid's log-uniform sampling, exactly as a grid node is built;
  the result is a one-spectrum :class:`FixedSource`.
* :func:`twin_simulator` puts that source behind the checkpoint's image maker: its empirical
  line strengths, order layout, limb darkening and fixed labels (as the grid consistency check
  does for the grid), so ``simulator.images(labels, resolution=, macroturbulence=)`` gives the
  noise-free twin on the network's pixels.
* :func:`noisy_copies` adds white Gaussian noise of a given σ per order to such an image (or to
  a prepared real image) and normalises every order as training images are
  (:func:`~photosphere.nn.data.add_noise`, :func:`~photosphere.nn.data.normalise_orders`);
  :func:`added_sigma` is the σ that brings an image of S/N s to a lower S/N t.
* :func:`order_mismatch` compares two images order by order (rms after a least-squares scale,
  the input's DER_SNR noise removed in quadrature, as ``nn.consistency``);
  :func:`residual_peaks` lists the largest residuals, one per line; :func:`line_shift` measures
  by how much a real image's lines are shifted against the twin's (an rv left in the file).

S/N here is per pixel of the network's layout at the continuum, the ``snr`` of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidSpectrumError, ModelError

TWIN_LABELS = ("teff", "logg", "feh")
LABEL_TOLERANCE = 1e-3  # K or dex: how far asked labels may be from a FixedSource's own


@dataclass(frozen=True)
class FixedSource:
    """A spectrum source (a ``photosphere.model.ForwardModel``) that holds one spectrum.

    wavelength: (n_pix,) Å, log-uniform; flux: (n_pix,) normalised; labels: teff (K), logg,
    feh (dex) it was made at; ``predict`` returns it for those labels only, within
    :data:`LABEL_TOLERANCE` (float32 labels included; any other row is a ModelError: the source
    cannot make another star).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    labels: dict[str, float]
    medium: str = "air"
    provenance: dict[str, Any] = field(default_factory=dict)
    label_names: tuple[str, ...] = TWIN_LABELS

    def __post_init__(self) -> None:
        wave = np.asarray(self.wavelength, dtype=float)
        flux = np.asarray(self.flux, dtype=float)
        if wave.ndim != 1 or flux.shape != wave.shape:
            raise InvalidSpectrumError(f"FixedSource needs wavelength and flux of one shape "
                                       f"(n,), got {wave.shape} and {flux.shape}")
        if not np.all(np.isfinite(flux)):
            raise InvalidSpectrumError("FixedSource flux has non-finite pixels")
        missing = [n for n in TWIN_LABELS if n not in self.labels]
        if missing:
            raise ModelError(f"FixedSource labels {dict(self.labels)} lack {missing}")
        object.__setattr__(self, "wavelength", wave)
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "labels", {n: float(self.labels[n]) for n in TWIN_LABELS})

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {n: (v - LABEL_TOLERANCE, v + LABEL_TOLERANCE) for n, v in self.labels.items()}

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, 3) teff, logg, feh -> (B, n_pix) the held spectrum."""
        labels = torch.as_tensor(labels, dtype=torch.float64)
        own = torch.tensor([self.labels[n] for n in TWIN_LABELS], dtype=torch.float64)
        if not torch.allclose(labels, own.expand_as(labels), rtol=0, atol=LABEL_TOLERANCE):
            raise ModelError(f"this source holds only the spectrum at {self.labels}; asked for "
                             f"{labels.tolist()}")
        return torch.from_numpy(self.flux.copy()).expand(len(labels), -1)


def synthesize_twin(labels: Mapping[str, float], spec, *,
                    synthesizer: Callable[..., Any] | None = None) -> FixedSource:
    """The grid's physics at ``labels`` (teff K, logg, feh dex): one synthesis with the settings
    of grid ``spec`` (a :class:`~photosphere.grids.presets.GridSpec`: atmosphere family, fixed
    alpha and vmic, step, window with the build's margin), reduced to the grid's log-uniform
    sampling (:func:`~photosphere.grids.store.reduce_node`).

    synthesizer: ``synthesize(teff, logg, feh, alpha, vmic, *, wavelength_min, wavelength_max,
    step, atmosphere)`` returning wavelength, flux (normalised) and continuum; default
    Turbospectrum (:func:`~photosphere.grids.build.default_synthesizer`, built on first use).
    """
    from ..grids.build import SYNTHESIS_MARGIN, default_synthesizer
    from ..grids.store import GridSampling, reduce_node

    synthesizer = default_synthesizer() if synthesizer is None else synthesizer
    fixed = {"alpha": 0.0, "vmic": 1.0, **dict(spec.fixed)}
    values = {n: float(labels[n]) for n in TWIN_LABELS}
    syn = synthesizer(values["teff"], values["logg"], values["feh"], fixed["alpha"],
                      fixed["vmic"], wavelength_min=spec.wavelength_min - SYNTHESIS_MARGIN,
                      wavelength_max=spec.wavelength_max + SYNTHESIS_MARGIN,
                      step=spec.synthesis_step, atmosphere=spec.atmosphere)
    sampling = GridSampling.from_spec(spec)
    node = reduce_node(0, sampling, np.asarray(syn.wavelength), np.asarray(syn.flux),
                       np.asarray(syn.continuum))
    provenance = dict(getattr(syn, "provenance", {}) or {})
    return FixedSource(sampling.wavelength, np.asarray(node.flux, dtype=float), values,
                       spec.medium, {**provenance, "fixed": fixed})


def twin_simulator(checkpoint, source):
    """An :class:`~photosphere.nn.data.EchelleSimulator` of ``source`` as ``checkpoint``'s
    model saw its grid: the checkpoint's empirical line strengths applied (when it has them),
    its layout, nominal R, limb darkening ε and fixed labels."""
    from .data import DataConfig, EchelleSimulator, StoredLayout
    from .train import with_line_strengths

    cfg = DataConfig.from_dict(checkpoint.data)
    return EchelleSimulator(with_line_strengths(source, checkpoint.data.get("line_strengths")),
                            StoredLayout.of(checkpoint), cfg.nominal_resolution, cfg.epsilon,
                            cfg.fixed)


def added_sigma(snr_now: np.ndarray | float, snr_target: float) -> np.ndarray:
    """σ (continuum units) of the white noise that brings an image of S/N ``snr_now`` (per order)
    to ``snr_target``: sqrt(1/t² − 1/s²). InvalidSpectrumError when an order is already noisier
    than the target (noise cannot be taken away)."""
    now = np.atleast_1d(np.asarray(snr_now, dtype=float))
    if not snr_target > 0:
        raise InvalidSpectrumError(f"target S/N {snr_target} must be positive")
    if not np.all(np.isfinite(now) & (now > 0)):
        raise InvalidSpectrumError(f"S/N {now.tolist()} must be positive and finite")
    if np.any(now < snr_target):
        raise InvalidSpectrumError(
            f"S/N {now.min():.0f} of an order is already below the target {snr_target:g}; "
            "choose a target at or below the spectrum's own S/N")
    return np.sqrt(np.maximum(1.0 / snr_target ** 2 - 1.0 / now ** 2, 0.0))


def noisy_copies(image: np.ndarray, sigma: np.ndarray | float, seeds: Sequence[int], *,
                 keep: np.ndarray | None = None) -> np.ndarray:
    """Copies of ``image`` with white Gaussian noise, each order normalised as training images.

    image: (n_orders, n_pixels) flux with the continuum near 1; sigma: noise σ per order
    (n_orders,) or one value, in continuum units (σ = 1/S/N); seeds: one per copy (the noise of
    a copy depends only on its seed); keep: (n_orders, n_pixels) bool, False where no noise is
    added and the pixel stays as it is (e.g. layout pixels a real spectrum does not cover,
    filled with the continuum) -> (n_copies, n_orders, n_pixels) float32.
    """
    from .data import add_noise, normalise_orders

    base = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if base.ndim != 2:
        raise InvalidSpectrumError(f"image must be (n_orders, n_pixels), got {tuple(base.shape)}")
    n_orders = base.shape[0]
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float32), (n_orders,))
    if not np.all(np.isfinite(sig) & (sig >= 0)):
        raise InvalidSpectrumError(f"noise σ {sig.tolist()} must be finite and >= 0")
    if not len(seeds):
        raise InvalidSpectrumError("noisy_copies needs at least one seed")
    images = base.expand(len(seeds), -1, -1)
    # add_noise draws σ = continuum / snr; a continuum of σ·S/N with S/N 1 gives σ per order
    scale = torch.from_numpy(np.array(sig)).view(1, -1, 1).expand_as(images).contiguous()
    noisy = add_noise(images, scale, torch.ones(len(seeds)), [int(s) for s in seeds])
    if keep is not None:
        keep_t = torch.as_tensor(np.asarray(keep, dtype=bool))
        if keep_t.shape != base.shape:
            raise InvalidSpectrumError(f"keep has shape {tuple(keep_t.shape)}, image "
                                       f"{tuple(base.shape)}")
        noisy = torch.where(keep_t, noisy, images)
    return normalise_orders(noisy).numpy().astype(np.float32)


@dataclass(frozen=True)
class OrderMismatch:
    """Per order (n_orders,): rms of (image − scale·model), the image's noise rms (DER_SNR),
    and the mismatch left after removing the noise in quadrature; all in continuum units."""

    residual_rms: np.ndarray
    noise_rms: np.ndarray
    mismatch_rms: np.ndarray
    residual: np.ndarray  # (n_orders, n_pixels) image − scale·model


def order_mismatch(image: np.ndarray, model: np.ndarray,
                   keep: np.ndarray | None = None) -> OrderMismatch:
    """``image`` (a real input, n_orders × n_pixels, normalised as the network saw it) against
    ``model`` (the noise-free twin, normalised the same way), each order of the model scaled to
    the image by least squares (as :func:`~photosphere.nn.consistency.grid_consistency`).

    keep: (n_orders, n_pixels) bool, the pixels compared (e.g. not those a real spectrum did
    not cover); the residual is NaN elsewhere. An order without kept pixels gives NaN."""
    from ..ops.noise import estimate_snr

    x = np.asarray(image, dtype=float)
    m = np.asarray(model, dtype=float)
    if x.shape != m.shape or x.ndim != 2:
        raise InvalidSpectrumError(f"image {x.shape} and model {m.shape} must share one "
                                   "(n_orders, n_pixels) shape")
    k = np.ones(x.shape, bool) if keep is None else np.asarray(keep, dtype=bool)
    if k.shape != x.shape:
        raise InvalidSpectrumError(f"keep has shape {k.shape}, image {x.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sum(k * x * m, axis=-1, keepdims=True) / np.sum(k * m * m, axis=-1,
                                                                   keepdims=True)
    residual = np.where(k, x - scale * m, np.nan)
    rms = np.array([np.sqrt(np.mean(r[kk] ** 2)) if kk.any() else np.nan
                    for r, kk in zip(residual, k, strict=True)])
    snr = np.array([estimate_snr(row[kk]) if kk.sum() >= 5 else np.nan
                    for row, kk in zip(x, k, strict=True)])
    noise = np.where(np.isfinite(snr) & (snr > 0), 1.0 / np.where(snr > 0, snr, 1.0), 0.0)
    mismatch = np.sqrt(np.maximum(rms ** 2 - noise ** 2, 0.0))
    return OrderMismatch(rms, noise, mismatch, residual)


def line_shift(image: np.ndarray, model: np.ndarray, pixel_kms: float,
               max_lag: int = 60) -> float:
    """km/s by which the lines of ``image`` sit redward of those of ``model`` (both
    (n_orders, n_pixels), normalised, on one log-uniform layout of ``pixel_kms`` km/s per pixel):
    the cross-correlation of the line depths 1 − f summed over the orders, within ± ``max_lag``
    pixels, refined by a parabola through its peak. Pass it as ``rv`` to
    :func:`~photosphere.nn.inputs.prepare_image` to put the image in the model's frame."""
    a = 1 - np.asarray(image, dtype=float)
    b = 1 - np.asarray(model, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] <= 2 * max_lag + 2:
        raise InvalidSpectrumError(f"image {a.shape} and model {b.shape} must share one "
                                   f"(n_orders, n_pixels > {2 * max_lag + 2}) shape")
    lags = np.arange(-max_lag, max_lag + 1)
    inner = b[:, max_lag:b.shape[1] - max_lag]
    cc = np.array([np.sum(a[:, max_lag + k:a.shape[1] - max_lag + k] * inner) for k in lags])
    i = int(np.clip(np.argmax(cc), 1, len(lags) - 2))
    den = cc[i - 1] - 2 * cc[i] + cc[i + 1]
    frac = 0.5 * (cc[i - 1] - cc[i + 1]) / den if den != 0 else 0.0
    return float((lags[i] + frac) * pixel_kms)


def residual_peaks(wavelength: np.ndarray, residual: np.ndarray, n: int = 10,
                   separation: float = 0.3) -> list[tuple[float, float]]:
    """The ``n`` largest |residual| pixels (wavelength Å, residual), at least ``separation`` Å
    apart (one per line), largest first; wavelength and residual of one shape."""
    w = np.asarray(wavelength, dtype=float).reshape(-1)
    r = np.asarray(residual, dtype=float).reshape(-1)
    if w.shape != r.shape:
        raise InvalidSpectrumError(f"wavelength {w.shape} and residual {r.shape} differ")
    out: list[tuple[float, float]] = []
    for i in np.argsort(-np.abs(r)):
        if not math.isfinite(r[i]):
            continue
        if all(abs(w[i] - lam) >= separation for lam, _ in out):
            out.append((float(w[i]), float(r[i])))
            if len(out) == n:
                break
    return out
