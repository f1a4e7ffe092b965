"""ESO HARPS and TNG HARPS-N DRS products: e2ds (+ wave, blaze) and s1d.

* ``e2ds``: (n_orders, 4096) extracted flux in ADU (72 orders for HARPS, 69 for HARPS-N). The
  wavelength solution comes from the wave file named in ``HIERARCH <ESO|TNG> DRS CAL TH FILE``
  (searched beside the e2ds, also with ':' written as '-'), or else from the polynomial
  coefficients ``DRS CAL TH COEFF LL*`` in the e2ds header itself. Air wavelengths, observed
  frame; ``DRS BERV`` (km/s) is the barycentric correction. σ is estimated from photon and read
  noise: ``sqrt(max(F, 0) g + W σ_ron²) / g`` with gain g = ``CCD CONAD`` e-/ADU, read noise
  σ_ron = ``CCD SIGDET`` e- and W = ``SPE EXT WINDOW`` pixels summed across the order.
* ``s1d``: merged spectrum rebinned to a linear grid ``CRVAL1 + CDELT1 (i + 1 - CRPIX1)`` Å (air)
  in the **barycentric** frame (the DRS applies BERV), so ``barycentric_correction`` is 0 and the
  header BERV is kept in ``meta.extra['berv_kms']``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError, MissingFileError
from ..spectrum import EchelleSpectrum, Spectrum, SpectrumMeta
from ._common import finite_or_none, header_float, header_value, open_fits
from ._instrument import resolving_power


def _resolution(header) -> dict:
    """``resolution``/``resolution_source`` of a HARPS/HARPS-N frame (mode from the header)."""
    r, source = resolving_power(header, _instrument(header))
    return {"resolution": r, "resolution_source": source} if r else {}


def _prefix(header) -> str:
    """'HIERARCH ESO' for HARPS, 'HIERARCH TNG' for HARPS-N."""
    for p in ("ESO", "TNG"):
        if header_value(header, f"HIERARCH {p} DRS VERSION") is not None or \
                header_value(header, f"HIERARCH {p} DRS BERV") is not None:
            return f"HIERARCH {p}"
    return "HIERARCH ESO"


def _instrument(header) -> str:
    name = str(header_value(header, "INSTRUME", "HARPS") or "HARPS").upper()
    return "HARPS-N" if name in ("HARPN", "HARPS-N", "HARPS_N") else name


def _snr_per_order(header, n_orders: int) -> np.ndarray:
    p = _prefix(header)
    return np.array([header_float(header, f"{p} DRS SPE EXT SN{i}") or np.nan
                     for i in range(n_orders)])


def _order_numbers(header, n_orders: int) -> np.ndarray:
    """Physical echelle orders from ``CAL TH ORDER START/NBLUE/NGAP`` (HARPS has one missing
    order between its two CCDs), else 0..n-1."""
    p = _prefix(header)
    start = header_value(header, f"{p} DRS CAL TH ORDER START")
    if start is None:
        return np.arange(n_orders)
    n_blue = int(header_value(header, f"{p} DRS CAL TH ORDER NBLUE", n_orders) or n_orders)
    n_gap = int(header_value(header, f"{p} DRS CAL TH ORDER NGAP", 0) or 0)
    i = np.arange(n_orders)
    return int(start) - i - np.where(i >= n_blue, n_gap, 0)


def _companion(path: Path, name: str | None) -> Path | None:
    """A calibration file named in the header, beside ``path`` (':' may have become '-')."""
    if not name:
        return None
    for candidate in (name, name.replace(":", "-"), name.replace(":", "_")):
        p = path.parent / candidate
        if p.exists():
            return p
    return None


def _header_wavelength(header, n_orders: int, n_pixels: int) -> np.ndarray | None:
    p = _prefix(header)
    deg = header_value(header, f"{p} DRS CAL TH DEG LL")
    if deg is None:
        return None
    deg = int(deg)
    coeffs = [header_float(header, f"{p} DRS CAL TH COEFF LL{k}")
              for k in range(n_orders * (deg + 1))]
    if any(c is None for c in coeffs):
        return None
    c = np.asarray(coeffs, float).reshape(n_orders, deg + 1)
    x = np.arange(n_pixels, dtype=float)
    return np.stack([np.polynomial.polynomial.polyval(x, row) for row in c])


def _read_image(path: str | os.PathLike, what: str) -> tuple[np.ndarray, object]:
    with open_fits(path) as hdul:
        data, header = hdul[0].data, hdul[0].header
        if data is None:
            raise FileFormatError(f"{path}: the primary HDU has no data; not a HARPS {what} file")
        return np.asarray(data, float), header


def read_e2ds(path: str | os.PathLike, wave: str | os.PathLike | None = None,
              blaze: str | os.PathLike | None = None, *, deblaze: bool = False
              ) -> EchelleSpectrum:
    """Read a HARPS / HARPS-N ``e2ds`` frame as an (n_orders, n_pixels) :class:`EchelleSpectrum`.

    wave, blaze: paths of the wave and blaze files; by default the files named in the header
    are looked for beside ``path`` (a missing blaze is fine unless ``deblaze=True``; a missing
    wave file falls back to the header polynomial). deblaze: divide flux and σ by the blaze.
    Flux unit ADU (deblazed: ADU divided by the blaze, ``meta.extra['deblazed']``); air Å;
    observed frame.
    """
    p = Path(path)
    flux, header = _read_image(p, "e2ds")
    if flux.ndim != 2:
        raise FileFormatError(f"{p}: an e2ds frame is 2D (orders, pixels), got shape {flux.shape}")
    n_orders, n_pixels = flux.shape
    prefix = _prefix(header)
    wave_path = Path(wave) if wave is not None else \
        _companion(p, header_value(header, f"{prefix} DRS CAL TH FILE"))
    if wave_path is not None:
        wavelength, wave_header = _read_image(wave_path, "wave")
        wave_source = str(wave_path)
        orders = _order_numbers(wave_header, n_orders)
        if orders[0] == 0:
            orders = _order_numbers(header, n_orders)
    else:
        wavelength = _header_wavelength(header, n_orders, n_pixels)
        wave_source = "e2ds header polynomial (DRS CAL TH COEFF LL)"
        orders = _order_numbers(header, n_orders)
        if wavelength is None:
            name = header_value(header, f"{prefix} DRS CAL TH FILE")
            raise MissingFileError(f"{p}: no wavelength solution; the wave file {name!r} is not "
                                   "beside it and the header has no DRS CAL TH COEFF LL keys; "
                                   "pass wave=PATH")
    if wavelength.shape != flux.shape:
        raise InvalidSpectrumError(f"{p}: wavelength solution {wavelength.shape} does not match "
                                   f"the e2ds flux {flux.shape}; pass the wave file of this "
                                   "frame's fibre and night")
    blaze_path = Path(blaze) if blaze is not None else \
        _companion(p, header_value(header, f"{prefix} DRS BLAZE FILE"))
    blaze_arr = None
    if blaze_path is not None:
        blaze_arr, _ = _read_image(blaze_path, "blaze")
        if blaze_arr.shape != flux.shape:
            raise InvalidSpectrumError(f"{p}: blaze {blaze_arr.shape} does not match the e2ds "
                                       f"flux {flux.shape}; pass this frame's blaze file")
    elif deblaze:
        name = header_value(header, f"{prefix} DRS BLAZE FILE")
        raise MissingFileError(f"{p}: deblaze=True but the blaze file {name!r} is not beside "
                               "it; pass blaze=PATH")
    gain = header_float(header, f"{prefix} DRS CCD CONAD") or 1.0
    ron = header_float(header, f"{prefix} DRS CCD SIGDET") or 0.0
    window = header_float(header, f"{prefix} DRS SPE EXT WINDOW") or 1.0
    sigma = np.sqrt(np.clip(flux, 0.0, None) * gain + window * ron ** 2) / gain
    bad = ~np.isfinite(flux) | ~(sigma > 0)
    if deblaze and blaze_arr is not None:
        good_blaze = np.isfinite(blaze_arr) & (blaze_arr > 1e-3)
        bad |= ~good_blaze
        safe = np.where(good_blaze, blaze_arr, 1.0)
        flux, sigma = flux / safe, sigma / safe  # blaze peaks near 1: values stay ADU-like
    snr = _snr_per_order(header, n_orders)
    berv = header_float(header, f"{prefix} DRS BERV")
    meta = SpectrumMeta(
        object_name=header_value(header, "OBJECT") or
        header_value(header, f"{prefix} OBS TARG NAME"),
        instrument=_instrument(header), barycentric_correction=berv,
        snr=float(np.nanmedian(snr)) if np.isfinite(snr).any() else None, source=str(p),
        extra={**_resolution(header), "product": "e2ds", "frame": "observed (topocentric)",
               "snr_per_order": snr, "bjd": header_float(
            header, f"{prefix} DRS BJD"), "mjd_obs": header_float(header, "MJD-OBS"),
            "date_obs": header_value(header, "DATE-OBS"), "wavelength_source": wave_source,
            "blaze": blaze_arr, "blaze_source": None if blaze_path is None else str(blaze_path),
            "deblazed": bool(deblaze and blaze_arr is not None)})
    return EchelleSpectrum.from_arrays(wavelength, flux, np.where(bad, np.inf, sigma), mask=bad,
                                       mask_nonfinite=True, medium="air", flux_unit="adu",
                                       meta=meta, order_numbers=orders)


def read_s1d(path: str | os.PathLike) -> Spectrum:
    """Read a HARPS / HARPS-N ``s1d`` merged spectrum (air Å, barycentric frame; no σ)."""
    p = Path(path)
    flux, header = _read_image(p, "s1d")
    if flux.ndim != 1:
        raise FileFormatError(f"{p}: an s1d spectrum is 1D, got shape {flux.shape}")
    crval = header_float(header, "CRVAL1")
    cdelt = header_float(header, "CDELT1") or header_float(header, "CD1_1")
    if crval is None or cdelt is None:
        raise FileFormatError(f"{p}: s1d header lacks CRVAL1/CDELT1; cannot build wavelengths")
    crpix = header_float(header, "CRPIX1") or 1.0
    wave = crval + cdelt * (np.arange(flux.size) + 1.0 - crpix)
    prefix = _prefix(header)
    snr = _snr_per_order(header, 72 if _instrument(header) == "HARPS" else 69)
    meta = SpectrumMeta(
        object_name=header_value(header, "OBJECT") or
        header_value(header, f"{prefix} OBS TARG NAME"),
        instrument=_instrument(header), barycentric_correction=0.0,
        snr=float(np.nanmedian(snr)) if np.isfinite(snr).any() else None, source=str(p),
        extra={**_resolution(header), "product": "s1d",
               "berv_kms": header_float(header, f"{prefix} DRS BERV"),
               "frame": "barycentric (BERV applied by the DRS)",
               "bjd": header_float(header, f"{prefix} DRS BJD"),
               "date_obs": header_value(header, "DATE-OBS"), "snr_per_order": snr})
    return Spectrum.from_arrays(wave, flux, mask_nonfinite=True, medium="air",
                                flux_unit="arbitrary", meta=meta)


def describe_calibration(path: str | os.PathLike) -> dict:
    """What a HARPS wave or blaze calibration file holds (for ``photosphere info``)."""
    data, header = _read_image(path, "calibration")
    kind = "wave" if np.nanmin(data) > 1000 else "blaze"
    out = {"product": f"harps_{kind}", "instrument": _instrument(header),
           "shape": list(data.shape), "n_orders": int(data.shape[0])}
    if kind == "wave":
        out.update(wavelength_min=float(np.nanmin(data)), wavelength_max=float(np.nanmax(data)),
                   medium="air",
                   description="HARPS wavelength solution (Å, air) for e2ds frames; used by "
                               "photosphere.io.harps.read_e2ds(e2ds, wave=this_file)")
    else:
        out.update(description="HARPS blaze function per order; used by "
                               "photosphere.io.harps.read_e2ds(e2ds, blaze=this_file, "
                               "deblaze=True)", blaze_max=finite_or_none(np.nanmax(data)))
    return out
