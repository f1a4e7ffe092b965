"""Keck/HIRES spectra in the SpecMatch-Emp layouts (Yee, Petigura & von Braun 2017).

* ``rj*.fits`` order images (:func:`read_hires_orders`): HDU 0 the extracted counts
  (n_orders, n_pixels), HDU 1 the *fractional* uncertainty σ/flux (SpecMatch-Emp normalises each
  order and keeps this array unscaled; σ·√counts ≈ 1 on the real files), HDU 2 the wavelengths
  (Å, float64, per order). Raw counts, not normalised, observed (topocentric) frame. The full
  Keck header is kept: ``DECKNAME`` gives the resolving power when documented
  (:mod:`photosphere.io._instrument`).
* ``*_adj.fits`` / library tables (:func:`read_hires_table`): a binary table with columns
  ``s`` (normalised flux), ``w`` (Å) and ``serr`` (σ), shifted by SpecMatch-Emp onto its
  rest-frame reference: normalised, rest frame, one merged 1D spectrum.

Neither layout records air or vacuum: air is assumed (the ground-based optical convention; the
rest-frame table puts Na D at its air wavelengths) and marked so, unless ``medium=`` says.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import FileFormatError
from ..spectrum import EchelleSpectrum, SpectrumMeta
from ._common import check_path, header_value, open_fits, resolve_medium
from ._instrument import instrument_extras
from .text import build_1d


def _as_float(data, what: str, hdu: str) -> np.ndarray:
    try:
        return np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        raise FileFormatError(f"{what}: {hdu} is not numeric (dtype {np.asarray(data).dtype}); "
                              "a HIRES order image needs numeric counts, σ and wavelengths"
                              ) from None


def read_hires_orders(path: str | os.PathLike, *,
                      medium: str | None = None) -> EchelleSpectrum:
    """Read a SpecMatch-Emp ``rj*.fits`` HIRES order image as an :class:`EchelleSpectrum`.

    Returns (n_orders, n_pixels) counts with σ = fractional σ × counts; pixels with zero or
    non-finite counts are masked. Orders are sorted blue to red.
    """
    p = check_path(path)
    what = f"read_hires_orders({p})"
    with open_fits(p) as hdul:
        if len(hdul) < 3:
            raise FileFormatError(f"{what}: {len(hdul)} HDU(s); a HIRES order image has 3 "
                                  "(counts, fractional σ, wavelengths)")
        header = hdul[0].header
        flux = _as_float(hdul[0].data, what, "HDU 0 (counts)")
        frac = _as_float(hdul[1].data, what, "HDU 1 (fractional σ)")
        wave = _as_float(hdul[2].data, what, "HDU 2 (wavelengths)")
    if not (flux.ndim == 2 and flux.shape == frac.shape == wave.shape):
        raise FileFormatError(f"{what}: HDU shapes {flux.shape}, {frac.shape}, {wave.shape}; "
                              "counts, fractional σ and wavelengths must share one "
                              "(orders, pixels) shape")
    if not np.all(np.isfinite(wave)) or np.nanmin(wave) < 900 or np.nanmax(wave) > 400_000:
        raise FileFormatError(f"{what}: HDU 2 does not hold wavelengths in Å (values "
                              f"{np.nanmin(wave):g}-{np.nanmax(wave):g}); this is not a "
                              "SpecMatch-Emp HIRES file")
    order = np.argsort(wave[:, 0])
    flux, frac, wave = flux[order], frac[order], wave[order]
    bad = ~np.isfinite(flux) | (flux <= 0) | ~np.isfinite(frac) | (frac <= 0)
    with np.errstate(invalid="ignore"):
        sigma = np.where(bad, np.inf, np.abs(frac * flux))
    med, medium_extra = resolve_medium(medium, None, wave, what=what)
    instrument, extra = instrument_extras(header, p)
    extra.update(medium_extra)
    extra.update({"product": "hires_orders", "frame": "observed (topocentric)",
                  "decker": header_value(header, "DECKNAME"),
                  "mjd": header_value(header, "MJD"), "iodine_cell": header_value(header, "IODIN"),
                  "sigma_from": "HDU 1 fractional σ × counts"})
    meta = SpectrumMeta(object_name=header_value(header, "TARGNAME") or
                        header_value(header, "OBJECT") or None,
                        instrument=instrument, source=str(p), extra=extra)
    try:
        return EchelleSpectrum.from_arrays(wave, np.where(bad, 0.0, flux), sigma, mask=bad,
                                           mask_nonfinite=True, medium=med,
                                           flux_unit="counts", meta=meta)
    except ValueError as exc:
        raise FileFormatError(f"{what}: {exc}") from None


def read_hires_table(path: str | os.PathLike, *, medium: str | None = None):
    """Read a SpecMatch-Emp table (columns ``s``, ``w``, ``serr``) as a normalised, rest-frame
    :class:`~photosphere.Spectrum`. Rows with NaN flux or σ are masked."""
    p = check_path(path)
    what = f"read_hires_table({p})"
    with open_fits(p) as hdul:
        table = next((h for h in hdul[1:] if not h.is_image and h.data is not None), None)
        if table is None:
            raise FileFormatError(f"{what}: no binary table; a SpecMatch-Emp spectrum is a "
                                  "table with columns s, w, serr")
        names = {n.lower(): n for n in table.data.names}
        missing = [c for c in ("s", "w") if c not in names]
        if missing:
            raise FileFormatError(f"{what}: the table has columns {list(table.data.names)}, "
                                  f"not {missing}; a SpecMatch-Emp spectrum needs s (flux), "
                                  "w (wavelength, Å) and serr (σ)")
        cols = {}
        for c in ("s", "w", "serr"):
            if c in names:
                values = table.data[names[c]]
                if not np.issubdtype(np.asarray(values).dtype, np.number):
                    raise FileFormatError(f"{what}: column {names[c]!r} holds "
                                          f"{np.asarray(values).dtype} values, not numbers; "
                                          "write it as a float column")
                cols[c] = np.asarray(values, float).ravel()
        header = hdul[0].header
    wave = cols["w"]
    med, medium_extra = resolve_medium(medium, None, wave[np.isfinite(wave)], what=what)
    instrument, extra = instrument_extras(header, p)
    if instrument is None:
        instrument, extra = "HIRES", {"instrument_source": "SpecMatch-Emp tables hold HIRES "
                                                            "spectra"}
    extra.update(medium_extra)
    extra.update({"product": "hires_table", "frame": "rest (shifted by SpecMatch-Emp)"})
    meta = SpectrumMeta(object_name=header_value(header, "OBJECT"),
                        instrument=instrument, source=str(p), extra=extra)
    return build_1d(wave, cols["s"], cols.get("serr"), med, "normalized", what, meta)
