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


def irregular_convolve(wavelength: np.ndarray, flux: torch.Tensor,
                       second_antiderivative: Callable[[torch.Tensor], torch.Tensor],
                       half_width_kms: float) -> torch.Tensor:
    """Convolve ``flux`` (B, n) on ANY increasing ``wavelength`` (n,) Å with a velocity kernel.

    Exact convolution of the piecewise-linear interpolant of the flux (in ln λ) with a kernel
    of velocity half-width ``half_width_kms``, evaluated at the pixel centres. Hat j of output
    pixel i has weight ``H[u_j, u_j+1] − H[u_j−1, u_j]`` (divided differences of the kernel's
    second antiderivative ``H`` at the velocity offsets ``u = c·ln(λ/λ_i)``); the weights of a
    pixel sum to one exactly. ``second_antiderivative(u)`` gets u of shape (n, K) km/s (row i =
    offsets from pixel i) and returns (n, K). The grid and flux are extended beyond the ends by
    the edge step and the edge flux.
    """
    n = wavelength.size
    lnw = np.log(wavelength)
    steps = np.diff(lnw)
    half = math.ceil(half_width_kms / (C_KMS * float(steps.min()))) + 1
    pad = np.arange(1, half + 2)
    lnw_pad = np.concatenate([lnw[0] - steps[0] * pad[::-1], lnw, lnw[-1] + steps[-1] * pad])
    lnw_t = torch.tensor(lnw_pad, dtype=torch.float64)
    taps = 2 * half + 3
    u = C_KMS * (lnw_t.unfold(0, taps, 1) - torch.tensor(lnw, dtype=torch.float64)[:, None])
    h = second_antiderivative(u)
    slopes = torch.diff(h, dim=1) / torch.diff(u, dim=1)
    weights = torch.diff(slopes, dim=1).to(flux.dtype)  # (n, 2·half + 1)
    padded = pad_edges(flux, half + 1)
    out = torch.zeros_like(flux)
    for k in range(weights.shape[1]):
        out = out + weights[:, k] * padded[:, 1 + k: 1 + k + n]
    return out
