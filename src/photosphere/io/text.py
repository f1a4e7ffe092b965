"""Plain-text spectra: 2 columns (wavelength, flux) or 3 (wavelength, flux, σ).

Comment lines start with ``#``; a ``# medium: air`` / ``# vacuum`` or ``# unit: nm`` comment, or
a header row such as ``wavelength_A,flux``, is honoured. Whitespace- or comma-separated.
The air/vacuum frame comes from (in order) the ``medium`` argument, the file's comments, or the
known products in :data:`KNOWN_TEXT_PRODUCTS`; otherwise it is assumed (air for optical
wavelengths) and ``meta.extra['medium_assumed']`` says so.
Wavelengths without a unit are accepted only when they look like Å.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError
from ..spectrum import Spectrum, SpectrumMeta
from ._common import check_path, medium_from_text, resolve_medium, to_angstrom

#: File-name patterns of known text products -> (medium, instrument, description).
KNOWN_TEXT_PRODUCTS = (
    (re.compile(r"uves.*sun|UVES_Sun", re.I), "air", "UVES",
     "UVES solar spectrum (reflected sunlight), continuum-normalised"),
    # The APOGEE H-band atlases are in AIR: Al I 16718.96 Å (air) sits at 16719.00 Å in the solar
    # atlas (its vacuum position is 16723.5 Å).
    (re.compile(r"atlas_sun_hband|^solar\.\d+\.txt$", re.I), "air", "APOGEE",
     "observed solar H-band atlas used by the APOGEE pipeline, normalised"),
    (re.compile(r"atlas_arcturus_hband|^arct\.\d+\.txt$", re.I), "air", "APOGEE",
     "observed Arcturus H-band atlas used by the APOGEE pipeline, normalised"),
)

_UNIT_IN_NAME = re.compile(r"(?:\(|\[|_|\s)(angstroms?|a|aa|nm|um|micron|microns)(?:\)|\]|$)",
                           re.I)


def known_text_product(path: str | os.PathLike) -> tuple[str, str, str] | None:
    name = Path(path).name
    for pattern, medium, instrument, description in KNOWN_TEXT_PRODUCTS:
        if pattern.search(name):
            return medium, instrument, description
    return None


def _scan_header(lines: list[str]) -> tuple[str | None, str | None, str | None, int]:
    """(medium, unit, column-name line, n header lines) from leading comment/header lines."""
    medium = unit = names = None
    n = 0
    for line in lines:
        s = line.strip()
        if not s:
            n += 1
            continue
        if s.startswith("#"):
            body = s.lstrip("#").strip()
            medium = medium or medium_from_text(body)
            m = re.search(r"unit[s]?\s*[:=]\s*(\S+)", body, re.I)
            if m:
                unit = m.group(1)
            n += 1
            continue
        first = re.split(r"[,\s]+", s)[0]
        try:
            float(first)
        except ValueError:
            names = s
            n += 1
            continue
        break
    if names and unit is None:
        first_col = re.split(r"[,\s]+", names.strip())[0]
        m = _UNIT_IN_NAME.search(first_col)
        if m:
            unit = m.group(1)
    return medium, unit, names, n


def read_text(path: str | os.PathLike, *, medium: str | None = None,
              wavelength_unit: str | None = None, flux_unit: str | None = None,
              merge_duplicates: bool = True) -> Spectrum:
    """Read a 2- or 3-column text spectrum into a :class:`Spectrum` (Å).

    medium: 'air'/'vacuum' (default: the file's comment, a known product, else assumed).
    wavelength_unit: unit of column 1 when the file does not give it ('Angstrom', 'nm', 'um').
    Descending files are reversed; rows repeating a wavelength are averaged (unless
    ``merge_duplicates=False``); non-monotonic wavelengths raise InvalidSpectrumError.
    """
    p = check_path(path)
    what = f"read_text({p})"
    try:
        with open(p, encoding="utf-8", errors="strict") as fh:
            head = [fh.readline() for _ in range(50)]
    except UnicodeDecodeError:
        raise FileFormatError(f"{p} is not a text file (it has non-UTF-8 bytes); for FITS/HDF5 "
                              "use photosphere.io.read") from None
    file_medium, file_unit, _names, n_header = _scan_header(head)
    known = known_text_product(p)
    delimiter = "," if any("," in h for h in head[n_header:n_header + 5]) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": below
            data = np.loadtxt(p, comments="#", delimiter=delimiter, skiprows=n_header, ndmin=2)
    except ValueError as exc:
        raise FileFormatError(f"{what}: not a numeric column file ({exc}); expected 2 or 3 "
                              "columns: wavelength, flux[, sigma]") from None
    if data.size == 0:
        raise FileFormatError(f"{what}: no data rows; expected 2 or 3 numeric columns")
    if data.shape[1] not in (2, 3):
        raise FileFormatError(f"{what}: {data.shape[1]} columns; expected 2 (wavelength, flux) "
                              "or 3 (wavelength, flux, sigma)")
    wave = to_angstrom(data[:, 0], wavelength_unit or file_unit, what=what)
    recorded, source = (file_medium, "a comment in the file") if file_medium else \
        (known[0], f"known product: {known[2]}") if known else (None, None)
    med, medium_extra = resolve_medium(medium, recorded, wave, what=what,
                                       recorded_source=source)
    flux = data[:, 1]
    sigma = data[:, 2] if data.shape[1] == 3 else None
    # the known text products are all continuum-normalised spectra
    unit = flux_unit or ("normalized" if known else "arbitrary")
    return build_1d(wave, flux, sigma, med, unit, what, SpectrumMeta(
        instrument=known[1] if known else None, source=str(p),
        extra={"product": "text", "description": known[2] if known else None,
               **medium_extra}),
        merge_duplicates=merge_duplicates)


def _merge_duplicates(wave, flux, sigma):
    """Average rows sharing a wavelength (σ of the mean); wave must be non-decreasing."""
    unique, inverse, counts = np.unique(wave, return_inverse=True, return_counts=True)
    flux_mean = np.bincount(inverse, weights=flux) / counts
    if sigma is not None:
        sigma = np.sqrt(np.bincount(inverse, weights=sigma ** 2)) / counts
    return unique, flux_mean, sigma, int(wave.size - unique.size)


def build_1d(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray | None, medium: str,
             flux_unit: str, what: str, meta: SpectrumMeta, *,
             merge_duplicates: bool = True) -> Spectrum:
    """A validated Spectrum from columns: reverses descending data, masks non-finite values,
    averages rows repeating a wavelength (segment joins, e.g. the UVES solar atlas) unless
    ``merge_duplicates=False``, refuses non-finite or non-monotonic wavelengths and all-bad flux.
    """
    if np.any(~np.isfinite(wave)):
        bad = int(np.flatnonzero(~np.isfinite(wave))[0])
        raise InvalidSpectrumError(f"{what}: wavelength in row {bad} is {wave[bad]}; "
                                   "wavelengths must all be finite")
    if wave.size > 1 and np.all(np.diff(wave) < 0):
        wave, flux = wave[::-1], flux[::-1]
        sigma = None if sigma is None else sigma[::-1]
    steps = np.diff(wave)
    if np.any(steps < 0):
        i = int(np.flatnonzero(steps < 0)[0])
        raise InvalidSpectrumError(f"{what}: wavelengths are not monotonic (row {i + 1}: "
                                   f"{wave[i]} then {wave[i + 1]}); sort the file by wavelength")
    if not np.any(np.isfinite(flux)):
        raise InvalidSpectrumError(f"{what}: every flux value is NaN or inf")
    if np.any(steps == 0):
        if not merge_duplicates:
            i = int(np.flatnonzero(steps == 0)[0])
            raise InvalidSpectrumError(f"{what}: wavelength {wave[i]} appears twice (rows {i}, "
                                       f"{i + 1}); remove duplicates or pass "
                                       "merge_duplicates=True")
        wave, flux, sigma, n_merged = _merge_duplicates(wave, flux, sigma)
        meta = meta.replace(extra={**meta.extra, "merged_duplicate_rows": n_merged})
    if sigma is not None:
        sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.inf)
    return Spectrum.from_arrays(wave, flux, sigma, mask_nonfinite=True, medium=medium,
                                flux_unit=flux_unit, meta=meta)
