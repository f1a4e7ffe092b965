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

import math

import numpy as np

from ..errors import InvalidSpectrumError

DOYLE_TEFF_RANGE = (5200.0, 6400.0)  # K, where Doyle et al. (2014) calibrated the relation
DOYLE_LOGG_RANGE = (4.0, 4.6)


def radial_tangential_kernel(velocity_step: float, zeta: float, n_mu: int = 400) -> np.ndarray:
    """Radial–tangential macroturbulence profile (A_R = A_T), disk-integrated in flux.

    velocity_step: km/s per pixel of the (log-uniform) grid it will convolve; zeta: ζ_RT km/s.
    Returns ``(2h+1,)`` samples on velocities ``(-h..h) * velocity_step`` out to ±4ζ, summing to
    one; a single 1 (the identity) for ζ below a quarter pixel. ``n_mu``: midpoint-rule points
    of the disk integral over μ ∈ (0, 1).
    """
    if not (math.isfinite(velocity_step) and velocity_step > 0):
        raise InvalidSpectrumError(f"velocity_step={velocity_step} km/s must be positive")
    if not (math.isfinite(zeta) and zeta >= 0):
        raise InvalidSpectrumError(f"macroturbulence ζ={zeta} km/s must be finite and >= 0")
    if zeta < 0.25 * velocity_step:
        return np.ones(1)
    half = max(1, math.ceil(4.0 * zeta / velocity_step))
    v = np.arange(-half, half + 1) * velocity_step
    mu = (np.arange(n_mu) + 0.5) / n_mu
    radial_width = zeta * mu[:, None]
    tangential_width = zeta * np.sqrt(1.0 - mu[:, None] ** 2)
    radial = np.exp(-(v / radial_width) ** 2) / radial_width
    tangential = np.exp(-(v / tangential_width) ** 2) / tangential_width
    profile = np.sum(mu[:, None] * (radial + tangential), axis=0)
    return profile / profile.sum()


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
