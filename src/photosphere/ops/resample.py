"""Flux-conserving resampling (rebinning) with uncertainty and mask propagation.

The input is taken as piecewise constant over its pixels (edges at the midpoints between pixel
centres; the outer edges half a step beyond the first/last centre). Its cumulative integral
``C(λ) = ∫ f dλ`` is then exactly piecewise linear, and each output pixel receives
``(C(e_{k+1}) − C(e_k)) / (e_{k+1} − e_k)``, the mean flux density over the output pixel. Hence
``∫ f dλ`` over any range made of whole output pixels is conserved exactly.

Output pixel k is a weighted sum ``Σ_i w_ki f_i`` with ``w_ki`` = (overlap of input pixel i with
output pixel k) / (width of k). Its variance ``Σ_i w_ki² σ_i²`` is exact for independent input
pixels; the covariance this creates between neighbouring output pixels (they share input pixels)
is not returned: we report the diagonal only, which is the usual approximation (it underestimates
the noise of sums over many output pixels when the output grid is finer than the input).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum
from ._common import as_float_tensor, require_finite


def pixel_edges(wavelength: torch.Tensor) -> torch.Tensor:
    """Pixel edges ``(..., n+1)`` Å from centres ``(..., n)`` Å (midpoints, outer half steps)."""
    mid = 0.5 * (wavelength[..., 1:] + wavelength[..., :-1])
    first = 2 * wavelength[..., :1] - mid[..., :1]
    last = 2 * wavelength[..., -1:] - mid[..., -1:]
    return torch.cat([first, mid, last], dim=-1)


def _prepare(wave_in, values_in, wave_out):
    """Tensors in float64, broadcast to a common flat batch; returns them and the batch shape."""
    wi = as_float_tensor(wave_in, "wave_in")
    vi = as_float_tensor(values_in, "flux_in")
    wo = as_float_tensor(wave_out, "wave_out")
    out_dtype = vi.dtype
    if wi.ndim == 0 or wo.ndim == 0 or vi.ndim == 0:
        raise InvalidSpectrumError("rebin: wave_in, flux_in and wave_out need a pixel axis")
    if wi.shape[-1] != vi.shape[-1]:
        raise InvalidSpectrumError(
            f"rebin: wave_in has {wi.shape[-1]} pixels but flux_in has {vi.shape[-1]}; "
            "pass one wavelength per flux value")
    if wi.shape[-1] < 2 or wo.shape[-1] < 1:
        raise InvalidSpectrumError("rebin: need >= 2 input pixels and >= 1 output pixel")
    require_finite(wi, "rebin: wave_in", "wavelengths must be finite")
    require_finite(wo, "rebin: wave_out", "wavelengths must be finite")
    if bool((torch.diff(wi.detach(), dim=-1) <= 0).any()):
        raise InvalidSpectrumError("rebin: wave_in must be strictly increasing along the last axis")
    if wo.shape[-1] > 1 and bool((torch.diff(wo.detach(), dim=-1) <= 0).any()):
        raise InvalidSpectrumError("rebin: wave_out must be strictly increasing along the last "
                                   "axis")
    if wo.shape[-1] == 1:
        raise InvalidSpectrumError("rebin: wave_out needs >= 2 pixels to define pixel edges")
    try:
        batch = np.broadcast_shapes(wi.shape[:-1], vi.shape[:-1], wo.shape[:-1])
    except ValueError:
        raise InvalidSpectrumError(
            f"rebin: batch shapes do not broadcast: wave_in {tuple(wi.shape)}, flux_in "
            f"{tuple(vi.shape)}, wave_out {tuple(wo.shape)}") from None
    n_b = int(np.prod(batch)) if batch else 1

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float64).expand(*batch, t.shape[-1]).reshape(n_b, t.shape[-1])

    return flat(wi), flat(vi), flat(wo), batch, out_dtype


def _locate(edges_in: torch.Tensor, edges_out: torch.Tensor):
    """Clamped output edges and, per output pixel, the first/last input pixel it overlaps."""
    lo, hi = edges_in[:, :1], edges_in[:, -1:]
    e = torch.minimum(torch.maximum(edges_out, lo), hi)
    n_in = edges_in.shape[1] - 1
    e_det = e.detach().contiguous()
    ed = edges_in.detach().contiguous()
    left = (torch.searchsorted(ed, e_det[:, :-1].contiguous(), right=True) - 1).clamp(0, n_in - 1)
    right = (torch.searchsorted(ed, e_det[:, 1:].contiguous(), right=False) - 1).clamp(0, n_in - 1)
    right = torch.maximum(right, left)
    return e, left, right


def _cumulative_at(edges_in, density, e):
    """``∫ density dλ`` from the first input edge up to each clamped edge ``e``."""
    widths = torch.diff(edges_in, dim=-1)
    cum = torch.cat([torch.zeros_like(density[:, :1]), torch.cumsum(density * widths, -1)], -1)
    n_in = density.shape[1]
    idx = (torch.searchsorted(edges_in.detach().contiguous(), e.detach().contiguous(),
                              right=True) - 1).clamp(0, n_in - 1)
    return torch.gather(cum, 1, idx) + (e - torch.gather(edges_in, 1, idx)) * torch.gather(
        density, 1, idx)


def rebin(wave_in, flux_in, wave_out, fill: float = float("nan")) -> torch.Tensor:
    """Flux-conserving rebinning of ``flux_in`` from ``wave_in`` onto ``wave_out``.

    wave_in: (..., n_in) Å, strictly increasing; flux_in: (..., n_in) flux density;
    wave_out: (..., n_out) Å. Leading dims broadcast. Returns (..., n_out) mean flux density per
    output pixel (torch, float64 for numpy input, else the dtype of ``flux_in``), differentiable in
    ``flux_in``, ``wave_in`` and ``wave_out``. Output pixels partly outside the input cover are
    averaged over the covered part; pixels entirely outside get ``fill``.

    Echelle data: a batch of model spectra ``(B, n_model)`` onto orders ``(n_orders, n_pix)``
    broadcasts as ``rebin(wave_model, flux[:, None, :], wave_orders)`` -> (B, n_orders, n_pix).
    """
    wi, fi, wo, batch, dtype = _prepare(wave_in, flux_in, wave_out)
    edges_in, edges_out = pixel_edges(wi), pixel_edges(wo)
    e, _, _ = _locate(edges_in, edges_out)
    cum = _cumulative_at(edges_in, fi, e)
    covered = torch.diff(e, dim=-1)
    inside = covered > 0
    out = torch.diff(cum, dim=-1) / torch.where(inside, covered, torch.ones_like(covered))
    out = torch.where(inside, out, torch.full_like(out, fill))
    return out.reshape(*batch, -1).to(dtype)


def rebin_with_uncertainty(wave_in, flux_in, sigma_in, mask_in, wave_out):
    """:func:`rebin` plus σ and mask propagation (see the module docstring for the variance).

    sigma_in: (..., n_in) 1σ (inf allowed on masked pixels); mask_in: (..., n_in) bool, True =
    bad. Returns ``(flux, sigma, mask)``, each (..., n_out): an output pixel is masked when it
    touches a masked input pixel or is not entirely covered by the input; masked pixels get
    σ = inf and finite flux.
    """
    wi, fi, wo, batch, dtype = _prepare(wave_in, flux_in, wave_out)
    sig = as_float_tensor(sigma_in, "sigma_in").to(torch.float64)
    msk = mask_in.to(torch.bool) if isinstance(mask_in, torch.Tensor) else torch.tensor(
        np.asarray(mask_in, dtype=bool))
    n_b, n_in = fi.shape
    sig = sig.expand(*batch, n_in).reshape(n_b, n_in)
    msk = msk.expand(*batch, n_in).reshape(n_b, n_in) | ~torch.isfinite(sig) | ~torch.isfinite(fi)
    fi = torch.where(msk, torch.zeros_like(fi), fi)
    var = torch.where(msk, torch.zeros_like(sig), sig**2)

    edges_in, edges_out = pixel_edges(wi), pixel_edges(wo)
    e, left, right = _locate(edges_in, edges_out)
    cum = _cumulative_at(edges_in, fi, e)
    covered = torch.diff(e, dim=-1)
    width = torch.diff(edges_out, dim=-1)
    full = covered >= width * (1 - 1e-9)
    safe = torch.where(covered > 0, covered, torch.ones_like(covered))
    flux = torch.diff(cum, dim=-1) / safe

    widths = torch.diff(edges_in, dim=-1)
    s2 = torch.cat([torch.zeros_like(var[:, :1]), torch.cumsum(var * widths**2, -1)], -1)
    a, b = e[:, :-1], e[:, 1:]
    var_l, var_r = torch.gather(var, 1, left), torch.gather(var, 1, right)
    same = left == right
    part_l = torch.gather(edges_in, 1, left + 1) - a
    part_r = b - torch.gather(edges_in, 1, right)
    middle = torch.gather(s2, 1, right) - torch.gather(s2, 1, (left + 1).clamp(max=n_in))
    middle = torch.where(same, torch.zeros_like(middle), middle)
    summed = torch.where(same, (b - a) ** 2 * var_l, part_l**2 * var_l + middle + part_r**2 * var_r)
    sigma = torch.sqrt(summed.clamp(min=0)) / safe

    n_masked = torch.cat([torch.zeros_like(left[:, :1]), torch.cumsum(msk.long(), -1)], -1)
    touched = torch.gather(n_masked, 1, right + 1) - torch.gather(n_masked, 1, left)
    mask = (touched > 0) | ~full
    flux = torch.where(mask, torch.zeros_like(flux), flux)
    sigma = torch.where(mask, torch.full_like(sigma, float("inf")), sigma)
    shape = (*batch, -1)
    return flux.reshape(shape).to(dtype), sigma.reshape(shape).to(dtype), mask.reshape(shape)


def resample(spectrum: Spectrum | EchelleSpectrum, wave_out) -> Spectrum | EchelleSpectrum:
    """``spectrum`` rebinned (flux-conserving) onto ``wave_out`` Å (same medium as the spectrum).

    Spectrum: wave_out (n_out,). EchelleSpectrum: wave_out (n_orders, n_out), order by order.
    σ is propagated (diagonal, see module docstring) when the spectrum has uncertainties; output
    pixels touching masked input pixels or outside the input range are masked. Metadata is kept.
    """
    wave_out = np.asarray(wave_out, dtype=np.float64)
    if isinstance(spectrum, EchelleSpectrum):
        if wave_out.ndim != 2 or wave_out.shape[0] != spectrum.n_orders:
            raise InvalidSpectrumError(
                f"resample: an echelle spectrum of {spectrum.n_orders} orders needs wave_out of "
                f"shape ({spectrum.n_orders}, n_pixels), got {wave_out.shape}")
    elif wave_out.ndim != 1:
        raise InvalidSpectrumError(
            f"resample: a 1D spectrum needs wave_out of shape (n_pixels,), got {wave_out.shape}")
    sigma = spectrum.sigma if spectrum.has_uncertainty else np.zeros_like(spectrum.flux)
    flux, sig, mask = rebin_with_uncertainty(spectrum.wavelength, spectrum.flux, sigma,
                                             spectrum.mask, wave_out)
    return spectrum.replace(wavelength=wave_out, flux=flux.numpy(),
                            sigma=sig.numpy() if spectrum.has_uncertainty else None,
                            mask=mask.numpy())
