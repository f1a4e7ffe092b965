"""SDSS APOGEE products (DR17 data model): apStar, apVisit, allStar, and the RV template grid.

All APOGEE wavelengths are **vacuum** Å. The apStar pixels sit on the log-uniform grid
``log10 λ_i = CRVAL1 + CDELT1 * (i + 1 - CRPIX1)`` with CRVAL1 = 4.179, CDELT1 = 6e-6, 8575 pixels
(15100.8-16999.8 Å). Fluxes are in 1e-17 erg/s/cm²/Å. Pixels whose PIXMASK has any of
:data:`APOGEE_PIXMASK_BAD_BITS` set, or whose error is 0 / non-finite / huge (the pipeline writes
1e10 for bad pixels), are masked; the raw bitmask is kept in ``meta.extra["bitmask"]`` so
``ops.bitmask.apply_bitmask`` can re-apply other bits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum, SpectrumMeta
from ._common import (
    finite_or_none,
    header_float,
    header_value,
    medium_from_text,
    open_fits,
    open_fits_lazy,
)

#: PIXMASK bits that make a pixel unusable: BADPIX, CRPIX, SATPIX, UNFIXABLE, BADDARK, BADFLAT,
#: BADERR, NOSKY, SIG_SKYLINE (the same set as ``ops.bitmask.APOGEE_PIXMASK_BAD_BITS``).
APOGEE_PIXMASK_BAD_BITS = (0, 1, 2, 3, 4, 5, 6, 7, 12)

APSTAR_CRVAL1 = 4.179
APSTAR_CDELT1 = 6e-6
APSTAR_NWAVE = 8575

#: Errors above this (flux units) mark pixels the pipeline gave up on.
_HUGE_ERROR = 1e9

APOGEE_FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"

#: DR17 ASPCAPFLAG bit 23 = STAR_BAD (any serious ASPCAP problem); EXTRATARG bit 4 = DUPLICATE.
ASPCAPFLAG_STAR_BAD_BIT = 23
EXTRATARG_DUPLICATE_BIT = 4

#: DR17 fill value for missing labels (also NaN in some columns).
MISSING_LABEL = -9999.0


def apstar_wavelength(n_pixels: int = APSTAR_NWAVE, crval1: float = APSTAR_CRVAL1,
                      cdelt1: float = APSTAR_CDELT1, crpix1: float = 1.0) -> np.ndarray:
    """The apStar log-λ grid: (n_pixels,) vacuum Å."""
    i = np.arange(n_pixels, dtype=float)
    return 10.0 ** (crval1 + cdelt1 * (i + 1.0 - crpix1))


def bad_pixel_mask(bitmask: np.ndarray, bits: Sequence[int] = APOGEE_PIXMASK_BAD_BITS
                   ) -> np.ndarray:
    """True where any of ``bits`` is set in the APOGEE PIXMASK array."""
    flags = np.asarray(bitmask).astype(np.int64)
    bad_value = sum(1 << int(b) for b in bits)
    return (flags & bad_value) != 0


def _sigma_and_mask(flux: np.ndarray, error: np.ndarray, bitmask: np.ndarray,
                    bits: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    error = np.asarray(error, float)
    bad = bad_pixel_mask(bitmask, bits) | ~np.isfinite(flux) | ~np.isfinite(error) | \
        (error <= 0) | (error > _HUGE_ERROR)
    sigma = np.where(bad, np.inf, error)
    return sigma, bad


# ---------------------------------------------------------------------------------------- apStar
def read_apstar(path: str | os.PathLike, visit: int | str | None = None, *,
                bits: Sequence[int] = APOGEE_PIXMASK_BAD_BITS) -> Spectrum | EchelleSpectrum:
    """Read a DR17 ``apStar`` file (HDU1 flux, HDU2 error, HDU3 bitmask; vacuum, rest frame).

    visit: None for the combined spectrum (row 0, pixel-weighted); an int ``k`` (0-based) for the
    k-th individual visit (row ``k + 2`` when NVISITS > 1); ``"all"`` for every visit as an
    (n_visits, 8575) :class:`EchelleSpectrum` stack (rows are visits, not echelle orders).
    Returns a :class:`Spectrum` of 8575 pixels otherwise.
    """
    with open_fits(path) as hdul:
        if len(hdul) < 4:
            raise FileFormatError(f"{path}: an apStar file has at least 4 HDUs (header, flux, "
                                  f"error, bitmask), this one has {len(hdul)}")
        h0, h1 = hdul[0].header, hdul[1].header
        flux = np.atleast_2d(np.asarray(hdul[1].data, float))
        error = np.atleast_2d(np.asarray(hdul[2].data, float))
        bitmask = np.atleast_2d(np.asarray(hdul[3].data))
        rv_table = _table_rows(hdul[9]) if len(hdul) > 9 and hdul[9].is_image is False else None
    if not (flux.shape == error.shape == bitmask.shape):
        raise FileFormatError(f"{path}: apStar flux {flux.shape}, error {error.shape} and bitmask "
                              f"{bitmask.shape} differ in shape; the file is corrupt")
    n_pix = flux.shape[1]
    crval1 = header_float(h1, "CRVAL1") or header_float(h0, "CRVAL1") or APSTAR_CRVAL1
    cdelt1 = header_float(h1, "CDELT1") or header_float(h0, "CDELT1") or APSTAR_CDELT1
    crpix1 = header_float(h1, "CRPIX1") or 1.0
    wave = apstar_wavelength(n_pix, crval1, cdelt1, crpix1)
    n_visits = int(header_value(h0, "NVISITS", max(flux.shape[0] - 2, 1)) or 1)
    first_visit_row = 2 if n_visits > 1 else 0
    meta = SpectrumMeta(
        object_name=header_value(h0, "OBJID") or header_value(h0, "APOGEE_ID"),
        instrument="APOGEE", barycentric_correction=0.0,
        snr=finite_or_none(header_value(h0, "SNR")), source=str(path),
        extra={"telescope": header_value(h0, "TELESCOP"), "field": header_value(h0, "FIELD"),
               "n_visits": n_visits, "vhelio": finite_or_none(header_value(h0, "VHELIO")),
               "rest_frame": "stellar rest frame (apStar spectra are shifted by the pipeline)",
               "product": "apStar"})
    if visit is None:
        rows = [0]
    elif visit == "all":
        rows = list(range(first_visit_row, first_visit_row + n_visits))
    else:
        if not isinstance(visit, int | np.integer) or not 0 <= int(visit) < n_visits:
            raise InvalidSpectrumError(
                f"read_apstar: visit={visit!r} but {path} holds {n_visits} visit(s); pass "
                f"visit=None (combined), an index 0..{n_visits - 1}, or 'all'")
        rows = [first_visit_row + int(visit)]
    if max(rows) >= flux.shape[0]:
        raise FileFormatError(f"{path}: NVISITS={n_visits} but HDU1 has only {flux.shape[0]} "
                              "row(s); the file is inconsistent")
    sigma, bad = _sigma_and_mask(flux[rows], error[rows], bitmask[rows], bits)
    if np.all(bad):
        raise InvalidSpectrumError(f"{path}: every pixel of the requested apStar row(s) is "
                                   "flagged bad; choose another visit or check the file")
    if visit == "all":
        extra = dict(meta.extra, bitmask=bitmask[rows], row_kind="visit",
                     visits=rv_table)
        return EchelleSpectrum(np.broadcast_to(wave, flux[rows].shape), flux[rows], sigma,
                               mask=bad, medium="vacuum", flux_unit=APOGEE_FLUX_UNIT,
                               meta=meta.replace(extra=extra), order_numbers=np.arange(len(rows)))
    extra = dict(meta.extra, bitmask=bitmask[rows[0]],
                 visit=None if visit is None else int(visit))
    if visit is not None and rv_table is not None and int(visit) < len(rv_table):
        extra["visit_info"] = rv_table[int(visit)]
    return Spectrum(wave, flux[rows[0]], sigma[0], mask=bad[0], medium="vacuum",
                    flux_unit=APOGEE_FLUX_UNIT, meta=meta.replace(extra=extra))


def _table_rows(hdu: Any) -> list[dict[str, Any]]:
    """A FITS binary table as a list of plain dicts (scalars only), for metadata."""
    data = hdu.data
    if data is None:
        return []
    out = []
    for row in data:
        item = {}
        for name in data.names:
            v = row[name]
            if isinstance(v, bytes):
                v = v.decode(errors="replace").strip()
            elif isinstance(v, str):
                v = v.strip()
            elif np.ndim(v) == 0:
                v = v.item() if hasattr(v, "item") else v
            else:
                continue
            item[name] = v
        out.append(item)
    return out


# --------------------------------------------------------------------------------------- apVisit
def read_apvisit(path: str | os.PathLike, *,
                 bits: Sequence[int] = APOGEE_PIXMASK_BAD_BITS) -> EchelleSpectrum:
    """Read an ``apVisit`` file: 3 chips × 4096 px (HDU1 flux, HDU2 error, HDU3 mask, HDU4 λ).

    Returns an :class:`EchelleSpectrum` of shape (3, 4096) with the chips ordered blue to red
    (c, b, a: the file stores them red to blue, each with decreasing wavelength) in vacuum Å,
    observed (topocentric) frame; ``meta.barycentric_correction`` is the header ``BC`` (km/s).
    """
    with open_fits(path) as hdul:
        if len(hdul) < 5:
            raise FileFormatError(f"{path}: an apVisit file has at least 5 HDUs (header, flux, "
                                  f"error, mask, wavelength), this one has {len(hdul)}")
        h0 = hdul[0].header
        flux, error, bitmask, wave = (np.asarray(hdul[i].data) for i in (1, 2, 3, 4))
    shapes = {a.shape for a in (flux, error, bitmask, wave)}
    if len(shapes) != 1 or flux.ndim != 2:
        raise FileFormatError(f"{path}: apVisit HDUs 1-4 should share one (3, 4096) shape, got "
                              f"{[a.shape for a in (flux, error, bitmask, wave)]}")
    order = np.argsort(np.nanmedian(wave, axis=1))  # chips blue -> red
    wave = np.asarray(wave, float)[order]
    flux = np.asarray(flux, float)[order]
    error, bitmask = np.asarray(error, float)[order], np.asarray(bitmask)[order]
    if np.all(np.diff(wave, axis=1) < 0):
        wave, flux, error, bitmask = (a[:, ::-1] for a in (wave, flux, error, bitmask))
    sigma, bad = _sigma_and_mask(flux, error, bitmask, bits)
    chips = [("a", "b", "c")[i] for i in order] if len(order) == 3 else None
    meta = SpectrumMeta(
        object_name=header_value(h0, "OBJID"), instrument="APOGEE",
        barycentric_correction=finite_or_none(header_value(h0, "BC")),
        snr=finite_or_none(header_value(h0, "SNR")), source=str(path),
        extra={"frame": "observed (topocentric)",
               "telescope": header_value(h0, "TELESCOP"), "plate": header_value(h0, "PLATE"),
               "mjd": header_value(h0, "MJD5"), "fiber": header_value(h0, "FIBERID"),
               "jd_mid": finite_or_none(header_value(h0, "JD-MID")),
               "vrad": finite_or_none(header_value(h0, "VRAD")),
               "vhelio": finite_or_none(header_value(h0, "VHELIO")),
               "chips": chips, "row_kind": "chip",
               "bitmask": bitmask, "product": "apVisit"})
    return EchelleSpectrum(wave, flux, sigma, mask=bad, medium="vacuum",
                           flux_unit=APOGEE_FLUX_UNIT, meta=meta,
                           order_numbers=np.arange(flux.shape[0]))


# ---------------------------------------------------------------------------------------- allStar
def read_allstar(path: str | os.PathLike, columns: Sequence[str] | None = None):
    """Read the allStar catalogue (HDU1) as an astropy ``Table``.

    columns: only these columns (the DR17 file is several GB; the file is memory-mapped so only
    the requested columns are read). String columns are stripped of padding.
    """
    from astropy.table import Table

    with open_fits_lazy(path) as hdul:
        if len(hdul) < 2 or hdul[1].is_image:
            raise FileFormatError(f"{path}: an allStar file has a binary table in HDU1")
        data = hdul[1].data
        names = list(data.names)
        if "APOGEE_ID" not in names:
            raise FileFormatError(f"{path}: HDU1 has no APOGEE_ID column; this is not an "
                                  "allStar file")
        wanted = names if columns is None else list(columns)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise FileFormatError(f"{path}: columns {missing} are not in the catalogue; "
                                  f"available include {names[:20]}")
        table = Table({c: np.array(data[c]) for c in wanted})
    for name in table.colnames:
        if table[name].dtype.kind == "S":
            table[name] = np.char.strip(np.char.decode(table[name], "ascii", errors="replace"))
        elif table[name].dtype.kind == "U":
            table[name] = np.char.strip(table[name])
    return table


def select_allstar(table, fields: Sequence[str] | None = ("M15", "N6791", "K2_C4_168-21",
                                                           "060+00"),
                   min_snr: float | None = 50.0, max_logg: float | None = 4.0,
                   max_teff: float | None = 5700.0, min_feh: float | None = -1.0,
                   labels: Sequence[str] = ("TEFF", "LOGG", "FE_H", "MG_FE", "SI_FE"),
                   exclude_star_bad: bool = True, drop_duplicates: bool = True):
    """Quality-cut an allStar table (defaults: the Cannon training-set cuts).

    Keeps rows with FIELD in ``fields`` (None: any field), all ``labels`` present (not NaN and
    not -9999), SNR > ``min_snr``, LOGG < ``max_logg``, TEFF < ``max_teff``, FE_H > ``min_feh``,
    and, when the columns exist, ASPCAPFLAG without STAR_BAD (bit 23) and EXTRATARG without
    DUPLICATE (bit 4). A cut set to None is skipped. Returns the selected rows (a new Table) with
    the cuts recorded in ``meta["selection"]``.
    """
    names = set(table.colnames)
    needed = set(labels) | {c for c, v in (("SNR", min_snr), ("LOGG", max_logg),
                                           ("TEFF", max_teff), ("FE_H", min_feh),
                                           ("FIELD", fields)) if v is not None}
    missing = sorted(needed - names)
    if missing:
        raise FileFormatError(f"select_allstar: the table has no column(s) {missing}; pass a "
                              "DR17 allStar table (read_allstar) or drop that cut")
    keep = np.ones(len(table), bool)
    if fields is not None:
        wanted = {str(f).strip() for f in fields}
        keep &= np.array([str(f).strip() in wanted for f in table["FIELD"]])
    for name in labels:
        values = np.asarray(table[name], float)
        keep &= np.isfinite(values) & (values > MISSING_LABEL + 1)
    with np.errstate(invalid="ignore"):
        if min_snr is not None:
            keep &= np.asarray(table["SNR"], float) > min_snr
        if max_logg is not None:
            keep &= np.asarray(table["LOGG"], float) < max_logg
        if max_teff is not None:
            keep &= np.asarray(table["TEFF"], float) < max_teff
        if min_feh is not None:
            keep &= np.asarray(table["FE_H"], float) > min_feh
    if exclude_star_bad and "ASPCAPFLAG" in names:
        keep &= (np.asarray(table["ASPCAPFLAG"]).astype(np.int64)
                 & (1 << ASPCAPFLAG_STAR_BAD_BIT)) == 0
    if drop_duplicates and "EXTRATARG" in names:
        keep &= (np.asarray(table["EXTRATARG"]).astype(np.int64)
                 & (1 << EXTRATARG_DUPLICATE_BIT)) == 0
    out = table[keep]
    out.meta["selection"] = {"fields": None if fields is None else list(fields),
                             "min_snr": min_snr, "max_logg": max_logg, "max_teff": max_teff,
                             "min_feh": min_feh, "labels": list(labels),
                             "exclude_star_bad": exclude_star_bad,
                             "drop_duplicates": drop_duplicates, "n_in": len(table),
                             "n_out": int(keep.sum())}
    return out


# ------------------------------------------------------------------------------ RV template grid
@dataclass(frozen=True, eq=False)
class SpectraGrid:
    """A stack of model spectra on one wavelength grid, with the labels of each.

    wavelength: (n_pixels,) Å in ``medium``; flux: (n_spectra, n_pixels) normalised flux;
    labels: name -> (n_spectra,) values (``teff`` K, ``logg`` dex, ``feh`` dex).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    labels: dict[str, np.ndarray]
    medium: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.flux.shape[0]

    def spectrum(self, i: int) -> Spectrum:
        """Model ``i`` as a normalised :class:`Spectrum` (labels in ``meta.extra``)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"spectrum index {i} out of range for {len(self)} spectra")
        labels = {k: float(v[i]) for k, v in self.labels.items()}
        return Spectrum(self.wavelength, self.flux[i], medium=self.medium,  # type: ignore[arg-type]
                        flux_unit="normalized",
                        meta=SpectrumMeta(source=self.meta.get("source"),
                                          extra={"labels": labels, "index": int(i)}))


_GRID_LABEL_UNITS = {"teff": "teff", "logg": "logg", "metal": "feh", "[fe/h]": "feh"}


def read_rv_synthgrid(path: str | os.PathLike) -> SpectraGrid:
    """Read ``apg_rvsynthgrid.fits``: HDU1 (n_spec, n_pix) normalised flux on a log10-λ grid
    (CRVAL2/CDELT2; the CTYPE2 comment names the frame, "Log AIR Wavelength" for this file),
    HDU2-4 the [Fe/H], Teff and log g of each spectrum (identified by their BUNIT)."""
    with open_fits(path) as hdul:
        if len(hdul) < 5 or hdul[1].data is None or np.ndim(hdul[1].data) != 2:
            raise FileFormatError(f"{path}: expected a 2D spectrum grid in HDU1 and label "
                                  "arrays in HDU2-4 (apg_rvsynthgrid layout)")
        h1 = hdul[1].header
        flux = np.asarray(hdul[1].data, float)
        labels: dict[str, np.ndarray] = {}
        for hdu in hdul[2:]:
            bunit = str(header_value(hdu.header, "BUNIT", "")).lower()
            for key, name in _GRID_LABEL_UNITS.items():
                if bunit.startswith(key) or key in bunit.split(",")[0]:
                    labels[name] = np.asarray(hdu.data, float)
                    break
        axis = 2 if "wave" in str(header_value(h1, "CTYPE2", "")).lower() else 1
        crval = header_float(h1, f"CRVAL{axis}")
        cdelt = header_float(h1, f"CDELT{axis}")
        crpix = header_float(h1, f"CRPIX{axis}") or 1.0
        comment = h1.comments[f"CTYPE{axis}"] if f"CTYPE{axis}" in h1 else ""
        is_log = bool(header_value(h1, "DCLOG", 0)) or "log" in comment.lower()
    if crval is None or cdelt is None:
        raise FileFormatError(f"{path}: HDU1 lacks CRVAL{axis}/CDELT{axis}; cannot build the "
                              "wavelength grid")
    if axis == 2:  # FITS axis 2 is numpy axis 0: (n_pix, n_spec) -> (n_spec, n_pix)
        flux = flux.T
    n_pix = flux.shape[1]
    x = crval + cdelt * (np.arange(n_pix) + 1.0 - crpix)
    wave = 10.0 ** x if is_log else x
    medium = medium_from_text(comment) or "vacuum"
    return SpectraGrid(wave, flux, labels, medium,
                       meta={"source": str(path), "resolution": header_float(h1, "RESOL"),
                             "frame_from_header": medium_from_text(comment) is not None})
