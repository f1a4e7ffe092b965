"""Convolution machinery shared by rotational and instrumental broadening.

On a uniform (log-λ) grid, kernels are sampled as ``K_j = ∫ k(s) φ(s − j) ds`` with ``s`` the
offset in pixels and φ the Keys (1981) cubic-convolution interpolation kernel: the exact
convolution of the cubic-convolution interpolant of the spectrum with the continuous kernel
``k``, sampled at the pixel centres. Because φ is a partition of unity that reproduces
quadratics, such kernels sum to one for any width, keep the kernel's second moment (no
interpolation smoothing: the error is O(h³), where a linear interpolant would add a bias
∝ width × h × f''), vary smoothly with the width even below one pixel, and are exactly the
identity (a unit delta) at zero width. The integrals are done per pixel piece by Gauss-Legendre
quadrature after a substitution that removes the kernel's edge singularity (rotation) or
infinite support (Gaussian), so they are accurate to ~1e-13 and differentiable.

Spectra on other grids go through a log-uniform grid (:func:`via_log_grid`) by local cubic
Hermite interpolation in ln λ (O(h³), linear in the flux, differentiable).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ._common import C_KMS

_FFT_MIN_TAPS = 65


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)


def keys_cubic(tau: torch.Tensor) -> torch.Tensor:
    """Keys (1981) cubic-convolution kernel (a = −1/2): support [−2, 2], φ(0) = 1, φ(±1) = 0."""
    x = tau.abs()
    inner = (1.5 * x - 2.5) * x * x + 1
    outer = ((-0.5 * x + 2.5) * x - 4) * x + 2
    return torch.where(x <= 1, inner, torch.where(x < 2, outer, torch.zeros_like(x)))


def keys_integrated_kernel(n_pieces: int, piece_quadrature) -> torch.Tensor:
    """``K_j = ∫ k(s) φ(s − j) ds`` on taps j = −(n_pieces+2) .. n_pieces+2, normalised.

    ``piece_quadrature(k)`` gets the left ends k = −n_pieces−1 .. n_pieces of the unit pieces
    [k, k+1] (float64, (P,)) and returns ``(s, w)`` of shape (..., P, n): quadrature positions
    (pixels, inside the piece) and weights (including the kernel density) for ∫_k^{k+1} k(s) ds.
    Returns (..., 2·n_pieces + 5).
    """
    left = torch.arange(-n_pieces - 1, n_pieces + 1, dtype=torch.float64)
    s, w = piece_quadrature(left)
    local = s - left[:, None]
    n_p = left.numel()
    kernel = torch.zeros((*s.shape[:-2], n_p + 3), dtype=s.dtype)
    for m in (-2, -1, 0, 1):  # piece k feeds tap j = k − m through φ(m + t)
        contrib = (w * keys_cubic(m + local)).sum(-1)
        kernel = kernel + torch.nn.functional.pad(contrib, (1 - m, 2 + m))
    return kernel / kernel.sum(-1, keepdim=True)


def gauss_legendre(lower: torch.Tensor, upper: torch.Tensor):
    """12-point Gauss-Legendre nodes (..., 12) and weights on [lower, upper] (elementwise)."""
    nodes = torch.tensor(_GL_NODES, dtype=lower.dtype)
    weights = torch.tensor(_GL_WEIGHTS, dtype=lower.dtype)
    mid = 0.5 * (upper + lower)[..., None]
    half = 0.5 * (upper - lower)[..., None]
    return mid + half * nodes, half * weights


def pad_edges(flux: torch.Tensor, half_width: int) -> torch.Tensor:
    """Extend (B, n) by ``half_width`` copies of the first/last value on each side."""
    if half_width == 0:
        return flux
    left = flux[:, :1].expand(-1, half_width)
    right = flux[:, -1:].expand(-1, half_width)
    return torch.cat([left, flux, right], dim=1)


def convolve(flux: torch.Tensor, kernel: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Convolve each row of ``flux`` (B, n) with its symmetric ``kernel`` row (B, 2h+1).

    Edges are padded with the edge values (no darkening at the ends). ``method``: "direct"
    (conv1d), "fft", or "auto" (FFT for kernels longer than 64 taps).
    """
    if method not in ("auto", "direct", "fft"):
        raise InvalidSpectrumError(f"method={method!r}; use 'auto', 'direct' or 'fft'")
    n_b, n = flux.shape
    taps = kernel.shape[-1]
    half = taps // 2
    padded = pad_edges(flux, half)
    if method == "direct" or (method == "auto" and taps < _FFT_MIN_TAPS):
        out = torch.nn.functional.conv1d(padded.unsqueeze(0), kernel.flip(-1).unsqueeze(1),
                                         groups=n_b)
        return out.squeeze(0)
    size = padded.shape[1] + taps - 1
    size = 1 << (size - 1).bit_length()
    spec = torch.fft.rfft(padded, n=size) * torch.fft.rfft(kernel, n=size)
    full = torch.fft.irfft(spec, n=size)
    return full[:, 2 * half: 2 * half + n]


def flatten_batch(flux: torch.Tensor, *params: torch.Tensor):
    """Broadcast per-spectrum ``params`` against ``flux.shape[:-1]``; flatten to (B, n) / (B,)."""
    try:
        batch = np.broadcast_shapes(flux.shape[:-1], *(p.shape for p in params))
    except ValueError:
        raise InvalidSpectrumError(
            f"parameter shapes {[tuple(p.shape) for p in params]} do not broadcast against the "
            f"batch shape {tuple(flux.shape[:-1])} of flux (..., n_pixels)") from None
    n_b = math.prod(batch)
    flat_flux = flux.expand(*batch, flux.shape[-1]).reshape(n_b, flux.shape[-1])
    flat_params = [p.expand(batch).reshape(n_b) for p in params]
    return flat_flux, flat_params, batch


def fill_masked(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked pixels replaced by linear interpolation over their good neighbours (1D)."""
    if not mask.any() or mask.all():
        return flux
    idx = np.arange(flux.size)
    out = flux.copy()
    out[mask] = np.interp(idx[mask], idx[~mask], flux[~mask])
    return out


def hermite_interpolate(x_in: np.ndarray, values: torch.Tensor, x_out: np.ndarray) -> torch.Tensor:
    """Local cubic Hermite interpolation of ``values`` (B, n) from ``x_in`` (n,) to ``x_out``.

    Slopes are the 3-point finite-difference derivatives of the (non-uniform) grid, exact for
    quadratics, so the C¹ interpolant has O(h³) error. Linear in ``values`` and differentiable;
    points outside ``x_in`` take the end values.
    """
    x = torch.tensor(x_in, dtype=torch.float64)
    h = torch.diff(x)
    h0, h1 = h[:-1], h[1:]
    f = values
    inner = (-h1 / (h0 * (h0 + h1)) * f[:, :-2] + (h1 - h0) / (h0 * h1) * f[:, 1:-1]
             + h0 / (h1 * (h0 + h1)) * f[:, 2:])
    a0, a1 = h[0], h[1]
    first = (-(2 * a0 + a1) / (a0 * (a0 + a1)) * f[:, 0] + (a0 + a1) / (a0 * a1) * f[:, 1]
             - a0 / (a1 * (a0 + a1)) * f[:, 2])
    b0, b1 = h[-2], h[-1]
    last = (b1 / (b0 * (b0 + b1)) * f[:, -3] - (b0 + b1) / (b0 * b1) * f[:, -2]
            + (2 * b1 + b0) / (b1 * (b0 + b1)) * f[:, -1])
    slopes = torch.cat([first[:, None], inner, last[:, None]], dim=1)
    xo = torch.tensor(x_out, dtype=torch.float64)
    idx = (torch.searchsorted(x, xo) - 1).clamp(0, x.numel() - 2)
    width = h[idx]
    t = ((xo - x[idx]) / width).clamp(0, 1)
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * f[:, idx] + (t3 - 2 * t2 + t) * width * slopes[:, idx]
            + (-2 * t3 + 3 * t2) * f[:, idx + 1] + (t3 - t2) * width * slopes[:, idx + 1])


def via_log_grid(wavelength: np.ndarray, flux: torch.Tensor,
                 convolve_log: Callable[[torch.Tensor, float, np.ndarray], torch.Tensor],
                 oversample: int = 2) -> torch.Tensor:
    """Apply a log-grid operator to ``flux`` (B, n) sampled on any increasing ``wavelength``.

    The flux is interpolated (cubic Hermite in ln λ) onto a log-uniform grid ``oversample``
    times finer than the finest input pixel, ``convolve_log(flux_log, velocity_step,
    log_wavelength)`` is applied there and the result is interpolated back to the input pixels.
    """
    lnw = np.log(wavelength)
    dln = float(np.min(np.diff(lnw))) / oversample
    n_log = math.ceil((lnw[-1] - lnw[0]) / dln - 1e-9) + 1
    ln_log = lnw[0] + dln * np.arange(n_log)
    on_log = hermite_interpolate(lnw, flux, ln_log)
    done = convolve_log(on_log, dln * C_KMS, np.exp(ln_log))
    return hermite_interpolate(ln_log, done, lnw)
