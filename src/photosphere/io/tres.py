"""TRES-style echelle spectra in HDF5 (the Starfish layout): datasets ``wls``, ``fls``,
``sigmas`` (n_orders, n_pixels), optional ``masks`` (1/True = good pixel), attribute ``BCV``
(barycentric correction, km/s). TRES wavelengths are air Å in the observed frame.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError
from ..spectrum import EchelleSpectrum, SpectrumMeta
from ._common import check_path, finite_or_none


def read_tres_hdf5(path: str | os.PathLike, *, medium: str = "air",
                   instrument: str | None = None) -> EchelleSpectrum:
    """Read ``wls``/``fls``/``sigmas`` into an (n_orders, n_pixels) :class:`EchelleSpectrum`.

    instrument: defaults to the file's ``INSTRUME`` attribute, else "TRES". Echelle order
    numbers come from an ``orders`` dataset when present (our writer saves one), else 0..n-1.
    Orders are sorted blue to red and each is made to increase in wavelength. Pixels with
    non-finite flux, σ <= 0 or a ``masks`` value of 0 are masked.
    """
    import h5py

    p = check_path(path)
    try:
        with h5py.File(p, "r") as f:
            missing = [k for k in ("wls", "fls") if k not in f]
            if missing:
                raise FileFormatError(f"{p}: HDF5 file lacks dataset(s) {missing}; a TRES/"
                                      f"Starfish spectrum has wls, fls and sigmas (found "
                                      f"{sorted(f.keys())})")
            wave = np.asarray(f["wls"][()], float)
            flux = np.asarray(f["fls"][()], float)
            sigma = np.asarray(f["sigmas"][()], float) if "sigmas" in f else None
            good = np.asarray(f["masks"][()], bool) if "masks" in f else None
            numbers = np.asarray(f["orders"][()]).ravel() if "orders" in f else None
            attrs = {k: f.attrs[k] for k in f.attrs}
    except OSError as exc:
        raise FileFormatError(f"{p} is not a readable HDF5 file ({exc}); it may be truncated: "
                              "fetch it again") from None
    wave, flux = np.atleast_2d(wave), np.atleast_2d(flux)
    shapes = [a.shape for a in (wave, flux, sigma, good) if a is not None]
    if len(set(map(tuple, shapes))) != 1:
        raise InvalidSpectrumError(f"{p}: wls/fls/sigmas/masks shapes differ {shapes}; each must "
                                   "be (n_orders, n_pixels)")
    if np.any(~np.isfinite(wave)):
        raise InvalidSpectrumError(f"{p}: wls holds NaN/inf wavelengths; the file is damaged")
    if numbers is not None and numbers.shape != (wave.shape[0],):
        raise InvalidSpectrumError(f"{p}: the orders dataset has {numbers.size} entries for "
                                   f"{wave.shape[0]} orders; the file is damaged")
    flip = np.diff(wave, axis=1).mean(axis=1) < 0
    arrays = [a for a in (wave, flux, sigma, good) if a is not None]
    for a in arrays:
        a[flip] = a[flip, ::-1]
    order = np.argsort(wave[:, 0])
    wave, flux = wave[order], flux[order]
    sigma = None if sigma is None else sigma[order]
    bad = ~np.isfinite(flux)
    if good is not None:
        bad |= ~good[order]
    if sigma is not None:
        bad |= ~np.isfinite(sigma) | (sigma <= 0)
        sigma = np.where(bad, np.inf, sigma)
    bcv = finite_or_none(attrs.get("BCV"))
    instrument = instrument or _text(attrs.get("INSTRUME")) or "TRES"
    meta = SpectrumMeta(object_name=_text(attrs.get("OBJECT")), instrument=instrument,
                        barycentric_correction=bcv, source=str(p),
                        extra={"product": "TRES HDF5 (Starfish layout)"})
    return EchelleSpectrum.from_arrays(wave, flux, sigma, mask=bad, mask_nonfinite=True,
                                       medium=medium, flux_unit="arbitrary", meta=meta,
                                       order_numbers=np.arange(wave.shape[0]) if numbers is None
                                       else numbers[order].astype(int))


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
