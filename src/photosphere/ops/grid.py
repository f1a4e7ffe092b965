"""Log-uniform wavelength grids: a constant velocity step per pixel.

On such a grid a Doppler shift is a translation and rotation / constant-R instrumental broadening
are plain 1D convolutions. The velocity step of a grid is defined as ``c · Δlnλ`` (km/s), the
convention of model grids (Korg, The Payne); it differs from the relativistic velocity of a
Doppler factor ``exp(Δlnλ)`` by ``O(Δlnλ³)``, i.e. < 1e-12 km/s for any spectrograph sampling.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import InvalidSpectrumError
from ._common import C_KMS


def log_uniform_wavelength(wavelength_min: float, wavelength_max: float,
                           velocity_step: float) -> np.ndarray:
    """Wavelengths (Å) from ``wavelength_min`` with a constant step ``velocity_step`` (km/s).

    Returns ``(n,)`` Å, ``λ_k = wavelength_min · exp(k · velocity_step / c)``; the last point is
    the largest one not beyond ``wavelength_max`` (to 1e-9 of a step).
    """
    if not (math.isfinite(wavelength_min) and math.isfinite(wavelength_max)
            and 0 < wavelength_min < wavelength_max):
        raise InvalidSpectrumError(
            f"log_uniform_wavelength: need 0 < wavelength_min < wavelength_max (Å), got "
            f"{wavelength_min}, {wavelength_max}")
    if not (math.isfinite(velocity_step) and velocity_step > 0):
        raise InvalidSpectrumError(
            f"log_uniform_wavelength: velocity_step={velocity_step} km/s must be positive")
    dln = velocity_step / C_KMS
    n = math.floor(math.log(wavelength_max / wavelength_min) / dln + 1e-9) + 1
    if n < 2:
        raise InvalidSpectrumError(
            f"log_uniform_wavelength: velocity_step={velocity_step} km/s is wider than the range "
            f"{wavelength_min}-{wavelength_max} Å; use a smaller step")
    return wavelength_min * np.exp(np.arange(n) * dln)


def velocity_step(wavelength, tolerance: float = 0.05) -> float:
    """Velocity step ``c · Δlnλ`` (km/s) of a log-uniform grid ``wavelength`` (n,) Å.

    The step is the slope of a straight-line fit of ``ln λ`` against pixel index. Raises
    :class:`InvalidSpectrumError` when a pixel sits more than ``tolerance`` of a step from that
    line (float32 grids round to ~0.02 step, hence the default 0.05) or the grid is not increasing.
    """
    wave = np.asarray(wavelength, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2:
        raise InvalidSpectrumError(
            f"velocity_step: need a 1D grid of >= 2 wavelengths, got shape {wave.shape}")
    if np.any(wave <= 0) or not np.all(np.isfinite(wave)):
        raise InvalidSpectrumError("velocity_step: wavelengths must be finite and positive (Å)")
    lnw = np.log(wave)
    if np.any(np.diff(lnw) <= 0):
        raise InvalidSpectrumError("velocity_step: wavelengths must be strictly increasing")
    index = np.arange(wave.size) - 0.5 * (wave.size - 1)
    slope = float(np.sum(index * (lnw - lnw.mean())) / np.sum(index**2))
    deviation = float(np.max(np.abs(lnw - lnw.mean() - slope * index)) / slope)
    if deviation > tolerance:
        raise InvalidSpectrumError(
            f"velocity_step: the grid is not log-uniform (a pixel lies {deviation:.3g} steps off "
            f"a constant-Δlnλ grid, tolerance {tolerance}); resample it onto "
            "ops.grid.log_uniform_wavelength(...) first")
    return slope * C_KMS


def log_uniform_runs(wavelength, tolerance: float = 0.05) -> tuple[float, list[tuple[int, int]]]:
    """Velocity step (km/s) and ``[(start, stop), ...]`` pixel runs of a piecewise log-uniform
    grid: log-uniform windows with one common step, separated by gaps (a jump in ln λ of more
    than 1.5 steps), as the line windows of a training set. A plain log-uniform grid is one run.

    Raises :class:`InvalidSpectrumError` when a run is not log-uniform or the runs' steps differ
    by more than ``tolerance`` of a step.
    """
    wave = np.asarray(wavelength, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2 or np.any(wave <= 0) or not np.all(np.isfinite(wave)):
        raise InvalidSpectrumError("log_uniform_runs: need a 1D grid of >= 2 finite, positive "
                                   f"wavelengths (Å), got shape {wave.shape}")
    dln = np.diff(np.log(wave))
    if np.any(dln <= 0):
        raise InvalidSpectrumError("log_uniform_runs: wavelengths must be strictly increasing")
    typical = float(np.median(dln))
    cuts = np.flatnonzero(dln > 1.5 * typical) + 1
    bounds = [0, *cuts.tolist(), wave.size]
    runs = list(itertools.pairwise(bounds))
    if any(b - a < 2 for a, b in runs):
        raise InvalidSpectrumError("log_uniform_runs: the grid is not log-uniform windows "
                                   "with one velocity step (a run of fewer than 2 pixels "
                                   "between jumps in ln λ); resample it onto one step")
    steps = [velocity_step(wave[a:b], tolerance) for a, b in runs]
    if max(steps) - min(steps) > tolerance * min(steps):
        raise InvalidSpectrumError(
            f"log_uniform_runs: the windows have different velocity steps ({min(steps):.6g}-"
            f"{max(steps):.6g} km/s); resample them onto one step")
    return float(np.mean(steps)), runs
