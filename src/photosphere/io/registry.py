"""Product detection and dispatch: :func:`identify`, :func:`read`, :func:`describe`.

Every product photosphere knows is ONE entry of :data:`PRODUCT_TABLE`: its name, what it is,
the container it comes in (FITS, HDF5, .npz, text or a folder), the function that recognises
it from the file's content (HDU layout, header keys, dataset names, columns; the file name only
breaks ties, e.g. HARPS calibration files) and the function that reads it. Adding a reader is
adding one entry. Entries are tried in table order within their container, so a specific
product sits before the generic one that would also match (iSpec, MILES, HIRES before
``fits1d``). Spectrum products go through :func:`read`; auxiliary products (catalogues, model
grids, calibration files, emulator weights, pixel masks) are summarised by :func:`describe`,
and :func:`read` refuses them with a :class:`FileFormatError` naming the function that reads
them.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, MissingFileError, UnitsError
from ..spectrum import EchelleSpectrum, Spectrum
from . import _summaries as summaries
from . import (
    apogee,
    csv_table,
    fits1d,
    harps,
    hires,
    iraf_multispec,
    ispec,
    miles,
    payne,
    phoenix,
    telluric,
    text,
    text_folder,
    tres,
)
from ._common import check_path, fits_shape, header_value, open_fits_lazy

_HARPS_NAME = re.compile(r"^HARPS.*_(e2ds|s1d|wave|blaze)_[AB]\.fits$", re.I)
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


# ------------------------------------------------------------------------------------ probes
@dataclass
class Probe:
    """What identification may look at: the path and, per container, headers or names.

    FITS: ``headers``, ``shapes`` (numpy order, from NAXISn), ``is_table`` per HDU and the
    open ``hdul`` (data read only on demand); HDF5/.npz: ``keys``; text: ``first_line``.
    ``memo`` caches values several identifiers share.
    """

    path: Path
    headers: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    is_table: list = field(default_factory=list)
    hdul: Any = None
    keys: frozenset = frozenset()
    first_line: str = ""
    memo: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name.lower()

    @property
    def h0(self):
        return self.headers[0]

    @property
    def n0(self) -> int:
        return len(self.shapes[0])

    def columns(self, hdu: int = 1) -> set[str]:
        if len(self.headers) <= hdu or not self.is_table[hdu]:
            return set()
        h = self.headers[hdu]
        n = int(header_value(h, "TFIELDS", 0) or 0)
        return {str(header_value(h, f"TTYPE{i}", "")).strip().lower() for i in range(1, n + 1)}


# ------------------------------------------------------------------------- identify helpers
def _eso_drs(pr: Probe) -> bool:
    return any(k.startswith(("ESO DRS", "TNG DRS")) for k in pr.h0.keys())


def _harps_2d(pr: Probe) -> str:
    """e2ds, wave or blaze: by the archive file name, else by the values."""
    if "harps_2d" not in pr.memo:
        pr.memo["harps_2d"] = _harps_2d_product(pr.name, pr.hdul[0].data)
    return pr.memo["harps_2d"]


def _harps_2d_product(name: str, data: np.ndarray) -> str:
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


def _harps(product: str) -> Callable[[Probe], bool]:
    def match(pr: Probe) -> bool:
        if _eso_drs(pr) and pr.n0 in (1, 2):
            return (product == "harps_s1d") if pr.n0 == 1 else _harps_2d(pr) == product
        # the archive name decides only where no content test does (no DRS keys, no WCS)
        m = _HARPS_NAME.match(pr.path.name)
        return m is not None and pr.n0 in (1, 2) and not _fits1d(pr) and \
            f"harps_{m.group(1).lower()}" == product
    return match


def _apvisit(pr: Probe) -> bool:
    return len(pr.shapes) >= 5 and ("FIBERID" in pr.h0 or pr.name.startswith("apvisit")) and \
        len(pr.shapes[1]) == 2 and pr.shapes[4] == pr.shapes[1]


def _rvsynthgrid(pr: Probe) -> bool:
    if len(pr.headers) < 2 or pr.is_table[1] or len(pr.shapes[1]) != 2:
        return False
    ctypes = " ".join(str(header_value(pr.headers[1], f"CTYPE{i}", "")) for i in (1, 2)).lower()
    return "spectrum" in ctypes and "wave" in ctypes


def _hires_orders(pr: Probe) -> bool:
    instrument = str(header_value(pr.h0, "INSTRUME", "") or "").upper()
    return instrument.startswith("HIRES") and len(pr.shapes) >= 3 and pr.n0 == 2 and \
        pr.shapes[0] == pr.shapes[1] == pr.shapes[2] and not any(pr.is_table[:3])


def _fits1d(pr: Probe) -> bool:
    if pr.n0 >= 1 and "CRVAL1" in pr.h0:
        return True
    return any(not t and len(s) == 1 and "CRVAL1" in h for h, s, t in
               zip(pr.headers[1:], pr.shapes[1:], pr.is_table[1:], strict=True))


def _fits_table(pr: Probe) -> bool:
    cols = pr.columns()
    return bool(cols & {"wavelength", "wave", "lambda", "loglam", "wl"} and
                cols & {"flux", "fl", "spectrum", "transmission", "transmittance"})


def _text_kind(pr: Probe) -> str:
    """tapas, telluric_csv, csv_table or text, from the first line and the suffix."""
    if "text" not in pr.memo:
        first, suffix = pr.first_line, pr.path.suffix.lower()
        if first.startswith(("\\", "|")) or suffix == ".ipac":
            kind = "tapas"
        elif suffix == ".csv" and "transm" in first.lower():
            kind = "telluric_csv"
        elif suffix in (".csv", ".tsv") and csv_table.header_names(pr.path) is not None:
            kind = "csv_table"
        else:
            kind = "text"
        pr.memo["text"] = kind
    return pr.memo["text"]


def _npz(*needed: str) -> Callable[[Probe], bool]:
    return lambda pr: set(needed) <= pr.keys


# ------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Product:
    """One file product: how to recognise it and how to read it.

    container: "fits", "hdf5", "npz", "text" or "folder". identify: True when a probed file
    is this product. read: the reader (spectra) or loader (auxiliary products). how: the call
    to show users for auxiliary products read with another product (default: ``read``'s name).
    summarise: the ``photosphere info`` fields of an auxiliary product.
    """

    name: str
    description: str
    container: str
    identify: Callable[[Probe], bool]
    read: Callable[..., Any]
    is_spectrum: bool = True
    how: str | None = None
    summarise: Callable[[Path], dict] | None = None

    @property
    def reader(self) -> str:
        """Dotted name of the function that reads this product (with how to call it)."""
        return self.how or f"{self.read.__module__}.{self.read.__name__}"


PRODUCT_TABLE: tuple[Product, ...] = (
    # ------------------------------------------------------------------ FITS, specific first
    Product("phoenix_flux", "PHOENIX-ACES HiRes model flux (needs the WAVE file)", "fits",
            lambda pr: "PHXTEFF" in pr.h0, phoenix.read_phoenix),
    Product("phoenix_wave", "PHOENIX-ACES wavelength grid (vacuum Å)", "fits",
            lambda pr: pr.name.startswith("wave_phoenix") and pr.n0 == 1, phoenix.read_phoenix,
            is_spectrum=False, how="photosphere.io.phoenix.read_phoenix(flux, wave_path=...)",
            summarise=summaries.without_identity(phoenix.describe_wave_file)),
    Product("harps_s1d", "HARPS/HARPS-N merged 1D spectrum (air, barycentric frame)", "fits",
            _harps("harps_s1d"), harps.read_s1d),
    Product("harps_e2ds", "HARPS/HARPS-N extracted echelle frame (air, observed frame)", "fits",
            _harps("harps_e2ds"), harps.read_e2ds),
    Product("harps_wave", "HARPS/HARPS-N wavelength solution (orders x pixels, air Å)", "fits",
            _harps("harps_wave"), harps.read_e2ds, is_spectrum=False,
            how="photosphere.io.harps.read_e2ds(e2ds, wave=...)",
            summarise=summaries.without_identity(harps.describe_calibration)),
    Product("harps_blaze", "HARPS/HARPS-N blaze function (orders x pixels)", "fits",
            _harps("harps_blaze"), harps.read_e2ds, is_spectrum=False,
            how="photosphere.io.harps.read_e2ds(e2ds, blaze=..., deblaze=True)",
            summarise=summaries.without_identity(harps.describe_calibration)),
    Product("apogee_apstar", "APOGEE apStar combined/visit spectra (vacuum, rest frame)", "fits",
            lambda pr: "NVISITS" in pr.h0 or pr.name.startswith("apstar"), apogee.read_apstar),
    Product("apogee_apvisit", "APOGEE apVisit spectrum, 3 chips x 4096 px (vacuum)", "fits",
            _apvisit, apogee.read_apvisit),
    Product("apogee_allstar", "APOGEE allStar catalogue (one row per star)", "fits",
            lambda pr: {"apogee_id", "aspcapflag"} <= pr.columns() or
            {"apogee_id", "teff"} <= pr.columns(), apogee.read_allstar, is_spectrum=False,
            how="photosphere.io.apogee.read_allstar (then select_allstar)",
            summarise=summaries.allstar),
    Product("hires_table", "SpecMatch-Emp HIRES spectrum table (s, w, serr; normalised, rest "
            "frame)", "fits", lambda pr: {"s", "w"} <= pr.columns(), hires.read_hires_table),
    Product("fits_table", "1D spectrum in a FITS binary table (wavelength, flux, uncertainty)",
            "fits", _fits_table, fits1d.read_fits1d),
    Product("lblrtm_grid", "LBLRTM telluric transmission grid (scale x airmass x wavelength)",
            "fits", lambda pr: pr.n0 == 3 and
            "AIRMASS" in str(header_value(pr.h0, "CTYPE2", "")).upper(),
            telluric.read_lblrtm_grid, is_spectrum=False, summarise=summaries.lblrtm),
    Product("apogee_rvsynthgrid", "grid of normalised synthetic APOGEE spectra (RV templates) "
            "with Teff/logg/[Fe/H] per spectrum", "fits", _rvsynthgrid,
            apogee.read_rv_synthgrid, is_spectrum=False, summarise=summaries.rvsynthgrid),
    Product("hires_orders", "Keck/HIRES order image, SpecMatch-Emp rj*.fits (counts, "
            "fractional σ, wavelengths; observed frame)", "fits", _hires_orders,
            hires.read_hires_orders),
    Product("iraf_multispec", "IRAF multispec echelle spectrum (dispersion in WAT2 keywords)",
            "fits", lambda pr: iraf_multispec.is_multispec(pr.h0),
            iraf_multispec.read_iraf_multispec),
    Product("miles", "MILES library star (flux-calibrated, FWHM 2.5 Å, air, rest frame)", "fits",
            lambda pr: str(header_value(pr.h0, "TPLLIB", "")).upper() == "MILES" and
            pr.n0 == 1, miles.read_miles),
    Product("ispec_fits", "1D FITS spectrum written by iSpec (the Gaia benchmark-star library "
            "format; CTYPE1 gives air/vacuum)", "fits",
            lambda pr: str(header_value(pr.h0, "ORIGIN", "")).lower() == "ispec" and
            pr.n0 == 1 and "CRVAL1" in pr.h0, ispec.read_ispec),
    Product("fits1d", "1D FITS spectrum with a wavelength WCS", "fits", _fits1d,
            fits1d.read_fits1d),
    # -------------------------------------------------------------------------- HDF5, .npz
    Product("tres_hdf5", "TRES echelle spectrum in HDF5 (wls/fls/sigmas; air)", "hdf5",
            lambda pr: {"wls", "fls"} <= pr.keys, tres.read_tres_hdf5),
    Product("payne_spectrum", "The Payne APOGEE combined spectrum on the 7214-px ASPCAP grid",
            "npz", _npz("spectrum", "spec_err"), payne.read_payne_spectrum),
    Product("payne_visits", "The Payne APOGEE visit spectra on the 7214-px ASPCAP grid", "npz",
            _npz("spectra", "spec_errs"), payne.read_payne_visits),
    Product("payne_emulator", "The Payne neural-network emulator weights (per-pixel network, "
            "7214 px; labels Teff, logg, [Fe/H], [alpha/Fe], vmacro)", "npz",
            _npz("w_array_0", "b_array_0"), payne.read_payne_auxiliary, is_spectrum=False,
            summarise=summaries.payne_auxiliary("payne_emulator")),
    Product("payne_wavelength", "ASPCAP 7214-px wavelength grid (vacuum Å)", "npz",
            _npz("wavelength"), payne.read_payne_auxiliary, is_spectrum=False,
            summarise=summaries.payne_auxiliary("payne_wavelength")),
    Product("apvisit_wavelength", "apVisit 3x4096-px wavelength grid (vacuum Å)", "npz",
            _npz("wave"), payne.read_payne_auxiliary, is_spectrum=False,
            summarise=summaries.payne_auxiliary("apvisit_wavelength")),
    Product("payne_pixel_mask", "boolean pixel mask on the 7214-px ASPCAP grid", "npz",
            lambda pr: "pixels_cannon" in pr.keys or "apogee_mask" in pr.keys,
            payne.read_payne_auxiliary, is_spectrum=False,
            summarise=summaries.payne_auxiliary("payne_pixel_mask")),
    # ------------------------------------------------------------------------- text, folders
    Product("tapas", "TAPAS atmospheric transmission (IPAC table)", "text",
            lambda pr: _text_kind(pr) == "tapas", telluric.read_tapas),
    Product("telluric_csv", "TelFit telluric transmission table (CSV)", "text",
            lambda pr: _text_kind(pr) == "telluric_csv", telluric.read_telluric_csv),
    Product("csv_table", "delimited table with named columns (wavelength with its unit, "
            "flux[, err]); .csv/.tsv", "text", lambda pr: _text_kind(pr) == "csv_table",
            csv_table.read_csv_table),
    Product("text", "2/3-column text spectrum", "text", lambda pr: _text_kind(pr) == "text",
            text.read_text),
    Product("text_folder", "three one-column text files in a folder: wavelength, flux, "
            "inverse variance (keckspec layout)", "folder",
            lambda pr: text_folder.is_text_folder(pr.path), text_folder.read_text_folder),
)

#: The products by name (a view of :data:`PRODUCT_TABLE`).
PRODUCTS: dict[str, Product] = {p.name: p for p in PRODUCT_TABLE}


# ------------------------------------------------------------------------------- identify
def _is_magic(p: Path, magic: bytes) -> bool:
    with open(p, "rb") as fh:
        return fh.read(len(magic)) == magic


def _unknown(p: Path, what: str) -> FileFormatError:
    known = ", ".join(sorted(PRODUCTS))
    return FileFormatError(f"{p}: {what}; photosphere reads these products: {known}. For a "
                           "generic spectrum write a 1D FITS with a wavelength WCS or a "
                           "2/3-column text file (wavelength, flux[, sigma])")


def _first_match(probe: Probe, container: str) -> str | None:
    for product in PRODUCT_TABLE:
        if product.container == container and product.identify(probe):
            return product.name
    return None


def identify(path: str | os.PathLike) -> str:
    """The product name of a file or folder (a key of :data:`PRODUCTS`).

    Raises MissingFileError for a missing path, FileFormatError for empty, corrupt or
    unrecognised files (naming the products that are supported).
    """
    given = Path(path).expanduser()
    if given.is_dir():
        return _identify_folder(given)
    p = check_path(path)
    name = p.name.lower()
    if _is_magic(p, b"SIMPLE  =") or name.endswith(_FITS_SUFFIXES):
        return _identify_fits(p)
    if _is_magic(p, b"\x89HDF\r\n\x1a\n") or name.endswith(_HDF5_SUFFIXES):
        return _identify_hdf5(p)
    if _is_magic(p, b"PK\x03\x04") or name.endswith(".npz"):
        keys = frozenset(payne.load_npz(p))
        found = _first_match(Probe(p, keys=keys), "npz")
        if found is None:
            raise _unknown(p, f"an .npz archive with arrays {sorted(keys)}")
        return found
    return _identify_text(p)


def _identify_folder(folder: Path) -> str:
    found = _first_match(Probe(folder), "folder")
    if found:
        return found
    names = sorted(q.name for q in folder.iterdir())[:12]
    raise FileFormatError(f"{folder} is a folder without a spectrum photosphere recognises "
                          f"(it holds {names or 'nothing'}); a three-file text spectrum needs "
                          "wavelength*.txt, flux*.txt and ivar*.txt (or sigma*.txt) in it; "
                          "otherwise pass the path of a spectrum file inside it")


def _identify_fits(p: Path) -> str:
    """Identify from headers and NAXISn (data only where a test needs it: HARPS 2D files)."""
    with open_fits_lazy(p) as hdul:
        headers = [hdu.header for hdu in hdul]
        probe = Probe(p, headers=headers, shapes=[fits_shape(h) for h in headers],
                      is_table=[not hdu.is_image for hdu in hdul], hdul=hdul)
        found = _first_match(probe, "fits")
    if found:
        return found
    raise _unknown(p, "a FITS file of a layout photosphere does not recognise")


def _identify_hdf5(p: Path) -> str:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            keys = frozenset(f.keys())
    except OSError as exc:
        raise FileFormatError(f"{p} is not a readable HDF5 file ({exc}); it may be truncated: "
                              "fetch it again") from None
    found = _first_match(Probe(p, keys=keys), "hdf5")
    if found is None:
        raise _unknown(p, f"an HDF5 file with datasets {sorted(keys)}")
    return found


def _identify_text(p: Path) -> str:
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise _unknown(p, "a binary file that is not FITS, HDF5 or .npz")
    text_head = head.decode("utf-8", errors="replace")
    first = text_head.lstrip().splitlines()[0] if text_head.strip() else ""
    return _first_match(Probe(p, first_line=first), "text") or "text"


# -------------------------------------------------------------------------------- read/describe
@functools.cache
def _keywords(reader: Callable[..., Any]) -> frozenset[str]:
    params = inspect.signature(reader).parameters.values()
    if any(q.kind is q.VAR_KEYWORD for q in params):
        return frozenset({"*"})
    return frozenset(q.name for q in params)


def read(path: str | os.PathLike, *, medium: str | None = None,
         **kwargs: Any) -> Spectrum | EchelleSpectrum:
    """Read any supported spectrum file (or three-file folder), detecting the product.

    medium: 'air' or 'vacuum', the frame of the file's wavelengths where the file does not
    record it (by default such files are taken as air for optical wavelengths, and
    ``meta.extra['medium_assumed']`` says so). For products whose frame is fixed by their
    pipeline (APOGEE vacuum, HARPS air ...) a contradicting ``medium`` raises UnitsError.
    Other keyword arguments go to the product's reader (e.g. ``wave=``/``blaze=``/
    ``deblaze=`` for e2ds). Auxiliary products raise FileFormatError saying what the file is
    and which function reads it.
    """
    product = identify(path)
    info = PRODUCTS[product]
    if not info.is_spectrum:
        raise FileFormatError(f"{path} is a {info.description} ({product}), not a spectrum; read "
                              f"it with {info.reader}, or describe it with "
                              "photosphere.io.describe / `photosphere info`")
    accepted = _keywords(info.read)
    unknown = sorted(k for k in kwargs if k not in accepted and "*" not in accepted)
    if unknown:
        raise FileFormatError(f"read({path}): the {product} reader {info.reader} does not take "
                              f"{', '.join(unknown)}; it takes "
                              f"{', '.join(sorted(accepted - {'path'})) or 'no options'}")
    if medium is not None and ("medium" in accepted or "*" in accepted):
        return info.read(path, medium=medium, **kwargs)
    spectrum = info.read(path, **kwargs)
    if medium is not None and spectrum.medium != medium:
        raise UnitsError(f"{path}: a {product} file has {spectrum.medium} wavelengths (fixed by "
                         f"its pipeline), so medium={medium!r} (--medium {medium}) contradicts "
                         "it; leave it out (convert with photosphere.ops.airvac if you need "
                         f"{medium} wavelengths)")
    return spectrum


def is_spectrum_product(product: str) -> bool:
    return PRODUCTS[product].is_spectrum


def describe(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """A JSON-ready summary of any supported file: product, kind ('1d', 'echelle' or
    'auxiliary'), description, reader, shape, ``wavelength_min``/``wavelength_max`` (Å),
    ``medium`` (None for products without a wavelength axis) and, for spectra, the units and
    frames: ``wavelength_unit``, ``medium_assumed``/``medium_source``, ``flux_unit``/
    ``normalized``, ``frame``, ``resolution``/``resolution_source``.

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
    if info.summarise is None:
        raise MissingFileError(f"{path}: no summary is defined for {product}")
    base.update(info.summarise(Path(path)))
    base.setdefault("wavelength_min", None)
    base.setdefault("wavelength_max", None)
    base.setdefault("medium", None)
    return base


def _frame(extra) -> str | None:
    if extra.get("frame"):
        return str(extra["frame"])
    if extra.get("rest_frame"):
        return f"rest ({extra['rest_frame']})"
    return None


def describe_spectrum(spec: Spectrum | EchelleSpectrum) -> dict[str, Any]:
    """The ``photosphere info`` fields of a spectrum: coverage, shape, S/N, and the units and
    frames (``wavelength_unit`` always Å here, the file's unit in ``wavelength_unit_in_file``
    when it was converted; ``medium`` with ``medium_assumed``/``medium_source``; ``flux_unit``
    and ``normalized``; velocity ``frame`` (rest / observed / barycentric, None when unknown);
    ``resolution`` R with ``resolution_source``)."""
    lo, hi = spec.wavelength_range
    meta = spec.meta
    extra = meta.extra
    snr = meta.snr if meta.snr is not None else spec.median_snr()
    echelle = isinstance(spec, EchelleSpectrum)
    return {
        "kind": "echelle" if echelle else "1d",
        "instrument": meta.instrument, "instrument_source": extra.get("instrument_source"),
        "object": meta.object_name,
        "wavelength_min": lo, "wavelength_max": hi, "wavelength_unit": "Angstrom",
        "wavelength_unit_in_file": extra.get("wavelength_unit_in_file"),
        "medium": spec.medium, "medium_assumed": bool(extra.get("medium_assumed", False)),
        "medium_source": extra.get("medium_source"),
        "frame": _frame(extra),
        "resolution": extra.get("resolution"), "resolution_source": extra.get("resolution_source"),
        "shape": list(spec.flux.shape), "n_orders": spec.n_orders if echelle else 1,
        "row_kind": str(extra.get("row_kind", "order")) if echelle else None,
        "median_snr": snr, "masked_fraction": spec.masked_fraction,
        "barycentric_correction_kms": meta.barycentric_correction,
        "flux_unit": spec.flux_unit, "normalized": spec.flux_unit == "normalized",
        "source": meta.source,
    }
