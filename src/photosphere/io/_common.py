"""Shared plumbing for the readers: checked file opening, safe header access, units, media.

Every reader goes through :func:`check_path` and :func:`open_fits` so that a missing, empty,
truncated or corrupt file surfaces as a typed :class:`~photosphere.errors.PhotosphereError`
naming the file and the fix, never as a traceback from inside astropy.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, MissingFileError, UnitsError

#: Air/vacuum frame of the wavelengths written by known instruments' pipelines.
INSTRUMENT_MEDIUM = {
    "APOGEE": "vacuum",
    "HPF": "vacuum",
    "IGRINS": "vacuum",
    "HARPS": "air",
    "HARPS-N": "air",
    "HARPN": "air",
    "TRES": "air",
    "UVES": "air",
    "FEROS": "air",
}

_LENGTH_UNITS = {
    "angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "aa": 1.0, "å": 1.0, "ang": 1.0,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0,
    "um": 1e4, "micron": 1e4, "microns": 1e4, "µm": 1e4, "micrometer": 1e4,
    "m": 1e10, "cm": 1e8, "mm": 1e7,
}

#: Wavelength values (in Å) that we accept as Å when a file gives no unit at all.
PLAUSIBLE_ANGSTROM = (900.0, 400_000.0)


def check_path(path: str | os.PathLike) -> Path:
    """The path as a :class:`Path`, refusing missing files, directories and empty files."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(f"{p} does not exist; check the path (relative paths are taken "
                               f"from {Path.cwd()})")
    if p.is_dir():
        raise FileFormatError(f"{p} is a directory; pass the path of a spectrum file inside it")
    if p.stat().st_size == 0:
        raise FileFormatError(f"{p} is empty (0 bytes); the copy or download was interrupted: "
                              "fetch the file again")
    return p


def _open_checked(p: Path, *, lazy: bool) -> Any:
    """fits.open with astropy failures and truncation warnings turned into FileFormatError."""
    from astropy.io import fits

    hdul = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(p, memmap=lazy, lazy_load_hdus=False)
            if not lazy:
                for hdu in hdul:  # force the data in now, while warnings are being recorded
                    _ = hdu.data
        except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            if hdul is not None:
                hdul.close()
            raise FileFormatError(f"{p} is not a readable FITS file ({exc}); it may be truncated "
                                  "or corrupt: download it again") from None
    bad = [str(w.message) for w in caught
           if any(s in str(w.message).lower() for s in ("truncat", "corrupt", "unexpected end"))]
    if bad:
        hdul.close()
        raise FileFormatError(f"{p} is truncated or corrupt ({bad[0]}); download it again")
    return hdul


@contextlib.contextmanager
def open_fits(path: str | os.PathLike) -> Iterator[Any]:
    """Open a FITS file with every HDU loaded, converting astropy failures to FileFormatError.

    Truncated files (astropy warns and pads) and unparsable files raise FileFormatError.
    """
    hdul = _open_checked(check_path(path), lazy=False)
    try:
        yield hdul
    finally:
        hdul.close()


@contextlib.contextmanager
def open_fits_lazy(path: str | os.PathLike) -> Iterator[Any]:
    """Open a FITS file memory-mapped, headers only (for identification and big tables).

    Use inside the ``with`` block only; data read from it is backed by the open file.
    """
    hdul = _open_checked(check_path(path), lazy=True)
    try:
        yield hdul
    finally:
        hdul.close()


def fits_shape(header: Any) -> tuple[int, ...]:
    """Numpy-order shape of an HDU from its NAXISn cards (no data read)."""
    n = int(header_value(header, "NAXIS", 0) or 0)
    return tuple(int(header_value(header, f"NAXIS{i}", 0) or 0) for i in range(n, 0, -1))


def header_value(header: Any, key: str, default: Any = None) -> Any:
    """``header[key]`` or ``default``; unparsable cards (common in ESO headers) count as absent."""
    try:
        value = header[key]
    except Exception:  # KeyError, VerifyError on malformed cards
        return default
    if isinstance(value, str):
        value = value.strip()
    return value


def header_float(header: Any, key: str) -> float | None:
    value = header_value(header, key)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def angstrom_per_unit(unit: str | None) -> float | None:
    """Å per ``unit`` (a FITS/astropy length unit string), None when unknown or absent."""
    if unit is None:
        return None
    key = str(unit).strip().lower()
    if not key:
        return None
    if key in _LENGTH_UNITS:
        return _LENGTH_UNITS[key]
    try:
        from astropy import units as u

        q = u.Unit(str(unit).strip())
        if q.physical_type == "length":
            return float(q.to(u.AA))
    except (ValueError, TypeError):
        return None
    return None


def to_angstrom(wavelength: np.ndarray, unit: str | None, *, what: str,
                unit_argument: str = "wavelength_unit") -> np.ndarray:
    """Convert ``wavelength`` in ``unit`` to Å; with no unit, accept only Å-looking values."""
    factor = angstrom_per_unit(unit)
    if factor is not None:
        return np.asarray(wavelength, float) * factor
    if unit is not None and str(unit).strip():
        raise UnitsError(f"{what}: wavelength unit {unit!r} is not a length unit; pass "
                         f"{unit_argument}='Angstrom' (or 'nm', 'um')")
    w = np.asarray(wavelength, float)
    finite = w[np.isfinite(w)]
    if finite.size and PLAUSIBLE_ANGSTROM[0] <= finite.min() and finite.max() <= \
            PLAUSIBLE_ANGSTROM[1]:
        return w
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
    raise UnitsError(f"{what}: wavelengths {lo:g}-{hi:g} have no unit and are not plausible "
                     f"Å values; pass {unit_argument}='nm' (or 'um', 'Angstrom')")


def medium_from_text(text: str | None) -> str | None:
    """'air' / 'vacuum' when a header string says so (``AWAV``, ``vac``, ``Log AIR`` ...).

    FITS ``CTYPE`` values follow WCS Paper III: ``WAVE*`` vacuum, ``AWAV*`` air.
    """
    if not text:
        return None
    t = str(text).strip().lower()
    if t == "awav" or t.startswith("awav-"):
        return "air"
    if t == "wave" or t.startswith("wave-"):
        return "vacuum"
    has_air = re.search(r"\bair\b", t) is not None
    has_vac = re.search(r"\bvac(uum)?\b", t) is not None
    if has_air != has_vac:
        return "air" if has_air else "vacuum"
    return None


def instrument_medium(instrument: str | None) -> str | None:
    if not instrument:
        return None
    return INSTRUMENT_MEDIUM.get(str(instrument).strip().upper())


#: Below this wavelength (Å) the IAU convention is vacuum wavelengths (UV, space spectra).
AIR_MIN_ANGSTROM = 2000.0
#: Spectra lying wholly above this wavelength (Å) are near-infrared, where pipelines (APOGEE,
#: IGRINS, HPF, CARMENES-NIR) publish vacuum wavelengths.
NEAR_IR_MIN_ANGSTROM = 10000.0


def assumed_medium(wavelength: np.ndarray) -> tuple[str, str]:
    """(medium, note) to assume for wavelengths (Å) whose file does not record the frame.

    Ground-based optical spectrographs publish air wavelengths (the IAU convention above
    2000 Å), so optical spectra are taken as air; spectra wholly below 2000 Å (UV) or wholly
    above 10 000 Å (near-infrared pipelines) as vacuum.
    """
    w = np.asarray(wavelength, float)
    finite = w[np.isfinite(w)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
    if hi < AIR_MIN_ANGSTROM:
        return "vacuum", (f"the file does not record air/vacuum; vacuum assumed (ultraviolet, "
                          f"below {AIR_MIN_ANGSTROM:.0f} Å); pass medium= (--medium) to override")
    if lo >= NEAR_IR_MIN_ANGSTROM:
        return "vacuum", ("the file does not record air/vacuum; vacuum assumed (near-infrared "
                          "pipelines publish vacuum wavelengths); pass medium= (--medium) to "
                          "override")
    return "air", ("the file does not record air/vacuum; air assumed (ground-based optical "
                   "spectrographs publish air wavelengths); pass medium= (--medium) to override")


def resolve_medium(requested: str | None, recorded: str | None, wavelength: np.ndarray, *,
                   what: str, recorded_source: str | None = None) -> tuple[str, dict[str, Any]]:
    """The air/vacuum frame of a spectrum and its provenance for ``meta.extra``.

    requested: the caller's ``medium=`` (wins); recorded: what the file says (from
    ``recorded_source``); otherwise :func:`assumed_medium`. Returns (medium, extras) with
    ``medium_assumed`` (bool) and ``medium_source`` (str).
    """
    if requested is not None:
        return require_medium(requested, what), {
            "medium_assumed": False, "medium_source": f"given by the caller (medium={requested!r})"}
    if recorded is not None:
        return require_medium(recorded, what), {
            "medium_assumed": False, "medium_source": recorded_source or "recorded in the file"}
    medium, note = assumed_medium(wavelength)
    return medium, {"medium_assumed": True, "medium_source": note}


def require_medium(medium: str | None, what: str) -> str:
    if medium is None:
        raise UnitsError(f"{what}: the air/vacuum frame of the wavelengths is not recorded in the "
                         "file; pass medium='air' or medium='vacuum' (on the command line: "
                         "--medium air|vacuum)")
    if medium not in ("air", "vacuum"):
        raise UnitsError(f"{what}: medium={medium!r} is not known; pass medium='air' or "
                         "medium='vacuum'")
    return medium


def finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
