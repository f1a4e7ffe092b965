"""A cheap analytic stand-in for Turbospectrum, for unit tests of the grid machinery only.

Spectrum = Planck surface flux (π B_λ) × a few Gaussian absorption lines whose depths and widths
vary smoothly with (teff, logg, feh, vmic). It mimics the ATLAS9 hole: no "atmosphere" for
teff > 6600 K with logg < 1.5 (raises OutOfGridError).

Instrumentation for tests (environment variables): PHOTOSPHERE_TEST_CALL_LOG appends one line per
call ("teff logg feh"); PHOTOSPHERE_TEST_SLEEP sleeps that many seconds per call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from photosphere.errors import OutOfGridError

LINES = np.array([5062.3, 5101.1, 5139.5, 5172.7, 5183.6, 5227.2, 5269.5, 5301.9, 5328.0])
H, C, K = 6.62607015e-27, 2.99792458e10, 1.380649e-16


@dataclass(frozen=True)
class AnalyticSpectrum:
    wavelength: np.ndarray
    flux: np.ndarray
    flux_absolute: np.ndarray
    continuum: np.ndarray
    labels: dict
    provenance: dict = field(default_factory=dict)


def planck_surface_flux(wavelength: np.ndarray, teff: float) -> np.ndarray:
    """π B_λ(T) in erg/s/cm²/Å for wavelengths in Å."""
    lam = wavelength * 1e-8
    b = 2 * H * C**2 / lam**5 / np.expm1(H * C / (lam * K * teff))
    return np.pi * b * 1e-8


def line_depths(teff: float, logg: float, feh: float) -> np.ndarray:
    strength = np.exp(-(teff - 4000.0) / 2500.0) * 10 ** (0.4 * feh) * (1 + 0.1 * (5 - logg))
    scale = 0.3 + 0.07 * np.arange(LINES.size)
    return 0.9 * (1 - np.exp(-scale * strength))


def synthesize(teff, logg, feh, alpha=0.0, vmic=1.0, *, wavelength_min, wavelength_max,
               step=0.01, atmosphere="atlas9", workdir=None) -> AnalyticSpectrum:
    log = os.environ.get("PHOTOSPHERE_TEST_CALL_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{teff} {logg} {feh}\n")
    delay = float(os.environ.get("PHOTOSPHERE_TEST_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    if teff > 6600 and logg < 1.5:
        raise OutOfGridError(f"no {atmosphere} model for teff={teff}, logg={logg}")
    wave = np.arange(wavelength_min, wavelength_max + step / 2, step)
    sigma = LINES / 2.998e5 * np.sqrt(vmic**2 + 2.0 * teff / 5000.0 + 0.3 * logg)
    depth = line_depths(teff, logg, feh)
    profile = np.exp(-0.5 * ((wave[:, None] - LINES) / sigma) ** 2)
    flux = np.prod(1 - depth * profile, axis=1)
    continuum = planck_surface_flux(wave, teff)
    return AnalyticSpectrum(wave, flux, flux * continuum, continuum,
                            {"teff": teff, "logg": logg, "feh": feh, "alpha": alpha,
                             "vmic": vmic},
                            {"atmosphere_id": f"analytic-{teff:g}-{logg:g}-{feh:g}",
                             "linelist_sha256": "0" * 64, "code_version": "analytic-test"})


def small_spec(**changes):
    """A 4 × 3 × 2 test grid over 5160-5200 Å with two missing nodes (teff 7000, logg 1)."""
    from photosphere.grids.presets import GridSpec

    kw = dict(name="test-small",
              axes={"teff": (5500.0, 6000.0, 6500.0, 7000.0), "logg": (1.0, 2.0, 3.0),
                    "feh": (-1.0, 0.0)},
              fixed={"alpha": 0.0, "vmic": 1.0}, wavelength_min=5160.0, wavelength_max=5200.0,
              velocity_step=1.0, n_chunks=4, continuum_stride=32)
    kw.update(changes)
    return GridSpec(**kw)


def build_small(path, **changes):
    """Build :func:`small_spec` serially with the analytic synthesizer; returns the path."""
    from photosphere.grids.build import build_grid

    build_grid(small_spec(**changes), path, synthesizer=synthesize, scheduler="synchronous",
               progress=False, command="test")
    return path
