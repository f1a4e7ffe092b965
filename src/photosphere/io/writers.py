"""Writers for our own spectra, in formats our readers (and other tools) read back.

* :func:`write_fits_table`: a :class:`Spectrum` as a FITS binary table (``wavelength`` [Å],
  ``flux``, ``sigma``, ``mask``), frame in ``AIRORVAC``; read back by :func:`io.read`.
* :func:`write_echelle_hdf5`: an :class:`EchelleSpectrum` in the TRES/Starfish HDF5 layout
  (datasets ``wls``, ``fls``, ``sigmas``, plus ``masks`` (True = good) and ``orders``), read back by
  :func:`io.read` (air wavelengths, as that layout assumes).

Masked pixels are written with σ = NaN so any reader treats them as bad. Files are written
atomically: an interrupted write never leaves a partial file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..errors import InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum


def _sigma_for_file(spec: Spectrum | EchelleSpectrum) -> np.ndarray:
    if not spec.has_uncertainty:
        return np.full(spec.flux.shape, np.nan)
    return np.where(spec.mask | ~np.isfinite(spec.sigma), np.nan, spec.sigma)


def write_fits_table(spectrum: Spectrum, path: str | os.PathLike) -> Path:
    """Write a 1D spectrum as a FITS binary table; returns the path."""
    from astropy.io import fits

    if not isinstance(spectrum, Spectrum):
        raise InvalidSpectrumError(f"write_fits_table needs a Spectrum, got "
                                   f"{type(spectrum).__name__}; use write_echelle_hdf5 for "
                                   "echelle spectra")
    cols = [fits.Column("wavelength", "D", unit="Angstrom", array=spectrum.wavelength),
            fits.Column("flux", "D", array=spectrum.flux),
            fits.Column("sigma", "D", array=_sigma_for_file(spectrum)),
            fits.Column("mask", "L", array=spectrum.mask)]
    primary = fits.PrimaryHDU()
    meta = spectrum.meta
    hdr = primary.header
    hdr["AIRORVAC"] = (spectrum.medium, "wavelength frame")
    hdr["BUNIT"] = spectrum.flux_unit
    for key, value in (("OBJECT", meta.object_name), ("INSTRUME", meta.instrument),
                       ("SNR", meta.snr), ("BERV", meta.barycentric_correction)):
        if value is not None:
            hdr[key] = value
    hdul = fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="SPECTRUM")])
    path = Path(path)
    with atomic_path(path, suffix=".fits") as tmp:
        hdul.writeto(tmp, overwrite=True)
    return path


def write_echelle_hdf5(spectrum: EchelleSpectrum, path: str | os.PathLike) -> Path:
    """Write an echelle spectrum in the TRES/Starfish HDF5 layout; returns the path."""
    import h5py

    if not isinstance(spectrum, EchelleSpectrum):
        raise InvalidSpectrumError(f"write_echelle_hdf5 needs an EchelleSpectrum, got "
                                   f"{type(spectrum).__name__}; use write_fits_table for 1D")
    if spectrum.medium != "air":
        raise InvalidSpectrumError("the TRES HDF5 layout holds air wavelengths; convert with "
                                   "photosphere.ops.airvac.vacuum_to_air first")
    path = Path(path)
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f["wls"] = spectrum.wavelength
        f["fls"] = spectrum.flux
        f["sigmas"] = _sigma_for_file(spectrum)
        f["masks"] = ~spectrum.mask
        f["orders"] = spectrum.order_numbers
        meta = spectrum.meta
        for key, value in (("OBJECT", meta.object_name), ("INSTRUME", meta.instrument),
                           ("SNR", meta.snr)):
            if value is not None:
                f.attrs[key] = value
    return path
