"""Instrumental line-spread function: a Gaussian of FWHM ``c / R`` in velocity.

* :func:`gaussian_broaden`: constant resolving power R on a log-uniform grid (a 1D convolution);
  R may differ per spectrum / per echelle order (a batch of R values).
* :func:`variable_gaussian_broaden`: R(λ) varying along the spectrum, one kernel per pixel.
* :func:`instrumental_broaden` / :func:`broaden_spectrum`: any wavelength grid (through a
  finer log-uniform grid by cubic interpolation when the input is not log-uniform).

On log-uniform grids kernels are integrated against the Keys cubic-convolution interpolant (see
``_kernels``): normalised for any width, second moment kept, exactly the identity for R = inf,
and smooth in R even when the LSF is narrower than a pixel.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum
from ._common import C_KMS, as_float_tensor, require_finite, to_numpy
from ._kernels import (
    convolve,
    fill_masked,
    flatten_batch,
    gauss_legendre,
    hermite_interpolate,
    keys_integrated_kernel,
    pad_edges,
    via_log_grid,
)
from .grid import velocity_step as grid_velocity_step

#: FWHM / σ of a Gaussian
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))
_TRUNCATE = 6.0  # kernel half-width in σ (the missing wings, 2e-9 of the area, are renormalised)


def _check(velocity_step: float, resolution: torch.Tensor) -> None:
    if not (math.isfinite(velocity_step) and velocity_step > 0):
        raise InvalidSpectrumError(
            f"velocity_step={velocity_step} km/s must be positive (use ops.grid.velocity_step)")
    r = resolution.detach()
    if bool(torch.isnan(r).any()) or bool((r <= 0).any()):
        raise InvalidSpectrumError(
            f"resolution R must be > 0 (inf = no broadening), got min {float(r.min())}")


def sigma_pixels(resolution: torch.Tensor, velocity_step: float) -> torch.Tensor:
    """Gaussian σ in pixels for resolving power R on a grid of ``velocity_step`` km/s."""
    return C_KMS / (resolution * FWHM_PER_SIGMA) / velocity_step


def _gaussian_kernels(sigma: torch.Tensor) -> torch.Tensor:
    """Keys-integrated Gaussian kernels (..., 2h+1) for widths ``sigma`` (...,) in pixels.

    Each unit piece is integrated in z = s/σ (truncated at ±6), so narrow and wide Gaussians
    are equally well resolved; σ = 0 gives a unit delta.
    """
    n_pieces = math.ceil(_TRUNCATE * float(sigma.detach().max())) if sigma.numel() else 0
    sig = sigma[..., None]
    sig_div = torch.where(sig > 0, sig, torch.full_like(sig, 1e-30))

    def piece_quadrature(left: torch.Tensor):
        lo = torch.clamp(left / sig_div, -_TRUNCATE, _TRUNCATE)
        hi = torch.clamp((left + 1) / sig_div, -_TRUNCATE, _TRUNCATE)
        z, weights = gauss_legendre(lo, hi)
        return sig[..., None] * z, weights * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    return keys_integrated_kernel(n_pieces, piece_quadrature)


def gaussian_kernel(velocity_step: float, resolution) -> torch.Tensor:
    """Normalised Keys-integrated Gaussian LSF samples for resolving power R.

    resolution: scalar or (B,); returns (2h+1,) or (B, 2h+1), h = ceil(6σ_max) + 2 pixels,
    sample j at offset ``j − h`` pixels; a unit delta for R = inf.
    """
    r = as_float_tensor(resolution, "resolution")
    _check(float(velocity_step), r)
    return _gaussian_kernels(sigma_pixels(r.to(torch.float64), velocity_step)).to(r.dtype)


def gaussian_broaden(flux, resolution, velocity_step: float, method: str = "auto") -> torch.Tensor:
    """Convolve ``flux`` (..., n_pix) on a LOG-UNIFORM grid with a Gaussian of FWHM c/R.

    resolution: R, scalar or broadcastable to ``flux.shape[:-1]`` (e.g. one R per echelle order);
    ``inf`` leaves a spectrum unchanged. velocity_step: km/s per pixel. Returns (..., n_pix)
    torch (float64 for numpy input), differentiable in flux and R.
    """
    f = as_float_tensor(flux, "flux")
    if f.ndim == 0:
        raise InvalidSpectrumError("gaussian_broaden: flux needs a pixel axis (..., n_pix)")
    require_finite(f, "gaussian_broaden: flux", "mask or interpolate bad pixels first")
    r = as_float_tensor(resolution, "resolution", dtype=f.dtype)
    _check(float(velocity_step), r)
    flat, (r_flat,), batch = flatten_batch(f, r)
    sigma = sigma_pixels(r_flat.to(torch.float64), velocity_step)
    kernel = _gaussian_kernels(sigma).to(f.dtype)
    return convolve(flat, kernel, method).reshape(*batch, f.shape[-1])


def variable_gaussian_broaden(flux, resolution, velocity_step: float) -> torch.Tensor:
    """Gaussian LSF whose resolving power varies along a LOG-UNIFORM grid.

    flux: (..., n_pix); resolution: R at each pixel, (n_pix,) or broadcastable to flux. Pixel i
    of the output is the flux weighted by the (Keys-integrated) Gaussian of width c/R_i centred on
    it. Differentiable in flux and R. Kernels are built in chunks of pixels to bound memory.
    """
    f = as_float_tensor(flux, "flux")
    require_finite(f, "variable_gaussian_broaden: flux", "mask or interpolate bad pixels first")
    r = as_float_tensor(resolution, "resolution", dtype=f.dtype)
    _check(float(velocity_step), r)
    try:
        shape = np.broadcast_shapes(f.shape, r.shape)
    except ValueError:
        raise InvalidSpectrumError(
            f"variable_gaussian_broaden: resolution shape {tuple(r.shape)} does not broadcast "
            f"against flux {tuple(f.shape)}; pass one R per pixel") from None
    n = shape[-1]
    flat = f.expand(shape).reshape(-1, n)
    sigma = sigma_pixels(r.expand(shape).reshape(-1, n).to(torch.float64), velocity_step)
    half = math.ceil(_TRUNCATE * float(sigma.detach().max())) + 2
    padded = pad_edges(flat, half)
    chunk = 4096
    pieces = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        kernel = _gaussian_kernels(sigma[:, start:stop]).to(f.dtype)  # (B, c, 2h'+1)
        h = kernel.shape[-1] // 2
        windows = padded[:, start + half - h: stop + half + h].unfold(1, 2 * h + 1, 1)
        pieces.append((windows * kernel).sum(-1))
    return torch.cat(pieces, dim=1).reshape(shape)


def instrumental_broaden(wavelength, flux, resolution):
    """Gaussian LSF at resolving power R on ANY increasing wavelength grid.

    wavelength: (n_pix,) Å; flux: (..., n_pix); resolution: scalar R or R(λ) of shape (n_pix,)
    given at the input pixels (the LSF centred on pixel i has FWHM c/R_i). A log-uniform input
    uses :func:`gaussian_broaden` / :func:`variable_gaussian_broaden` directly; other grids go
    through a log-uniform grid twice as fine as the finest pixel (cubic Hermite interpolation
    in ln λ there and back: an O(h³) error). R = inf everywhere returns the flux unchanged.
    Returns torch for torch flux, numpy otherwise; differentiable in flux and R.
    """
    wave = np.asarray(wavelength, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2 or np.any(np.diff(wave) <= 0):
        raise InvalidSpectrumError(
            f"instrumental_broaden: wavelength must be increasing (n_pix,), got shape {wave.shape}")
    is_torch = isinstance(flux, torch.Tensor)
    f = as_float_tensor(flux, "flux")
    if f.ndim == 0 or f.shape[-1] != wave.size:
        raise InvalidSpectrumError(
            f"instrumental_broaden: flux has shape {tuple(f.shape)}, wavelength {wave.size} px")
    require_finite(f, "instrumental_broaden: flux", "mask or interpolate bad pixels first")
    r = as_float_tensor(resolution, "resolution")
    if r.ndim != 0 and r.shape != (wave.size,):
        raise InvalidSpectrumError(
            f"instrumental_broaden: resolution must be a scalar or shape ({wave.size},), got "
            f"{tuple(r.shape)}")
    _check(1.0, r)
    if bool((r.detach() == float("inf")).all()):
        return flux if is_torch else np.array(flux, dtype=np.float64)
    try:
        step = grid_velocity_step(wave, tolerance=1e-3)
    except InvalidSpectrumError:
        step = None
    flat = f.reshape(-1, wave.size)
    if step is not None:
        out = gaussian_broaden(flat, r, step) if r.ndim == 0 else \
            variable_gaussian_broaden(flat, r, step)
    elif r.ndim == 0:
        out = via_log_grid(wave, flat, lambda x, dv, _w: gaussian_broaden(x, r, dv))
    else:
        lnw = np.log(wave)

        def op(x, dv, log_wave):
            r_log = hermite_interpolate(lnw, r[None, :].to(torch.float64), np.log(log_wave))[0]
            return variable_gaussian_broaden(x, r_log, dv)

        out = via_log_grid(wave, flat, op)
    out = out.reshape(f.shape)
    return out if is_torch else to_numpy(out)


def _resolution_rows(resolution, shape: tuple[int, ...]) -> list:
    r = np.asarray(resolution, dtype=np.float64)
    if r.ndim == 0:
        return [float(r)] * (shape[0] if len(shape) == 2 else 1)
    if len(shape) == 2 and r.shape == (shape[0],):
        return [float(x) for x in r]
    if r.shape == shape:
        return list(r) if len(shape) == 2 else [r]
    raise InvalidSpectrumError(
        f"resolution has shape {r.shape}; for flux of shape {shape} pass a scalar R"
        + (f", one R per order ({shape[0]},) or one per pixel {shape}" if len(shape) == 2
           else f" or one per pixel {shape}"))


def broaden_spectrum(spectrum: Spectrum | EchelleSpectrum,
                     resolution) -> Spectrum | EchelleSpectrum:
    """Copy of ``spectrum`` convolved with the instrumental Gaussian LSF, on the same pixels.

    resolution: R (scalar), R per pixel, or for an echelle spectrum R per order (n_orders,) or per
    pixel (n_orders, n_pixels). Masked pixels are bridged by linear interpolation and stay
    masked; σ is kept (meant for model / noise-free spectra).
    """
    if isinstance(spectrum, EchelleSpectrum):
        rows = _resolution_rows(resolution, spectrum.shape)
        pieces = zip(spectrum.wavelength, spectrum.flux, spectrum.mask, rows, strict=True)
    else:
        rows = _resolution_rows(resolution, spectrum.flux.shape)
        pieces = [(spectrum.wavelength, spectrum.flux, spectrum.mask, rows[0])]
    out = [instrumental_broaden(w, fill_masked(f, m), r) for w, f, m, r in pieces]
    flux = np.stack(out) if isinstance(spectrum, EchelleSpectrum) else out[0]
    return spectrum.replace(flux=flux)
