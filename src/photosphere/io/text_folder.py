"""A spectrum stored as a folder of three one-column text files (the keckspec / Cannon layout):

* ``wavelength*.txt`` (or ``wave*.txt``): wavelengths in Å,
* ``flux*.txt``: flux,
* ``ivar*.txt`` (inverse variance, σ = 1/√ivar) or ``sigma*.txt`` / ``err*.txt`` (σ).

The files hold one value per line and the same number of lines. When the wavelengths restart
at regular intervals (echelle orders written one after another, e.g. 16 × 4021 px for HIRES),
the spectrum is an :class:`~photosphere.EchelleSpectrum` with the orders sorted blue to red;
otherwise a 1D :class:`~photosphere.Spectrum`. ``*_flat*`` names (keckspec's continuum-flattened
spectra) mark the flux as normalised. The files do not record air/vacuum: air is assumed for
optical wavelengths unless ``medium=`` says.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, MissingFileError
from ..spectrum import EchelleSpectrum, Spectrum, SpectrumMeta
from ._common import resolve_medium, to_angstrom
from ._instrument import instrument_extras
from .text import build_1d

#: Role -> file-name prefixes (lower case) that fill it, in order of preference.
ROLES = {"wavelength": ("wavelength", "wave", "lambda"), "flux": ("flux",),
         "ivar": ("ivar", "invvar", "inverse_variance"), "sigma": ("sigma", "err", "error")}


def folder_files(folder: Path) -> dict[str, Path]:
    """The role files found in ``folder`` (``wavelength``, ``flux``, ``ivar`` or ``sigma``)."""
    found: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and
                   p.suffix.lower() in (".txt", ".dat", ".csv", ".asc"))
    for role, prefixes in ROLES.items():
        for p in files:
            if role not in found and p.name.lower().startswith(prefixes):
                found[role] = p
    return found


def is_text_folder(folder: Path) -> bool:
    found = folder_files(folder)
    return "wavelength" in found and "flux" in found


def _column(path: Path, what: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            values = np.loadtxt(path, comments="#", ndmin=1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{what}: {path.name} is not a column of numbers ({exc}); each "
                              "file holds one value per line") from None
    if values.ndim != 1:
        raise FileFormatError(f"{what}: {path.name} has {values.shape[1]} columns; each file "
                              "of a three-file spectrum holds one value per line")
    return values


def read_text_folder(path: str | os.PathLike, *, medium: str | None = None,
                     flux_unit: str | None = None) -> Spectrum | EchelleSpectrum:
    """Read the three-file text spectrum in folder ``path`` (see the module docstring)."""
    folder = Path(path).expanduser()
    what = f"read_text_folder({folder})"
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder; a three-file text spectrum is the "
                               "folder holding wavelength*.txt, flux*.txt and ivar*.txt")
    found = folder_files(folder)
    missing = [r for r in ("wavelength", "flux") if r not in found]
    if missing or not ({"ivar", "sigma"} & set(found)):
        names = sorted(p.name for p in folder.iterdir())[:12]
        raise FileFormatError(
            f"{what}: a three-file text spectrum needs wavelength*.txt, flux*.txt and "
            f"ivar*.txt (or sigma*.txt); found {names or 'no files'}. Put the three one-column "
            "files in the folder, or pass the path of a single spectrum file")
    wave = to_angstrom(_column(found["wavelength"], what), None, what=what)
    flux = _column(found["flux"], what)
    noise_role = "ivar" if "ivar" in found else "sigma"
    noise = _column(found[noise_role], what)
    if not wave.size == flux.size == noise.size:
        raise FileFormatError(f"{what}: {found['wavelength'].name} has {wave.size} lines, "
                              f"{found['flux'].name} {flux.size}, {found[noise_role].name} "
                              f"{noise.size}; the three files must have one line per pixel")
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(noise > 0, 1.0 / np.sqrt(noise), np.inf) if noise_role == "ivar" \
            else np.where(noise > 0, noise, np.inf)
    med, medium_extra = resolve_medium(medium, None, wave, what=what)
    instrument, extra = instrument_extras(None, folder)
    normalised = any("flat" in p.name.lower() for p in (found["flux"], found["wavelength"]))
    unit = flux_unit or ("normalized" if normalised else "arbitrary")
    extra.update(medium_extra)
    extra.update({"product": "text_folder", "files": {r: p.name for r, p in found.items()},
                  "sigma_from": f"{found[noise_role].name} ({noise_role})"})
    meta = SpectrumMeta(instrument=instrument, source=str(folder), extra=extra)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(wave) <= 0) + 1])
    lengths = np.diff(np.concatenate([starts, [wave.size]]))
    if starts.size > 1 and np.all(lengths == lengths[0]) and lengths[0] >= 2:
        shape = (starts.size, int(lengths[0]))
        w, f, s = (a.reshape(shape) for a in (wave, flux, sigma))
        rows = np.argsort(w[:, 0])
        meta = meta.replace(extra={**meta.extra, "row_kind": "order"})
        try:
            return EchelleSpectrum.from_arrays(w[rows], f[rows], s[rows], mask_nonfinite=True,
                                               medium=med, flux_unit=unit, meta=meta)
        except ValueError as exc:
            raise FileFormatError(f"{what}: {exc}") from None
    if starts.size > 1:
        order = np.argsort(wave, kind="stable")
        wave, flux, sigma = wave[order], flux[order], sigma[order]
    return build_1d(wave, flux, sigma, med, unit, what, meta)
