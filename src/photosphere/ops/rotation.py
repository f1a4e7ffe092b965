"""Rotational broadening with linear limb darkening (Gray's kernel), in velocity space.

Gray (2005, *The Observation and Analysis of Stellar Photospheres*, 3rd ed., eq. 18.14): for a
rigidly rotating star with linear limb-darkening coefficient ε, the broadening profile is

    G(v) = [2(1−ε)·sqrt(1−x²) + (πε/2)·(1−x²)] / [π·vsini·(1−ε/3)],   x = v / vsini, |x| ≤ 1.

On a log-uniform grid (constant velocity step per pixel) this is a plain 1D convolution. The
kernel is integrated against the Keys cubic-convolution interpolant (see ``_kernels``): it sums
to one for any vsini, keeps the profile's second moment, is smooth in vsini below one pixel
(quadratic in vsini there, as the true broadening is, so the gradient at vsini = 0 is 0) and is
exactly the identity at vsini = 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum
from ._common import as_float_tensor, require_finite, to_numpy
from ._kernels import (
    convolve,
    fill_masked,
    flatten_batch,
    gauss_legendre,
    keys_integrated_kernel,
    via_log_grid,
)
from .grid import velocity_step as grid_velocity_step


def _check(velocity_step: float, vsini: torch.Tensor, epsilon: torch.Tensor) -> None:
    if not (math.isfinite(velocity_step) and velocity_step > 0):
        raise InvalidSpectrumError(
            f"velocity_step={velocity_step} km/s must be positive (use ops.grid.velocity_step)")
    v = vsini.detach()
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise InvalidSpectrumError(
            f"vsini must be finite and >= 0 km/s, got min {float(v.min())}")
    e = epsilon.detach()
    if not bool(((e >= 0) & (e <= 1)).all()):
        raise InvalidSpectrumError(
            f"epsilon (linear limb darkening) must lie in [0, 1], got {e.flatten().tolist()[:4]}")


def _safe_asin_limit(x: torch.Tensor) -> torch.Tensor:
    """asin(clip(x, −1, 1)) with finite gradients (zero where clipped)."""
    inside = x.abs() < 1
    return torch.where(inside, torch.asin(torch.where(inside, x, torch.zeros_like(x))),
                       0.5 * math.pi * torch.sign(x))


def _kernel_batch(a: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Keys-integrated Gray kernels (B, 2h+1) for half-widths ``a = vsini/velocity_step`` (B,).

    Each unit piece [k, k+1] of ∫ G(s) φ(s − j) ds is integrated in θ with s = a·sin θ, where
    G(s) ds = g(sin θ) cos θ dθ is a smooth trigonometric polynomial (no edge singularity).
    """
    n_pieces = math.ceil(float(a.detach().max())) if a.numel() else 0
    a_col = a[:, None]
    a_div = torch.where(a_col > 0, a_col, torch.full_like(a_col, 1e-30))
    eps = epsilon[:, None, None]
    norm = math.pi * (1 - eps / 3)

    def piece_quadrature(left: torch.Tensor):
        lo = _safe_asin_limit(left[None, :] / a_div)
        hi = _safe_asin_limit((left[None, :] + 1) / a_div)
        theta, weights = gauss_legendre(lo, hi)
        cos = torch.cos(theta)
        density = (2 * (1 - eps) * cos**2 + (math.pi * eps / 2) * cos**3) / norm
        return a_col[..., None] * torch.sin(theta), weights * density

    return keys_integrated_kernel(n_pieces, piece_quadrature)


def rotation_kernel(velocity_step: float, vsini, epsilon=0.6) -> torch.Tensor:
    """Normalised, hat-integrated Gray kernel on a grid of step ``velocity_step`` (km/s).

    vsini: km/s, scalar or (B,); epsilon: linear limb-darkening coefficient in [0, 1].
    Returns (2h+1,) or (B, 2h+1) samples summing to 1, h = ceil(max vsini / velocity_step) + 2;
    sample j is the response at offset ``j − h`` pixels. Differentiable in vsini and epsilon.
    """
    vs = as_float_tensor(vsini, "vsini")
    eps = as_float_tensor(epsilon, "epsilon")
    _check(float(velocity_step), vs, eps)
    shape = np.broadcast_shapes(vs.shape, eps.shape)
    a = (vs.expand(shape) / velocity_step).reshape(-1).to(torch.float64)
    kernel = _kernel_batch(a, eps.expand(shape).reshape(-1).to(torch.float64))
    return kernel.reshape(*shape, -1).to(vs.dtype)


def rotational_broaden(flux, vsini, velocity_step: float, epsilon=0.6,
                       method: str = "auto") -> torch.Tensor:
    """Rotationally broaden ``flux`` (..., n_pix) sampled on a LOG-UNIFORM wavelength grid.

    vsini: km/s, broadcastable to ``flux.shape[:-1]``; velocity_step: km/s per pixel
    (:func:`ops.grid.velocity_step`); epsilon: linear limb darkening, scalar or broadcastable.
    Returns (..., n_pix) torch (float64 for numpy input), differentiable in flux, vsini and
    epsilon; exactly ``flux`` where vsini = 0. The kernel half-width adapts to the largest vsini
    in the batch; edges are padded with the edge flux. ``method``: "auto", "direct" or "fft".
    """
    f = as_float_tensor(flux, "flux")
    if f.ndim == 0 or f.shape[-1] < 1:
        raise InvalidSpectrumError("rotational_broaden: flux needs a pixel axis (..., n_pix)")
    require_finite(f, "rotational_broaden: flux", "mask or interpolate bad pixels first")
    vs = as_float_tensor(vsini, "vsini", dtype=f.dtype)
    eps = as_float_tensor(epsilon, "epsilon", dtype=f.dtype)
    _check(float(velocity_step), vs, eps)
    flat, (vs_flat, eps_flat), batch = flatten_batch(f, vs, eps)
    a = vs_flat / velocity_step
    kernel = _kernel_batch(a.to(torch.float64), eps_flat.to(torch.float64)).to(f.dtype)
    out = convolve(flat, kernel, method)
    return out.reshape(*batch, f.shape[-1])


def _broaden_row(wave: np.ndarray, flux: np.ndarray, mask: np.ndarray, vsini: float,
                 epsilon: float) -> np.ndarray:
    filled = torch.tensor(fill_masked(flux, mask))
    try:
        step = grid_velocity_step(wave, tolerance=1e-3)
    except InvalidSpectrumError:
        step = None
    if step is not None:
        return to_numpy(rotational_broaden(filled, vsini, step, epsilon))
    out = via_log_grid(wave, filled[None, :],
                       lambda f, dv, _w: rotational_broaden(f, vsini, dv, epsilon))
    return to_numpy(out[0])


def broaden_spectrum(spectrum: Spectrum | EchelleSpectrum, vsini: float,
                     epsilon: float = 0.6) -> Spectrum | EchelleSpectrum:
    """Rotationally broadened copy of ``spectrum`` on the same pixels (any wavelength grid).

    Log-uniform grids use :func:`rotational_broaden` directly; any other grid goes through a
    log-uniform grid twice as fine as its finest pixel (cubic Hermite interpolation in ln λ
    there and back, ``_kernels.via_log_grid``), which costs an O(h³) interpolation error;
    vsini = 0 returns the spectrum unchanged. Masked pixels are bridged by linear interpolation
    before convolving and stay masked; σ is kept as is (broadening is meant for model or
    noise-free spectra: the correlated noise of a broadened noisy spectrum is not re-estimated).
    Echelle spectra go order by order.
    """
    vsini = float(vsini)
    _check(1.0, torch.tensor(vsini), torch.tensor(float(epsilon)))
    if vsini == 0:
        return spectrum
    if isinstance(spectrum, EchelleSpectrum):
        flux = np.stack([_broaden_row(w, f, m, vsini, epsilon) for w, f, m in
                         zip(spectrum.wavelength, spectrum.flux, spectrum.mask, strict=True)])
    else:
        flux = _broaden_row(spectrum.wavelength, spectrum.flux, spectrum.mask, vsini, epsilon)
    return spectrum.replace(flux=flux)
