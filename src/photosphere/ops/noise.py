"""Noise injection at a target S/N and S/N estimation from the data (DER_SNR).

Injection: Gaussian noise of σ = |reference| / snr per pixel, with reference the flux itself
(default: every pixel has S/N = snr, the convention of the HARPS-N deep-learning study for
normalised spectra) or a given continuum (σ constant across lines, photon-noise-like at the
continuum level). Seeded through a :class:`numpy.random.Generator` or an integer seed.

Estimation: DER_SNR (Stoehr et al. 2008, ASP Conf. Ser. 394, 505): signal = median flux,
noise = 1.482602 / √6 · median |2 f_i − f_{i−2} − f_{i+2}|, which is unbiased for white Gaussian
noise on a spectrum that is smooth over ±2 pixels. As in the reference implementation, pixels
with flux exactly 0 (gaps) are ignored, as are masked and non-finite ones.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FitError, InvalidSpectrumError

_DER_SNR_SCALE = 1.482602 / np.sqrt(6.0)


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise InvalidSpectrumError(
        f"rng={rng!r}: pass None, an integer seed or a numpy.random.Generator")


def _snr_array(snr, shape: tuple[int, ...]) -> np.ndarray:
    s = np.asarray(snr.detach().cpu() if isinstance(snr, torch.Tensor) else snr, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InvalidSpectrumError(f"snr must be finite and > 0, got {s.ravel()[:4].tolist()}")
    if s.ndim > 0 and s.shape != shape:
        s = s[..., None]  # one S/N per spectrum
    try:
        return np.broadcast_to(s, shape)
    except ValueError:
        raise InvalidSpectrumError(
            f"snr of shape {s.shape} fits neither the flux {shape} (per pixel) nor its batch "
            f"{shape[:-1]} (per spectrum)") from None


def add_noise(flux, snr, rng=None, continuum=None):
    """Add Gaussian noise so that each pixel has σ = |reference| / snr.

    flux: (..., n_pix) numpy or torch; snr: scalar, per spectrum (broadcastable to
    ``flux.shape[:-1]``) or per pixel (``flux.shape``); rng: None, seed or Generator; continuum:
    optional reference level (broadcastable to flux) instead of the flux itself.
    Returns ``(noisy_flux, sigma)`` of flux's shape and kind (torch stays torch, and noisy flux
    is differentiable in ``flux``).
    """
    is_torch = isinstance(flux, torch.Tensor)
    shape = tuple(flux.shape) if is_torch else np.shape(flux)
    if len(shape) == 0:
        raise InvalidSpectrumError("add_noise: flux needs a pixel axis (..., n_pix)")
    snr_arr = _snr_array(snr, shape)
    gen = _generator(rng)
    unit = gen.standard_normal(shape)
    if is_torch:
        ref = flux.detach() if continuum is None else torch.as_tensor(
            np.asarray(continuum, dtype=np.float64), dtype=flux.dtype)
        sigma = (ref.abs() / torch.tensor(snr_arr, dtype=flux.dtype)).expand(shape)
        noisy = flux + sigma * torch.as_tensor(unit, dtype=flux.dtype)
        return noisy, sigma
    f = np.asarray(flux, dtype=np.float64)
    ref = f if continuum is None else np.asarray(continuum, dtype=np.float64)
    sigma = np.broadcast_to(np.abs(ref) / snr_arr, shape).copy()
    return f + sigma * unit, sigma


def _der_snr_1d(flux: np.ndarray) -> float:
    good = flux[np.isfinite(flux) & (flux != 0.0)]
    if good.size < 5:
        raise InvalidSpectrumError(
            f"estimate_snr: DER_SNR needs >= 5 good pixels, got {good.size}")
    signal = np.median(good)
    noise = _DER_SNR_SCALE * np.median(np.abs(2.0 * good[2:-2] - good[:-4] - good[4:]))
    return float(signal / noise) if noise > 0 else float("inf")


def estimate_snr(flux, mask=None):
    """Median S/N per pixel from the data alone (DER_SNR, Stoehr et al. 2008).

    flux: (..., n_pix) numpy or torch; mask: optional bool of the same shape (True = bad,
    ignored). Returns a float for one spectrum, an array of shape ``flux.shape[:-1]`` otherwise.
    """
    f = np.asarray(flux.detach().cpu() if isinstance(flux, torch.Tensor) else flux,
                   dtype=np.float64)
    if f.ndim == 0:
        raise InvalidSpectrumError("estimate_snr: flux needs a pixel axis (..., n_pix)")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != f.shape:
            raise InvalidSpectrumError(f"estimate_snr: mask shape {m.shape} != flux {f.shape}")
        f = np.where(m, np.nan, f)
    rows = f.reshape(-1, f.shape[-1])
    out = np.array([_der_snr_1d(row) for row in rows]).reshape(f.shape[:-1])
    return float(out) if out.ndim == 0 else out


def with_uncertainty(spectrum):
    """``spectrum`` unchanged if it has σ, else σ = median flux / S/N per order, the S/N
    estimated from the flux alone (DER_SNR, :func:`estimate_snr`).
    The S/N used is recorded in ``meta.extra["sigma_estimated_snr"]``."""
    from ..spectrum import EchelleSpectrum

    if spectrum.has_uncertainty:
        return spectrum
    flux = np.atleast_2d(spectrum.flux)
    mask = np.atleast_2d(spectrum.mask)
    snr = np.atleast_1d(estimate_snr(flux, mask))
    if not np.all(np.isfinite(snr) & (snr > 0)):
        raise FitError("the spectrum has no uncertainties and its S/N cannot be estimated from "
                       "the flux; pass sigma (or --snr)")
    level = np.array([np.median(f[~m]) if np.any(~m) else 1.0 for f, m in zip(flux, mask,
                                                                               strict=True)])
    sigma = np.abs(level / snr)[:, None] * np.ones_like(flux)
    sigma = sigma if isinstance(spectrum, EchelleSpectrum) else sigma[0]
    meta = spectrum.meta.replace(extra={**spectrum.meta.extra,
                                        "sigma_estimated_snr": snr.tolist()})
    return spectrum.replace(sigma=sigma, meta=meta)
