"""Radial–tangential macroturbulence: the broadening 1D model atmospheres leave out.

A 1D LTE spectrum carries thermal and microturbulent broadening only; real FGK lines are further
broadened by large-scale photospheric motions. The standard description (Gray 2005, *The
Observation and Analysis of Stellar Photospheres*, 3rd ed., ch. 17) is the radial–tangential
profile with equal radial and tangential areas: at disk position μ = cos θ the radial component
is a Gaussian of 1/e half-width ζ μ and the tangential one of ζ sqrt(1 − μ²); integrated over
the disk in flux (weight μ) it is a cusped profile with wider wings than a Gaussian of the same
width. On a log-uniform grid it is a convolution in velocity, like rotation and the LSF.

``doyle_macroturbulence`` is the empirical ζ(Teff, log g) of Doyle et al. (2014, MNRAS 444,
3592), calibrated on asteroseismic dwarfs (Teff 5200–6400 K, log g 4.0–4.6):

    ζ = 3.21 + 2.33e-3 (Teff − 5777) + 2.00e-6 (Teff − 5777)² − 2.00 (log g − 4.44)  km/s.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..errors import InvalidSpectrumError

DOYLE_TEFF_RANGE = (5200.0, 6400.0)  # K, where Doyle et al. (2014) calibrated the relation
DOYLE_LOGG_RANGE = (4.0, 4.6)


@functools.lru_cache(maxsize=4)
def _mu_nodes(n_mu: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes μ on (0, 1) and weights × μ (the flux weighting of the disk)."""
    x, w = np.polynomial.legendre.leggauss(n_mu)
    mu = torch.as_tensor(0.5 * (x + 1.0))
    return mu, torch.as_tensor(0.5 * w) * mu


def radial_tangential_kernel(velocity_step: float, zeta, half_width: int | None = None,
                             n_mu: int = 48) -> torch.Tensor:
    """Radial–tangential macroturbulence profile (A_R = A_T), disk-integrated in flux.

    velocity_step: km/s per pixel of the (log-uniform) grid it will convolve.
    zeta: ζ_RT in km/s, a float or a tensor ``(B,)`` (one kernel per row; differentiable in ζ,
    forward- and reverse-mode).
    half_width: kernel half-width in pixels (default ``ceil(4 max ζ / velocity_step)``, at
    least 1); give it to get kernels of one shape for a range of ζ.
    Returns ``(taps,)`` or ``(B, taps)`` float64 weights on velocities ``(-h..h) *
    velocity_step``, each the profile integrated over its pixel (erf of the Gaussian components,
    Gauss–Legendre over μ with ``n_mu`` nodes) and normalised to sum 1. Smooth in ζ down to
    ζ = 0, where it is the identity (all weight on the centre pixel).
    """
    if not (math.isfinite(velocity_step) and velocity_step > 0):
        raise InvalidSpectrumError(f"velocity_step={velocity_step} km/s must be positive")
    z = torch.as_tensor(zeta, dtype=torch.float64)
    scalar = z.dim() == 0
    z = z.reshape(-1)
    values = z.detach()
    if not bool(torch.all(torch.isfinite(values) & (values >= 0))):
        raise InvalidSpectrumError(f"macroturbulence ζ={zeta} km/s must be finite and >= 0")
    if half_width is None:
        half_width = max(1, math.ceil(4.0 * float(values.max()) / velocity_step))
    edges = (torch.arange(-half_width, half_width + 2, dtype=torch.float64) - 0.5) * velocity_step
    mu, weight = _mu_nodes(n_mu)
    profile = 0.0
    for width in (mu, torch.sqrt(1.0 - mu ** 2)):                               # radial, tangential
        scale = (z[:, None] * width[None, :]).clamp_min(1e-12)                  # (B, n_mu)
        cdf = torch.erf(edges[None, None, :] / scale[..., None])                # (B, n_mu, taps+1)
        mass = 0.5 * (cdf[..., 1:] - cdf[..., :-1])
        profile = profile + torch.einsum("m,bmt->bt", weight, mass)
    kernel = profile / profile.sum(-1, keepdim=True)
    return kernel[0] if scalar else kernel


def doyle_macroturbulence(teff: float, logg: float) -> float:
    """ζ_RT in km/s from Doyle et al. (2014) at ``teff`` (K) and ``logg`` (dex, cgs).

    Outside the calibration box (Teff 5200–6400 K, log g 4.0–4.6) the relation is evaluated at
    the nearest point of the box rather than extrapolated (the quadratic runs away quickly), so
    the value is a dwarf-like estimate there; pass an explicit ζ for giants.
    """
    if not (math.isfinite(teff) and math.isfinite(logg)):
        raise InvalidSpectrumError(f"Teff={teff}, log g={logg} must be finite for a ζ estimate")
    t = float(np.clip(teff, *DOYLE_TEFF_RANGE)) - 5777.0
    g = float(np.clip(logg, *DOYLE_LOGG_RANGE)) - 4.44
    return max(0.0, 3.21 + 2.33e-3 * t + 2.00e-6 * t * t - 2.00 * g)
