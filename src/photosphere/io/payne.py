"""The Payne's APOGEE ``.npz`` products (Ting et al. 2019 binspec era).

Spectra are continuum-normalised on the 7214-pixel ASPCAP grid (vacuum Å) stored in the
companion ``apogee_wavelength.npz`` (key ``wavelength``); the readers look for it beside the
spectrum file. Errors above 1 (the pipeline writes large values) mark bad pixels -> masked.
The other ``.npz`` files (emulator weights, wavelength grids, pixel masks) are auxiliary:
:func:`read_payne_auxiliary` returns their arrays.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError, MissingFileError
from ..spectrum import EchelleSpectrum, Spectrum, SpectrumMeta
from ._common import check_path

WAVELENGTH_FILE = "apogee_wavelength.npz"
#: Pixels with a normalised-flux error above this are bad (The Payne convention).
BAD_ERROR = 1.0

_APOGEE_ID = re.compile(r"2M\d{8}[+-]\d{7}")


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles), with typed errors for bad files."""
    p = check_path(path)
    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise FileFormatError(f"{p} is not a readable .npz archive ({exc}); it may be truncated: "
                              "fetch it again") from None


def payne_wavelength(spectrum_path: str | os.PathLike,
                     wavelength_path: str | os.PathLike | None = None) -> np.ndarray:
    """The (7214,) vacuum-Å ASPCAP grid from ``wavelength_path`` or the companion file beside
    ``spectrum_path``."""
    if wavelength_path is None:
        wavelength_path = Path(spectrum_path).parent / WAVELENGTH_FILE
        if not Path(wavelength_path).exists():
            raise MissingFileError(
                f"{spectrum_path} holds flux only; its wavelength grid {WAVELENGTH_FILE} was "
                f"not found beside it in {Path(spectrum_path).parent}; put it there or pass "
                "wavelength_path=...")
    arrays = load_npz(wavelength_path)
    if "wavelength" not in arrays:
        raise FileFormatError(f"{wavelength_path} has no 'wavelength' array (keys "
                              f"{sorted(arrays)}); pass the Payne {WAVELENGTH_FILE}")
    return np.asarray(arrays["wavelength"], float)


def _object_name(path: str | os.PathLike) -> str | None:
    m = _APOGEE_ID.search(Path(path).name)
    return m.group(0) if m else None


def _check_length(path, flux: np.ndarray, wave: np.ndarray) -> None:
    if flux.shape[-1] != wave.shape[0]:
        raise InvalidSpectrumError(f"{path}: {flux.shape[-1]} flux pixels but the wavelength "
                                   f"grid has {wave.shape[0]}; pass the matching grid file")


def read_payne_spectrum(path: str | os.PathLike, wavelength_path: str | os.PathLike | None = None,
                        *, bad_error: float = BAD_ERROR) -> Spectrum:
    """A combined APOGEE spectrum (``spectrum``, ``spec_err``) as a normalised vacuum
    :class:`Spectrum` of 7214 px; pixels with error > ``bad_error`` are masked."""
    arrays = load_npz(path)
    if "spectrum" not in arrays or "spec_err" not in arrays:
        raise FileFormatError(f"{path}: expected arrays 'spectrum' and 'spec_err', found "
                              f"{sorted(arrays)}")
    wave = payne_wavelength(path, wavelength_path)
    flux, err = np.asarray(arrays["spectrum"], float), np.asarray(arrays["spec_err"], float)
    _check_length(path, flux, wave)
    bad = ~np.isfinite(flux) | ~np.isfinite(err) | (err > bad_error) | (err <= 0)
    return Spectrum.from_arrays(
        wave, flux, np.where(bad, np.inf, err), mask=bad, mask_nonfinite=True, medium="vacuum",
        flux_unit="normalized",
        meta=SpectrumMeta(object_name=_object_name(path), instrument="APOGEE", source=str(path),
                          extra={"product": "Payne combined spectrum"}))


def read_payne_visits(path: str | os.PathLike, visit: int | None = None,
                      wavelength_path: str | os.PathLike | None = None, *,
                      bad_error: float = BAD_ERROR) -> Spectrum | EchelleSpectrum:
    """APOGEE visit spectra (``spectra``, ``spec_errs``, ``snrs``, ``vhelios``, ``hjds``).

    visit=None: all visits as an (n_visits, 7214) :class:`EchelleSpectrum` stack (rows are
    visits, ``meta.extra['row_kind'] == 'visit'``); visit=k: that visit as a :class:`Spectrum`.
    """
    arrays = load_npz(path)
    if "spectra" not in arrays or "spec_errs" not in arrays:
        raise FileFormatError(f"{path}: expected arrays 'spectra' and 'spec_errs', found "
                              f"{sorted(arrays)}")
    wave = payne_wavelength(path, wavelength_path)
    flux = np.atleast_2d(np.asarray(arrays["spectra"], float))
    err = np.atleast_2d(np.asarray(arrays["spec_errs"], float))
    _check_length(path, flux, wave)
    n = flux.shape[0]
    snrs = np.asarray(arrays.get("snrs", np.full(n, np.nan)), float)
    extra = {"product": "Payne visit spectra", "vhelio": arrays.get("vhelios"),
             "hjd": arrays.get("hjds"), "snr_per_visit": snrs}
    bad = ~np.isfinite(flux) | ~np.isfinite(err) | (err > bad_error) | (err <= 0)
    sigma = np.where(bad, np.inf, err)
    meta = SpectrumMeta(object_name=_object_name(path), instrument="APOGEE", source=str(path),
                        snr=float(np.nanmedian(snrs)) if np.isfinite(snrs).any() else None,
                        extra=extra)
    if visit is None:
        return EchelleSpectrum.from_arrays(
            np.broadcast_to(wave, flux.shape), flux, sigma, mask=bad, mask_nonfinite=True,
            medium="vacuum", flux_unit="normalized",
            meta=meta.replace(extra={**extra, "row_kind": "visit"}), order_numbers=np.arange(n))
    if not isinstance(visit, int | np.integer) or not 0 <= visit < n:
        raise InvalidSpectrumError(f"read_payne_visits: visit={visit!r} but {path} holds {n} "
                                   f"visits; pass an index 0..{n - 1} or None for all")
    return Spectrum.from_arrays(
        wave, flux[visit], sigma[visit], mask=bad[visit], mask_nonfinite=True, medium="vacuum",
        flux_unit="normalized",
        meta=meta.replace(snr=float(snrs[visit]) if np.isfinite(snrs[visit]) else None,
                          extra={**extra, "visit": int(visit)}))


def read_payne_auxiliary(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a Payne auxiliary ``.npz`` (emulator weights, grids, pixel masks)."""
    return load_npz(path)
