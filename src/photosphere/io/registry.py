"""Product detection and dispatch: :func:`identify`, :func:`read`, :func:`describe`.

:func:`identify` names the product of a file from its content (HDU layout, header keys,
dataset names, columns), using the file name only to break ties (HARPS calibration files).
Spectrum products go through :func:`read`; auxiliary products (catalogues, model grids,
calibration files, emulator weights, pixel masks) are explained by :func:`describe`, and
:func:`read` refuses them with a :class:`FileFormatError` naming the function that reads them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError
from ..spectrum import EchelleSpectrum, Spectrum
from ._common import check_path, fits_shape, header_value, open_fits_lazy


@dataclass(frozen=True)
class Product:
    name: str
    description: str
    reader: str  # dotted name of the function that reads it
    is_spectrum: bool


PRODUCTS: dict[str, Product] = {p.name: p for p in (
    Product("apogee_apstar", "APOGEE apStar combined/visit spectra (vacuum, rest frame)",
            "photosphere.io.apogee.read_apstar", True),
    Product("apogee_apvisit", "APOGEE apVisit spectrum, 3 chips x 4096 px (vacuum)",
            "photosphere.io.apogee.read_apvisit", True),
    Product("apogee_allstar", "APOGEE allStar catalogue (one row per star)",
            "photosphere.io.apogee.read_allstar (then select_allstar)", False),
    Product("apogee_rvsynthgrid", "grid of normalised synthetic APOGEE spectra (RV templates) "
            "with Teff/logg/[Fe/H] per spectrum", "photosphere.io.apogee.read_rv_synthgrid",
            False),
    Product("payne_spectrum", "The Payne APOGEE combined spectrum on the 7214-px ASPCAP grid",
            "photosphere.io.payne.read_payne_spectrum", True),
    Product("payne_visits", "The Payne APOGEE visit spectra on the 7214-px ASPCAP grid",
            "photosphere.io.payne.read_payne_visits", True),
    Product("payne_emulator", "The Payne neural-network emulator weights (per-pixel network, "
            "7214 px; labels Teff, logg, [Fe/H], [alpha/Fe], vmacro)",
            "photosphere.io.payne.read_payne_auxiliary", False),
    Product("payne_wavelength", "ASPCAP 7214-px wavelength grid (vacuum Å)",
            "photosphere.io.payne.read_payne_auxiliary", False),
    Product("apvisit_wavelength", "apVisit 3x4096-px wavelength grid (vacuum Å)",
            "photosphere.io.payne.read_payne_auxiliary", False),
    Product("payne_pixel_mask", "boolean pixel mask on the 7214-px ASPCAP grid",
            "photosphere.io.payne.read_payne_auxiliary", False),
    Product("harps_e2ds", "HARPS/HARPS-N extracted echelle frame (air, observed frame)",
            "photosphere.io.harps.read_e2ds", True),
    Product("harps_s1d", "HARPS/HARPS-N merged 1D spectrum (air, barycentric frame)",
            "photosphere.io.harps.read_s1d", True),
    Product("harps_wave", "HARPS/HARPS-N wavelength solution (orders x pixels, air Å)",
            "photosphere.io.harps.read_e2ds(e2ds, wave=...)", False),
    Product("harps_blaze", "HARPS/HARPS-N blaze function (orders x pixels)",
            "photosphere.io.harps.read_e2ds(e2ds, blaze=..., deblaze=True)", False),
    Product("phoenix_flux", "PHOENIX-ACES HiRes model flux (needs the WAVE file)",
            "photosphere.io.phoenix.read_phoenix", True),
    Product("phoenix_wave", "PHOENIX-ACES wavelength grid (vacuum Å)",
            "photosphere.io.phoenix.read_phoenix(flux, wave_path=...)", False),
    Product("tres_hdf5", "TRES echelle spectrum in HDF5 (wls/fls/sigmas; air)",
            "photosphere.io.tres.read_tres_hdf5", True),
    Product("fits1d", "1D FITS spectrum with a wavelength WCS",
            "photosphere.io.fits1d.read_fits1d", True),
    Product("fits_table", "1D spectrum in a FITS binary table (wavelength, flux, uncertainty)",
            "photosphere.io.fits1d.read_fits1d", True),
    Product("text", "2/3-column text spectrum", "photosphere.io.text.read_text", True),
    Product("tapas", "TAPAS atmospheric transmission (IPAC table)",
            "photosphere.io.telluric.read_tapas", True),
    Product("telluric_csv", "TelFit telluric transmission table (CSV)",
            "photosphere.io.telluric.read_telluric_csv", True),
    Product("lblrtm_grid", "LBLRTM telluric transmission grid (scale x airmass x wavelength)",
            "photosphere.io.telluric.read_lblrtm_grid", False),
)}

_HARPS_NAME = re.compile(r"^HARPS.*_(e2ds|s1d|wave|blaze)_[AB]\.fits$", re.I)
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _is_fits(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(9) == b"SIMPLE  ="


def _is_hdf5(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def _is_zip(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def identify(path: str | os.PathLike) -> str:
    """The product name of a file (a key of :data:`PRODUCTS`).

    Raises MissingFileError for a missing path, FileFormatError for empty, corrupt or
    unrecognised files (naming the products that are supported).
    """
    p = check_path(path)
    name = p.name.lower()
    if _is_fits(p) or name.endswith(_FITS_SUFFIXES):
        return _identify_fits(p)
    if _is_hdf5(p) or name.endswith(_HDF5_SUFFIXES):
        return _identify_hdf5(p)
    if _is_zip(p) or name.endswith(".npz"):
        return _identify_npz(p)
    return _identify_text(p)


def _unknown(p: Path, what: str) -> FileFormatError:
    known = ", ".join(sorted(PRODUCTS))
    return FileFormatError(f"{p}: {what}; photosphere reads these products: {known}. For a "
                           "generic spectrum write a 1D FITS with a wavelength WCS or a "
                           "2/3-column text file (wavelength, flux[, sigma])")


def _columns(header) -> set[str]:
    n = int(header_value(header, "TFIELDS", 0) or 0)
    return {str(header_value(header, f"TTYPE{i}", "")).strip().lower() for i in range(1, n + 1)}


def _identify_fits(p: Path) -> str:
    """Identify from headers and NAXISn only (files can be GB-sized catalogues)."""
    name = p.name.lower()
    with open_fits_lazy(p) as hdul:
        headers = [hdu.header for hdu in hdul]
        is_table = [not hdu.is_image for hdu in hdul]
        shapes = [fits_shape(h) for h in headers]
        h0, keys = headers[0], set(headers[0].keys())
        n0 = len(shapes[0])
        if "PHXTEFF" in keys:
            return "phoenix_flux"
        if name.startswith("wave_phoenix") and n0 == 1:
            return "phoenix_wave"
        if any(k.startswith(("ESO DRS", "TNG DRS")) for k in keys) and n0 in (1, 2):
            return "harps_s1d" if n0 == 1 else _harps_2d_product(name, hdul[0].data)
        if "NVISITS" in keys or name.startswith("apstar"):
            return "apogee_apstar"
        if len(shapes) >= 5 and ("FIBERID" in keys or name.startswith("apvisit")) and \
                len(shapes[1]) == 2 and shapes[4] == shapes[1]:
            return "apogee_apvisit"
        if len(headers) > 1 and is_table[1]:
            cols = _columns(headers[1])
            if {"apogee_id", "aspcapflag"} <= cols or {"apogee_id", "teff"} <= cols:
                return "apogee_allstar"
            if cols & {"wavelength", "wave", "lambda", "loglam", "wl"} and \
                    cols & {"flux", "fl", "spectrum", "transmission", "transmittance"}:
                return "fits_table"
        if n0 == 3 and "AIRMASS" in str(header_value(h0, "CTYPE2", "")).upper():
            return "lblrtm_grid"
        if len(headers) > 1 and not is_table[1] and len(shapes[1]) == 2:
            ctypes = " ".join(str(header_value(headers[1], f"CTYPE{i}", ""))
                              for i in (1, 2)).lower()
            if "spectrum" in ctypes and "wave" in ctypes:
                return "apogee_rvsynthgrid"
        if n0 >= 1 and "CRVAL1" in keys:
            return "fits1d"
        for h, shape, table in zip(headers[1:], shapes[1:], is_table[1:], strict=True):
            if not table and len(shape) == 1 and "CRVAL1" in h:
                return "fits1d"
        m = _HARPS_NAME.match(p.name)
        if m and n0 in (1, 2):
            return f"harps_{m.group(1).lower()}"
    raise _unknown(p, "a FITS file of a layout photosphere does not recognise")


def _harps_2d_product(name: str, data: np.ndarray) -> str:
    """e2ds, wave or blaze: by the archive file name, else by the values."""
    for token, product in (("_wave", "harps_wave"), ("_blaze", "harps_blaze"),
                           ("_e2ds", "harps_e2ds")):
        if token in name:
            return product
    data = np.asarray(data, float)
    if np.nanmin(data) > 1000 and np.all(np.diff(data, axis=1) > 0):
        return "harps_wave"
    if np.nanmax(data) <= 2.0 and np.nanmin(data) >= 0:
        return "harps_blaze"
    return "harps_e2ds"


def _identify_hdf5(p: Path) -> str:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            keys = set(f.keys())
    except OSError as exc:
        raise FileFormatError(f"{p} is not a readable HDF5 file ({exc}); it may be truncated: "
                              "fetch it again") from None
    if {"wls", "fls"} <= keys:
        return "tres_hdf5"
    raise _unknown(p, f"an HDF5 file with datasets {sorted(keys)}")


def _identify_npz(p: Path) -> str:
    from .payne import load_npz

    keys = set(load_npz(p))
    for needed, product in (({"spectrum", "spec_err"}, "payne_spectrum"),
                            ({"spectra", "spec_errs"}, "payne_visits"),
                            ({"w_array_0", "b_array_0"}, "payne_emulator"),
                            ({"wavelength"}, "payne_wavelength"),
                            ({"wave"}, "apvisit_wavelength"),
                            ({"pixels_cannon"}, "payne_pixel_mask"),
                            ({"apogee_mask"}, "payne_pixel_mask")):
        if needed <= keys:
            return product
    raise _unknown(p, f"an .npz archive with arrays {sorted(keys)}")


def _identify_text(p: Path) -> str:
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise _unknown(p, "a binary file that is not FITS, HDF5 or .npz")
    text = head.decode("utf-8", errors="replace")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.startswith("\\") or first.startswith("|") or p.suffix.lower() == ".ipac":
        return "tapas"
    if p.suffix.lower() == ".csv" and "transm" in first.lower():
        return "telluric_csv"
    return "text"


# -------------------------------------------------------------------------------- read/describe
def _readers() -> dict[str, Callable[..., Any]]:
    from . import apogee, fits1d, harps, payne, phoenix, telluric, text, tres

    return {
        "apogee_apstar": apogee.read_apstar, "apogee_apvisit": apogee.read_apvisit,
        "payne_spectrum": payne.read_payne_spectrum, "payne_visits": payne.read_payne_visits,
        "harps_e2ds": harps.read_e2ds, "harps_s1d": harps.read_s1d,
        "phoenix_flux": phoenix.read_phoenix, "tres_hdf5": tres.read_tres_hdf5,
        "fits1d": fits1d.read_fits1d, "fits_table": fits1d.read_fits1d,
        "text": text.read_text, "tapas": telluric.read_tapas,
        "telluric_csv": telluric.read_telluric_csv,
    }


def read(path: str | os.PathLike, **kwargs: Any) -> Spectrum | EchelleSpectrum:
    """Read any supported spectrum file, detecting the product (see :func:`identify`).

    Keyword arguments go to the product's reader (e.g. ``visit=`` for apStar, ``wave=`` and
    ``deblaze=`` for e2ds, ``medium=`` for text files). Auxiliary products raise
    FileFormatError saying what the file is and which function reads it.
    """
    product = identify(path)
    info = PRODUCTS[product]
    if not info.is_spectrum:
        raise FileFormatError(f"{path} is a {info.description} ({product}), not a spectrum; read "
                              f"it with {info.reader}, or describe it with "
                              "photosphere.io.describe / `photosphere info`")
    try:
        return _readers()[product](path, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise FileFormatError(f"read({path}): {product} reader {info.reader} does not take "
                                  f"that option ({exc})") from None
        raise


def is_spectrum_product(product: str) -> bool:
    return PRODUCTS[product].is_spectrum


def describe(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """A JSON-ready summary of any supported file: product, kind ('1d', 'echelle' or
    'auxiliary'), description, reader, shape, and ``wavelength_min``/``wavelength_max`` (Å) and
    ``medium`` (None for products without a wavelength axis).

    Spectra are read to compute it (``kwargs`` go to :func:`read`, e.g. ``medium=``);
    auxiliary products are summarised without building spectra.
    """
    product = identify(path)
    info = PRODUCTS[product]
    base = {"product": product, "kind": "spectrum" if info.is_spectrum else "auxiliary",
            "description": info.description, "reader": info.reader}
    if info.is_spectrum:
        base.update(describe_spectrum(read(path, **kwargs)))
        return base
    base.update(_describe_auxiliary(product, Path(path)))
    base.setdefault("wavelength_min", None)
    base.setdefault("wavelength_max", None)
    base.setdefault("medium", None)
    return base


def describe_spectrum(spec: Spectrum | EchelleSpectrum) -> dict[str, Any]:
    """The ``photosphere info`` fields of a spectrum."""
    lo, hi = spec.wavelength_range
    meta = spec.meta
    snr = meta.snr if meta.snr is not None else spec.median_snr()
    echelle = isinstance(spec, EchelleSpectrum)
    return {
        "kind": "echelle" if echelle else "1d",
        "instrument": meta.instrument, "object": meta.object_name,
        "wavelength_min": lo, "wavelength_max": hi, "medium": spec.medium,
        "shape": list(spec.flux.shape), "n_orders": spec.n_orders if echelle else 1,
        "row_kind": str(meta.extra.get("row_kind", "order")) if echelle else None,
        "median_snr": snr, "masked_fraction": spec.masked_fraction,
        "barycentric_correction_kms": meta.barycentric_correction,
        "flux_unit": spec.flux_unit, "source": meta.source,
    }


def _describe_auxiliary(product: str, p: Path) -> dict[str, Any]:
    from . import apogee, harps, payne, phoenix, telluric

    if product == "apogee_allstar":
        with open_fits_lazy(p) as hdul:  # headers only: DR17 allStar is several GB
            h1 = hdul[1].header
            n_rows = int(header_value(h1, "NAXIS2", 0) or 0)
            n_cols = int(header_value(h1, "TFIELDS", 0) or 0)
            columns = [str(header_value(h1, f"TTYPE{i}")) for i in range(1, n_cols + 1)]
        return {"shape": [n_rows], "n_rows": n_rows, "n_columns": n_cols,
                "columns": columns[:60]}
    if product == "apogee_rvsynthgrid":
        grid = apogee.read_rv_synthgrid(p)
        return {"shape": list(grid.flux.shape), "n_spectra": len(grid),
                "wavelength_min": float(grid.wavelength.min()),
                "wavelength_max": float(grid.wavelength.max()), "medium": grid.medium,
                "labels": {k: [float(v.min()), float(v.max())] for k, v in grid.labels.items()}}
    if product in ("harps_wave", "harps_blaze"):
        out = harps.describe_calibration(p)
        out.pop("product", None)
        out.pop("description", None)
        return out
    if product == "phoenix_wave":
        out = phoenix.describe_wave_file(p)
        out.pop("product", None)
        out.pop("description", None)
        return out
    if product == "lblrtm_grid":
        grid = telluric.read_lblrtm_grid(p)
        return {"shape": list(grid.transmission.shape), "species": grid.species,
                "wavelength_min": float(grid.wavelength.min()),
                "wavelength_max": float(grid.wavelength.max()), "medium": grid.medium,
                "airmass": grid.airmass.tolist(), "scale": grid.scale.tolist()}
    arrays = payne.read_payne_auxiliary(p)
    out: dict[str, Any] = {"arrays": {k: list(v.shape) for k, v in arrays.items()}}
    if product == "payne_emulator":
        out["shape"] = list(arrays["w_array_0"].shape)
        out["n_pixels"] = int(arrays["b_array_1"].shape[0])
        out["label_min"] = arrays["x_min"].tolist() if "x_min" in arrays else None
        out["label_max"] = arrays["x_max"].tolist() if "x_max" in arrays else None
    elif product in ("payne_wavelength", "apvisit_wavelength"):
        w = arrays["wavelength" if product == "payne_wavelength" else "wave"]
        out.update(shape=list(w.shape), wavelength_min=float(w.min()),
                   wavelength_max=float(w.max()), medium="vacuum")
    else:
        key = "pixels_cannon" if "pixels_cannon" in arrays else "apogee_mask"
        m = arrays[key]
        out.update(shape=list(m.shape), n_true=int(np.sum(m)))
    if product in ("payne_emulator", "payne_pixel_mask") and \
            (p.parent / payne.WAVELENGTH_FILE).exists():
        # defined on the ASPCAP grid: report its range when the companion grid is beside it
        w = payne.payne_wavelength(p)
        out.update(wavelength_min=float(w.min()), wavelength_max=float(w.max()), medium="vacuum")
    return out
