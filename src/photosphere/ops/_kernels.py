"""Convolution machinery shared by rotational and instrumental broadening.

Kernels are built as *hat-integrated* samples: ``K_j = ∫ k(s) Λ(s − j) ds`` with ``s`` the
offset in pixels and ``Λ`` the unit triangle. This is exactly the convolution of the linearly
interpolated spectrum with the continuous kernel ``k``, sampled at the pixel centres. It needs
only a second antiderivative ``H`` of ``k`` (``H'' = k``): ``K_j = H(j+1) − 2H(j) + H(j−1)``.
Such kernels sum to one for any width (Σ_j Λ(s − j) = 1), stay smooth in the width parameter
(usable gradients below one pixel) and become the exact identity (a unit delta) at zero width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ._common import C_KMS

_FFT_MIN_TAPS = 65


def hat_kernel(second_antiderivative: Callable[[torch.Tensor], torch.Tensor],
               half_width: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Kernel samples ``(..., 2·half_width + 1)`` from ``H`` evaluated on pixel nodes.

    ``second_antiderivative(s)`` gets nodes ``s`` of shape (2h+3,) (pixels) and returns
    ``(..., 2h+3)``.
    """
    nodes = torch.arange(-half_width - 1, half_width + 2, dtype=dtype)
    h = second_antiderivative(nodes)
    return h[..., 2:] - 2 * h[..., 1:-1] + h[..., :-2]


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
        batch = torch.broadcast_shapes(flux.shape[:-1], *(p.shape for p in params))
    except RuntimeError:
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


def broaden_any_grid(wavelength: np.ndarray, flux: torch.Tensor,
                     convolve_log: Callable[[torch.Tensor, float, np.ndarray], torch.Tensor],
                     oversample: int = 2) -> torch.Tensor:
    """Apply a log-grid operator to ``flux`` (..., n) sampled on any increasing ``wavelength``.

    If ``wavelength`` is log-uniform the operator runs on it directly. Otherwise the flux is
    rebinned (flux-conserving) onto a log-uniform grid whose step is the finest input step /
    ``oversample``, convolved there and rebinned back. ``convolve_log(flux, velocity_step,
    log_wavelength)`` does the work.
    """
    from .grid import log_uniform_wavelength, velocity_step
    from .resample import pixel_edges, rebin

    try:
        step = velocity_step(wavelength, tolerance=1e-3)
    except InvalidSpectrumError:
        step = None
    if step is not None:
        return convolve_log(flux, step, wavelength)
    wave_t = torch.tensor(wavelength, dtype=torch.float64)
    edges = pixel_edges(wave_t).numpy()
    dv = float(np.min(np.diff(np.log(wavelength)))) * C_KMS / oversample
    log_wave = log_uniform_wavelength(edges[0], edges[-1], dv)
    on_log = rebin(wave_t, flux, log_wave)
    done = convolve_log(on_log, dv, log_wave)
    return rebin(log_wave, done, wave_t).to(flux.dtype)
