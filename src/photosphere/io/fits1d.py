"""Generic 1D FITS spectra: an image with a linear or log-linear WCS, or a binary table.

Image spectra: wavelength of pixel i (0-based) is ``x = CRVAL1 + CDELT1 (i + 1 - CRPIX1)``
(``CD1_1`` when ``CDELT1`` is absent), with ``λ = 10**x`` for IRAF log-linear headers
(``DC-FLAG = 1`` or ``DCLOG = 1``) and ``λ = CRVAL1 exp(w / CRVAL1)`` for ``CTYPE1 = 'WAVE-LOG'``
/ ``'AWAV-LOG'`` (WCS Paper III). ``CUNIT1`` gives the unit (Å, nm, µm, m); a file without one is
accepted only if the values are plausible Å. ``CTYPE1`` AWAV* means air, WAVE* vacuum; otherwise
``AIRORVAC``/``VACUUM`` keys or the instrument decide; a file that says nothing is taken as air
(optical) or vacuum (UV, near-IR), recorded as ``meta.extra['medium_assumed']`` with a note in
``medium_source``; ``medium=`` overrides. The instrument and its resolving power (when documented,
see :mod:`photosphere.io._instrument`) go to ``meta.instrument`` and ``meta.extra['resolution']``.
An uncertainty may follow in an extension named ERROR/ERR/SIGMA/UNCERTAINTY (σ), IVAR (1/σ²) or
VARIANCE (σ²).

Table spectra: columns wavelength (``wavelength``/``wave``/``lambda``/``loglam``), ``flux`` and
optionally ``uncertainty``/``error``/``sigma``/``ivar``; units from ``TUNITn``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError, UnitsError
from ..spectrum import Spectrum, SpectrumMeta
from ._common import (
    finite_or_none,
    header_float,
    header_value,
    instrument_medium,
    medium_from_text,
    open_fits,
    resolve_medium,
    to_angstrom,
)
from ._instrument import instrument_extras

_SIGMA_EXTS = ("ERROR", "ERR", "SIGMA", "UNCERTAINTY", "UNC", "NOISE", "STDDEV")
_WAVE_COLS = ("wavelength", "wave", "lambda", "wl", "wavelength_a", "loglam")
_FLUX_COLS = ("flux", "fl", "spectrum", "transmission", "transmittance")
_SIGMA_COLS = ("uncertainty", "error", "err", "sigma", "flux_err", "flux_error", "noise")


def _header_medium(header, medium: str | None, wave: np.ndarray,
                   what: str) -> tuple[str, dict]:
    """(medium, extras): the argument, else CTYPE1, AIRORVAC/WAVEFRAM/VACUUM keys or the
    instrument, else assumed from the wavelengths (see ``_common.assumed_medium``)."""
    recorded = source = None
    for key in ("CTYPE1", "AIRORVAC", "WAVEFRAM"):
        found = medium_from_text(header_value(header, key))
        if found:
            recorded, source = found, f"header {key}"
            break
    vac = header_value(header, "VACUUM")
    if recorded is None and isinstance(vac, bool):
        recorded, source = ("vacuum" if vac else "air"), "header VACUUM"
    if recorded is None:
        instrument = header_value(header, "INSTRUME")
        recorded = instrument_medium(instrument)
        source = f"the {instrument} pipeline's convention" if recorded else None
    return resolve_medium(medium, recorded, wave, what=what, recorded_source=source)


def _wcs_wavelength(header, n: int, what: str, wavelength_unit: str | None) -> np.ndarray:
    crval = header_float(header, "CRVAL1")
    cdelt = header_float(header, "CDELT1")
    if cdelt is None:
        cdelt = header_float(header, "CD1_1")
    if crval is None or cdelt is None:
        raise FileFormatError(f"{what}: no spectral WCS (CRVAL1 and CDELT1/CD1_1 are needed); "
                              "this is not a 1D spectrum with a wavelength axis")
    crpix = header_float(header, "CRPIX1")
    crpix = 1.0 if crpix is None else crpix
    w = cdelt * (np.arange(n, dtype=float) + 1.0 - crpix)
    ctype = str(header_value(header, "CTYPE1", "") or "").upper()
    unit = wavelength_unit or header_value(header, "CUNIT1")
    if ctype.endswith("-LOG"):
        x = crval * np.exp(w / crval)
    elif int(header_value(header, "DC-FLAG", 0) or 0) == 1 or \
            int(header_value(header, "DCLOG", 0) or 0) == 1:
        x = 10.0 ** (crval + w)
    else:
        x = crval + w
    if unit is None and ctype in ("ANGSTROM", "ANGSTROMS"):  # e.g. ESO s1d: CTYPE1='Angstrom'
        unit = "Angstrom"
    return to_angstrom(x, unit, what=what)


def _find_sigma(hdul, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    for hdu in hdul[1:]:
        name = str(hdu.name or "").upper()
        if not hdu.is_image or hdu.data is None:
            continue
        kind = "sigma" if name in _SIGMA_EXTS else "ivar" if name in ("IVAR", "INVVAR") else \
            "var" if name in ("VARIANCE", "VAR") else None
        if kind is None:
            continue
        arr = np.asarray(hdu.data, float)
        if arr.shape != shape:
            raise InvalidSpectrumError(f"{what}: uncertainty extension {name} has shape "
                                       f"{arr.shape} but the flux has {shape}; they must match")
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "ivar":
                return np.where(arr > 0, 1.0 / np.sqrt(np.abs(arr)), np.inf)
            if kind == "var":
                return np.where(arr > 0, np.sqrt(np.abs(arr)), np.inf)
        return arr
    return None


def _column(data, candidates: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in data.names}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def _meta(header, path, extra: dict) -> SpectrumMeta:
    instrument, instrument_extra = instrument_extras(header, path)
    return SpectrumMeta(object_name=header_value(header, "OBJECT"), instrument=instrument,
                        snr=finite_or_none(header_value(header, "SNR")), source=str(path),
                        extra={**instrument_extra, **extra})


def read_fits1d(path: str | os.PathLike, *, medium: str | None = None,
                wavelength_unit: str | None = None, flux_unit: str | None = None) -> Spectrum:
    """Read a generic 1D FITS spectrum (WCS image or binary table; see the module docstring).

    medium: 'air' or 'vacuum' when the file does not say. wavelength_unit: overrides CUNIT1 /
    TUNIT. Non-finite flux or σ values are masked. Returns a :class:`Spectrum` in Å.
    """
    what = f"read_fits1d({path})"
    with open_fits(path) as hdul:
        primary = hdul[0]
        if primary.data is not None and np.ndim(primary.data) >= 1:
            return _read_image(hdul, path, what, medium, wavelength_unit, flux_unit)
        for hdu in hdul[1:]:
            if hdu.is_image and hdu.data is not None and np.ndim(hdu.data) >= 1:
                merged = primary.header.copy()
                merged.update(hdu.header)
                others = [h for h in hdul[1:] if h is not hdu]
                return _read_image([hdu, *others], path, what, medium, wavelength_unit,
                                   flux_unit, header=merged)
            if not hdu.is_image and hdu.data is not None:
                return _read_table(hdu, primary.header, path, what, medium, wavelength_unit,
                                   flux_unit)
    raise FileFormatError(f"{path}: no HDU holds a 1D spectrum (image or table)")


def _read_image(hdul, path, what, medium, wavelength_unit, flux_unit, header=None) -> Spectrum:
    hdu = hdul[0]
    header = hdu.header if header is None else header
    flux = np.asarray(hdu.data, float)
    if flux.ndim == 2 and 1 in flux.shape:
        flux = flux.ravel()
    if flux.ndim != 1:
        raise FileFormatError(f"{what}: the image has shape {flux.shape}; a 1D spectrum is "
                              "needed (echelle data: use read_e2ds or another echelle reader)")
    wave = _wcs_wavelength(header, flux.size, what, wavelength_unit)
    sigma = _find_sigma(hdul, flux.shape, what)
    med, medium_extra = _header_medium(header, medium, wave, what)
    return _build(wave, flux, sigma, med, flux_unit or _flux_unit(header_value(header, "BUNIT")),
                  _meta(header, path, {"product": "fits1d", **medium_extra}), what)


def _read_table(hdu, primary_header, path, what, medium, wavelength_unit, flux_unit) -> Spectrum:
    data = hdu.data
    wcol, fcol = _column(data, _WAVE_COLS), _column(data, _FLUX_COLS)
    if wcol is None or fcol is None:
        raise FileFormatError(f"{what}: the table has columns {list(data.names)}; a spectrum "
                              "table needs a wavelength and a flux column")
    scol = _column(data, _SIGMA_COLS)
    icol = _column(data, ("ivar", "inverse_variance"))
    for col in (wcol, fcol, scol, icol):
        if col is not None and not np.issubdtype(np.asarray(data[col]).dtype, np.number):
            raise FileFormatError(f"{what}: column {col!r} holds {np.asarray(data[col]).dtype} "
                                  "values, not numbers; write it as a float column (TFORM "
                                  "'D' or 'E')")
    units = {data.names[i]: hdu.header.get(f"TUNIT{i + 1}") for i in range(len(data.names))}
    wave = np.asarray(data[wcol], float).ravel()
    if wcol.lower() == "loglam":
        wave = 10.0 ** wave
    wave = to_angstrom(wave, wavelength_unit or units.get(wcol), what=what)
    flux = np.asarray(data[fcol], float).ravel()
    sigma = None
    if scol is not None:
        sigma = np.asarray(data[scol], float).ravel()
    elif icol is not None:
        ivar = np.asarray(data[icol], float).ravel()
        with np.errstate(divide="ignore"):
            sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
    header = primary_header.copy()
    header.update({k: v for k, v in hdu.header.items()
                   if k not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                "GCOUNT", "TFIELDS", "COMMENT", "HISTORY", "")})
    med, medium_extra = _header_medium(header, medium, wave, what)
    extra = {"product": "fits_table", **medium_extra}
    for key in ("BRVCORR", "BERV", "BCV"):
        v = header_float(header, key)
        if v is not None:
            extra[f"header_{key.lower()}"] = v
    return _build(wave, flux, sigma, med, flux_unit or _flux_unit(units.get(fcol)),
                  _meta(header, path, extra), what)


def _flux_unit(unit) -> str:
    if unit is None or not str(unit).strip():
        return "arbitrary"
    return str(unit).strip()


def _build(wave, flux, sigma, medium, flux_unit, meta, what) -> Spectrum:
    if sigma is not None and sigma.shape != flux.shape:
        raise InvalidSpectrumError(f"{what}: uncertainty shape {sigma.shape} != flux shape "
                                   f"{flux.shape}")
    if not np.any(np.isfinite(flux)):
        raise InvalidSpectrumError(f"{what}: every flux value is NaN or inf; the file holds no "
                                   "usable spectrum")
    if np.any(~np.isfinite(wave)):
        raise InvalidSpectrumError(f"{what}: {int(np.sum(~np.isfinite(wave)))} wavelength(s) are "
                                   "NaN/inf; wavelengths must be finite")
    if wave.size > 1 and np.all(np.diff(wave) < 0):
        wave, flux = wave[::-1], flux[::-1]
        sigma = None if sigma is None else sigma[::-1]
    if sigma is not None:
        sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.inf)
    try:
        return Spectrum.from_arrays(wave, flux, sigma, mask_nonfinite=True, medium=medium,
                                    flux_unit=flux_unit, meta=meta)
    except UnitsError:
        raise
    except InvalidSpectrumError as exc:
        raise InvalidSpectrumError(f"{what}: {exc}") from None
