"""Read a spectrum for fitting: chosen orders, a wavelength window, and σ when the file has none."""

from __future__ import annotations

import numpy as np

from ..errors import FitError
from ..ops.noise import with_uncertainty
from .registry import read


def prepare_spectrum(path: str, orders=None, wavelength_range=None, snr: float | None = None):
    """Read ``path`` for fitting: keep ``orders`` (row indices) of an echelle spectrum, mask
    outside ``wavelength_range`` (Å, Å), and give it σ (from ``snr`` when given, else
    :func:`with_uncertainty`)."""
    from ..spectrum import EchelleSpectrum

    spectrum = read(path)
    if orders is not None:
        if not isinstance(spectrum, EchelleSpectrum):
            raise FitError(f"--orders needs an echelle spectrum; {path} is one-dimensional")
        spectrum = spectrum.select_orders(list(orders))
    if wavelength_range is not None:
        spectrum = spectrum.slice(float(wavelength_range[0]), float(wavelength_range[1]))
    if snr is not None:
        if not snr > 0:
            raise FitError(f"snr={snr} must be > 0")
        level = np.median(np.abs(spectrum.flux[~spectrum.mask]))
        spectrum = spectrum.replace(sigma=np.full(spectrum.flux.shape, level / snr))
    return with_uncertainty(spectrum)
