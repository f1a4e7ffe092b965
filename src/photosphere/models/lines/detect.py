"""Find absorption lines in a normalised spectrum and give each a first guess.

Lines are local minima of the flux whose prominence (depth below the surrounding maxima) exceeds
a threshold (``scipy.signal.find_peaks`` on ``1 − flux``). Each line starts with its centre at the
minimum (refined by a parabola through the three lowest pixels), a Gaussian σ and Lorentzian γ
that share the measured FWHM, and the opacity area that reproduces the observed central depth
for ``flux = exp(−A φ)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks, peak_widths

from ...errors import InvalidSpectrumError, ModelError
from .profiles import FWHM_PER_SIGMA

_MAX_DEPTH = 0.995  # deepest central depth a first guess may take (keeps −ln(1 − d) finite)


@dataclass(frozen=True)
class LineGuess:
    """First guesses for n_lines lines: centre, amplitude (opacity area), sigma, gamma, all Å,
    and the measured central depth; each (n_lines,)."""

    centre: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    gamma: np.ndarray
    depth: np.ndarray

    @property
    def n_lines(self) -> int:
        return int(self.centre.size)


def check_normalised_spectrum(wavelength, flux) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D normalised spectrum: finite, increasing wavelengths, same shapes."""
    wavelength = np.array(wavelength, dtype=float)  # copies: torch needs writable arrays
    flux = np.array(flux, dtype=float)
    if wavelength.ndim != 1 or wavelength.shape != flux.shape:
        raise InvalidSpectrumError(
            f"wavelength {wavelength.shape} and flux {flux.shape} must be 1-D and the same shape")
    if wavelength.size < 5:
        raise InvalidSpectrumError(f"need at least 5 pixels to find lines, got {wavelength.size}")
    bad = ~np.isfinite(flux)
    if bad.any():
        first = int(np.argmax(bad))
        raise InvalidSpectrumError(
            f"{int(bad.sum())} flux value(s) are NaN or inf (first at {wavelength[first]:.3f} Å); "
            "interpolate over them or cut them out before finding lines")
    if not np.all(np.isfinite(wavelength)):
        raise InvalidSpectrumError("wavelengths must be finite")
    steps = np.diff(wavelength)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0))
        raise InvalidSpectrumError(
            f"wavelengths must be strictly increasing; {int(np.sum(steps <= 0))} step(s) are not "
            f"(first at {wavelength[first]:.3f} Å); sort and de-duplicate the spectrum")
    return wavelength, flux


def find_lines(wavelength, flux, *, prominence: float = 0.005, gamma_fraction: float = 0.2
               ) -> LineGuess:
    """Lines in a continuum-normalised spectrum.

    wavelength: (n_pix,) Å, increasing; flux: (n_pix,) normalised (continuum ≈ 1).
    prominence: minimum line depth below its surrounding maxima (normalised flux units).
    gamma_fraction: share of the measured FWHM given to the Lorentzian (2γ = fraction · FWHM).
    Raises :class:`ModelError` when no line is deeper than ``prominence``.
    """
    wavelength, flux = check_normalised_spectrum(wavelength, flux)
    if not 0 < prominence < 1:
        raise ModelError(f"prominence={prominence} must be between 0 and 1 (normalised flux)")
    absorption = 1.0 - flux
    peaks, props = find_peaks(absorption, prominence=prominence)
    if peaks.size == 0:
        raise ModelError(
            f"no lines deeper than prominence={prominence} in {wavelength[0]:.2f}–"
            f"{wavelength[-1]:.2f} Å (flux range {flux.min():.3f}–{flux.max():.3f}); is the "
            "spectrum normalised? lower --prominence to find weaker lines")
    widths_px = peak_widths(absorption, peaks, rel_height=0.5,
                            prominence_data=(props["prominences"], props["left_bases"],
                                             props["right_bases"]))[0]
    step = np.gradient(wavelength)[peaks]
    fwhm = np.maximum(widths_px, 1.0) * step
    # parabola through the three pixels around each minimum refines the centre
    inner = (peaks > 0) & (peaks < wavelength.size - 1)
    centre = wavelength[peaks].copy()
    p = peaks[inner]
    y0, y1, y2 = absorption[p - 1], absorption[p], absorption[p + 1]
    curvature = y0 - 2 * y1 + y2
    shift = np.where(curvature < 0, 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, -1), 0)
    centre[inner] += np.clip(shift, -0.5, 0.5) * step[inner]
    depth = np.clip(absorption[peaks], 1e-4, _MAX_DEPTH)
    gamma = 0.5 * gamma_fraction * fwhm
    sigma = (1.0 - gamma_fraction) * fwhm / FWHM_PER_SIGMA
    amplitude = -np.log1p(-depth) / _pseudo_voigt_peak(sigma, gamma)
    return LineGuess(centre=centre, amplitude=amplitude, sigma=sigma, gamma=gamma, depth=depth)


def _pseudo_voigt_peak(sigma: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Peak value (Å⁻¹) of the area-normalised shared-FWHM pseudo-Voigt (numpy, for guesses)."""
    import torch

    from .profiles import pseudo_voigt

    s = torch.as_tensor(sigma, dtype=torch.float64)
    g = torch.as_tensor(gamma, dtype=torch.float64)
    return pseudo_voigt(torch.zeros_like(s), s, g).numpy()
