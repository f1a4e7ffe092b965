"""Doppler shifts (special-relativistic) and the barycentric correction.

Sign convention: positive ``rv`` (km/s) is a receding source, so wavelengths grow:
``λ_obs = λ_rest · sqrt((1 + β) / (1 − β))``, ``β = rv / c``. Shifting by ``rv`` and then by
``−rv`` returns the input exactly (the factors are reciprocal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum
from ._common import C_KMS


def _check_beta(beta: Any) -> None:
    vals = beta.detach().cpu().numpy() if isinstance(beta, torch.Tensor) else np.asarray(beta)
    if not np.all(np.isfinite(vals)) or np.any(np.abs(vals) >= 1):
        raise InvalidSpectrumError(
            f"rv must be finite with |rv| < c = {C_KMS} km/s; got values up to "
            f"{float(np.nanmax(np.abs(vals)) * C_KMS)} km/s (rv is in km/s, not m/s)")


def doppler_factor(rv):
    """Relativistic Doppler factor ``sqrt((1+β)/(1−β))``, β = rv/c; rv in km/s.

    Accepts a python/numpy scalar or array (returns numpy / float) or a torch tensor
    (returns a tensor, differentiable in ``rv``).
    """
    if isinstance(rv, torch.Tensor):
        beta = rv / C_KMS
        _check_beta(beta)
        return torch.sqrt((1 + beta) / (1 - beta))
    beta = np.asarray(rv, dtype=np.float64) / C_KMS
    _check_beta(beta)
    out = np.sqrt((1 + beta) / (1 - beta))
    return float(out) if out.ndim == 0 else out


def shift_wavelength(wavelength, rv):
    """Wavelengths (Å) seen from a source moving at ``rv`` (km/s): ``wavelength · D(rv)``.

    wavelength: (..., n_pix) Å. rv: scalar, or an array/tensor of per-spectrum velocities of
    shape broadcastable to ``wavelength.shape[:-1]`` (a trailing pixel axis is added for it).
    Torch in, torch out (differentiable in both); numpy otherwise.
    """
    if isinstance(rv, torch.Tensor) or isinstance(wavelength, torch.Tensor):
        wave = wavelength if isinstance(wavelength, torch.Tensor) else torch.tensor(
            np.asarray(wavelength, dtype=np.float64))
        # 1 + v/c needs float64: float32 would quantise velocities to ~0.02 km/s
        rv_t = rv if isinstance(rv, torch.Tensor) else torch.tensor(np.asarray(rv, np.float64))
        factor = doppler_factor(rv_t.to(torch.promote_types(rv_t.dtype, wave.dtype)))
        return wave * (factor.unsqueeze(-1) if factor.ndim > 0 else factor)
    factor = doppler_factor(rv)
    factor = np.asarray(factor)
    wave = np.asarray(wavelength, dtype=np.float64)
    return wave * (factor[..., None] if factor.ndim > 0 else factor)


def doppler_shift(spectrum: Spectrum | EchelleSpectrum, rv: float) -> Spectrum | EchelleSpectrum:
    """A copy of ``spectrum`` with wavelengths multiplied by ``D(rv)`` (rv in km/s).

    To bring an observed spectrum of a star with radial velocity ``rv`` to its rest frame, pass
    ``-rv``. Flux, σ, mask and metadata are unchanged (a pure relabelling of the pixels).
    """
    rv = float(rv)
    factor = doppler_factor(rv)
    return spectrum.replace(wavelength=spectrum.wavelength * factor)


def apply_barycentric_correction(spectrum: Spectrum | EchelleSpectrum,
                                 berv: float | None = None) -> Spectrum | EchelleSpectrum:
    """Move ``spectrum`` to the barycentric frame: wavelengths · ``D(berv)``.

    ``berv`` (km/s) is the velocity to *add* to observed velocities (HARPS ``DRS BERV``
    convention, :attr:`SpectrumMeta.barycentric_correction`); taken from ``spectrum.meta`` when
    None. The result records ``barycentric_correction=0.0`` and the applied value in
    ``meta.extra["barycentric_correction_applied"]``, so applying it twice is a no-op.
    """
    if berv is None:
        berv = spectrum.meta.barycentric_correction
        if berv is None:
            raise InvalidSpectrumError(
                "apply_barycentric_correction: spectrum.meta.barycentric_correction is unknown; "
                "pass berv=... (km/s) explicitly")
    berv = float(berv)
    shifted = doppler_shift(spectrum, berv)
    applied = float(spectrum.meta.extra.get("barycentric_correction_applied", 0.0)) + berv
    meta = spectrum.meta.replace(barycentric_correction=0.0,
                                 extra={**spectrum.meta.extra,
                                        "barycentric_correction_applied": applied})
    return shifted.replace(meta=meta)
