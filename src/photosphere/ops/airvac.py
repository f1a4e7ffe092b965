"""Air ↔ vacuum wavelength conversion (IAU standard; Morton 2000 / Ciddor 1996 as used by VALD).

Vacuum → air (Morton 2000, ApJS 130, 403, eq. 8, a fit to Ciddor 1996, Appl. Opt. 35, 1566;
the formula VALD uses, https://www.astro.uu.se/valdwiki/Air-to-vacuum%20conversion):

    s = 10⁴ / λ_vac [Å],  n = 1 + 0.0000834254 + 0.02406147 / (130 − s²) + 0.00015998 / (38.9 − s²)
    λ_air = λ_vac / n

Air → vacuum starts from N. Piskunov's inverse fit (same VALD page) and refines it with two
Newton steps on the forward formula, so a round trip is exact to ~1e-15 relative. Following the
IAU convention, wavelengths below 2000 Å are left unchanged (vacuum = air there).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UnitsError

_UV_LIMIT = 2000.0  # Å


def _check(wavelength) -> None:
    vals = wavelength.detach() if isinstance(wavelength, torch.Tensor) else np.asarray(wavelength)
    if bool((~(vals > 0)).any()):
        raise UnitsError("air/vacuum conversion needs positive wavelengths in Å (got values "
                         "<= 0 or NaN); convert nm or μm to Å first")


def _refractive_index_vacuum(wavelength_vacuum):
    """Refractive index of standard air at vacuum wavelength (Å), Morton (2000)."""
    s2 = (1e4 / wavelength_vacuum) ** 2
    return 1 + 0.0000834254 + 0.02406147 / (130 - s2) + 0.00015998 / (38.9 - s2)


def _refractive_index_air(wavelength_air):
    """Piskunov's inverse fit: refractive index at air wavelength (Å)."""
    s2 = (1e4 / wavelength_air) ** 2
    return (1 + 0.00008336624212083 + 0.02408926869968 / (130.1065924522 - s2)
            + 0.0001599740894897 / (38.92568793293 - s2))


def _where(cond, a, b):
    return torch.where(cond, a, b) if isinstance(a, torch.Tensor) else np.where(cond, a, b)


def _prepare(wavelength):
    if isinstance(wavelength, torch.Tensor):
        return wavelength if torch.is_floating_point(wavelength) else wavelength.double(), False
    arr = np.asarray(wavelength, dtype=np.float64)
    return arr, arr.ndim == 0


def vacuum_to_air(wavelength):
    """Air wavelengths (Å) from vacuum wavelengths (Å); numpy/scalar or torch (differentiable)."""
    wave, scalar = _prepare(wavelength)
    _check(wave)
    out = _where(wave > _UV_LIMIT, wave / _refractive_index_vacuum(wave), wave)
    return float(out) if scalar else out


def air_to_vacuum(wavelength):
    """Vacuum wavelengths (Å) from air wavelengths (Å); numpy/scalar or torch (differentiable)."""
    wave, scalar = _prepare(wavelength)
    _check(wave)
    vac = wave * _refractive_index_air(wave)
    for _ in range(2):  # Newton on f(v) = v / n(v) − λ_air, with d f / d v ≈ 1 / n
        n = _refractive_index_vacuum(vac)
        vac = vac - (vac / n - wave) * n
    out = _where(wave > _UV_LIMIT, vac, wave)
    return float(out) if scalar else out
