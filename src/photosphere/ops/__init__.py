"""Observation-chain operators: pure functions, batched over leading dims, differentiable in
PyTorch where fitting needs it (flux, rv, vsini, R).

One module per operator: ``grid`` (log-uniform grids), ``doppler``, ``rotation``, ``lsf``,
``resample``, ``airvac``, ``continuum``, ``noise``, ``echelle``, ``bitmask``. Wavelengths in Å,
velocities in km/s. ``rotation.broaden_spectrum`` and ``lsf.broaden_spectrum`` (the Spectrum
wrappers) are reached through their modules, as is ``resample.resample`` (``ops.resample`` is
the module).
"""

from .airvac import air_to_vacuum, vacuum_to_air
from .bitmask import APOGEE_PIXMASK_BAD_BITS, APOGEE_PIXMASK_BITS, apply_bitmask, bitmask_to_mask
from .continuum import (
    APOGEE_CHIPS,
    fit_pseudo_continuum,
    fit_upper_envelope,
    normalize_pseudo_continuum,
    normalize_upper_envelope,
)
from .doppler import apply_barycentric_correction, doppler_factor, doppler_shift, shift_wavelength
from .echelle import HARPSN_5050_5350, OrderLayout, format_echelle, random_slant
from .grid import log_uniform_wavelength, velocity_step
from .lsf import gaussian_broaden, gaussian_kernel, instrumental_broaden, variable_gaussian_broaden
from .noise import add_noise, estimate_snr
from .resample import rebin, rebin_with_uncertainty
from .rotation import rotation_kernel, rotational_broaden

__all__ = [
    "APOGEE_CHIPS",
    "APOGEE_PIXMASK_BAD_BITS",
    "APOGEE_PIXMASK_BITS",
    "HARPSN_5050_5350",
    "OrderLayout",
    "add_noise",
    "air_to_vacuum",
    "airvac",
    "apply_barycentric_correction",
    "apply_bitmask",
    "bitmask",
    "bitmask_to_mask",
    "continuum",
    "doppler",
    "doppler_factor",
    "doppler_shift",
    "echelle",
    "estimate_snr",
    "fit_pseudo_continuum",
    "fit_upper_envelope",
    "format_echelle",
    "gaussian_broaden",
    "gaussian_kernel",
    "grid",
    "instrumental_broaden",
    "log_uniform_wavelength",
    "lsf",
    "noise",
    "normalize_pseudo_continuum",
    "normalize_upper_envelope",
    "random_slant",
    "rebin",
    "rebin_with_uncertainty",
    "resample",
    "rotation",
    "rotation_kernel",
    "rotational_broaden",
    "shift_wavelength",
    "vacuum_to_air",
    "variable_gaussian_broaden",
    "velocity_step",
]
