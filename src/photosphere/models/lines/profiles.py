"""Line profiles in PyTorch: the exact Voigt (via the Faddeeva function) and the pseudo-Voigt.

Conventions: ``x`` is the offset from line centre (Å), ``sigma`` the Gaussian standard deviation
(Å), ``gamma`` the Lorentzian half width at half maximum (Å). Both profiles are area-normalised
(units Å⁻¹) and broadcast over their arguments, so ``(n_lines, 1)`` parameters against an
``(n_lines, window)`` offset block evaluate every line on its own window. All functions are
differentiable in ``x``, ``sigma`` and ``gamma``.

* :func:`faddeeva` — w(z) for Im z ≥ 0 by Weideman's (1994, SIAM J. Numer. Anal. 31, 1497)
  rational expansion with N = 32 terms (≈ 1e-13 relative error in the Voigt core, checked against
  ``scipy.special.wofz`` / ``voigt_profile`` in the tests).
* :func:`voigt` — V(x; σ, γ) = Re w((x + iγ) / (σ√2)) / (σ√(2π)), σ and γ in their correct roles.
* :func:`pseudo_voigt` — η L(x; f) + (1 − η) G(x; f) with one shared FWHM f from Thompson, Cox &
  Hastings (1987, J. Appl. Cryst. 20, 79); peak error ≲ 1 % against the exact Voigt.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SQRT_PI = math.sqrt(math.pi)
SQRT_2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_LN2 = math.log(2.0)
_SQRT_LN2_OVER_PI = math.sqrt(math.log(2.0) / math.pi)

_N_TERMS = 32
_TINY_WIDTH = 1e-12  # Å: floor that keeps z finite when sigma -> 0


@lru_cache(maxsize=4)
def _weideman_coefficients(n_terms: int) -> tuple[float, np.ndarray]:
    """Scale L and the polynomial coefficients (highest power first) of Weideman's expansion."""
    m = 2 * n_terms
    k = np.arange(-m + 1, m)
    scale = math.sqrt(n_terms / math.sqrt(2.0))
    theta = k * math.pi / m
    t = scale * np.tan(theta / 2.0)
    f = np.exp(-t * t) * (scale * scale + t * t)
    f = np.concatenate([[0.0], f])
    a = np.real(np.fft.fft(np.fft.fftshift(f))) / (2 * m)
    return scale, np.flipud(a[1:n_terms + 1]).copy()


def faddeeva(z: torch.Tensor, n_terms: int = _N_TERMS) -> torch.Tensor:
    """Faddeeva function w(z) = exp(−z²) erfc(−iz) for complex ``z`` with Im z ≥ 0.

    z: complex tensor of any shape. Returns a complex tensor of the same shape.
    """
    scale, coeffs = _weideman_coefficients(n_terms)
    denom = scale - 1j * z
    ratio = (scale + 1j * z) / denom
    poly = torch.zeros_like(z)
    for c in coeffs:  # Horner, highest power first
        poly = poly * ratio + float(c)
    return 2.0 * poly / (denom * denom) + (1.0 / SQRT_PI) / denom


def voigt(x: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Exact area-normalised Voigt profile (Å⁻¹).

    x: offset from line centre (Å); sigma: Gaussian standard deviation (Å, > 0);
    gamma: Lorentzian HWHM (Å, ≥ 0). Broadcast against each other; real tensors (float64
    recommended). Equals ``scipy.special.voigt_profile(x, sigma, gamma)``.
    """
    sigma = torch.clamp(sigma, min=_TINY_WIDTH)
    scale = 1.0 / (sigma * SQRT_2)
    x, gamma, scale = torch.broadcast_tensors(x, gamma, scale)
    z = torch.complex(x * scale, gamma * scale)
    return faddeeva(z).real / (sigma * SQRT_2PI)


def voigt_fwhm(sigma: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Shared FWHM (Å) of Thompson, Cox & Hastings (1987) for Gaussian σ and Lorentzian HWHM γ."""
    f_g = FWHM_PER_SIGMA * sigma
    f_l = 2.0 * gamma
    f5 = (f_g**5 + 2.69269 * f_g**4 * f_l + 2.42843 * f_g**3 * f_l**2
          + 4.47163 * f_g**2 * f_l**3 + 0.07842 * f_g * f_l**4 + f_l**5)
    return f5 ** 0.2


def pseudo_voigt_coefficients(sigma: torch.Tensor, gamma: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-line constants of the shared-FWHM pseudo-Voigt: (1/h, c_L, c_G) with h = f/2 the
    half width (Å) and V(x) = c_L / (1 + u²) + c_G exp(−ln2 u²), u = x / h (c in Å⁻¹).

    Computing these once per line and only the cheap shape per pixel is what makes the sparse
    evaluation fast.
    """
    sigma = torch.clamp(sigma, min=_TINY_WIDTH)
    fwhm = voigt_fwhm(sigma, gamma)
    ratio = 2.0 * gamma / fwhm
    eta = ratio * (1.36603 + ratio * (-0.47719 + ratio * 0.11116))
    inv_h = 2.0 / fwhm
    return inv_h, eta * inv_h / math.pi, (1.0 - eta) * inv_h * _SQRT_LN2_OVER_PI


def pseudo_voigt_shape(x: torch.Tensor, inv_h: torch.Tensor, c_lorentz: torch.Tensor,
                       c_gauss: torch.Tensor) -> torch.Tensor:
    """Pseudo-Voigt from the per-line constants of :func:`pseudo_voigt_coefficients`."""
    u2 = (x * inv_h) ** 2
    return c_lorentz / (1.0 + u2) + c_gauss * torch.exp(-_LN2 * u2)


def pseudo_voigt(x: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Area-normalised pseudo-Voigt (Å⁻¹) with the shared-FWHM mixing of Thompson et al. (1987).

    Both components share the total FWHM f (not their own widths):
    V ≈ η L(x; f/2) + (1 − η) G(x; f / 2√(2 ln 2)), η = 1.36603 r − 0.47719 r² + 0.11116 r³,
    r = 2γ / f. Same argument conventions as :func:`voigt`.
    """
    return pseudo_voigt_shape(x, *pseudo_voigt_coefficients(sigma, gamma))


PROFILES = {"voigt": voigt, "pseudo_voigt": pseudo_voigt}


def get_profile(name: str):
    """The profile function called ``name`` (``"voigt"`` or ``"pseudo_voigt"``)."""
    from ...errors import ModelError

    try:
        return PROFILES[name]
    except KeyError:
        raise ModelError(f"profile={name!r} is not known; use one of {sorted(PROFILES)}") from None
