"""Telluric transmission products.

* TAPAS ``.ipac`` tables (``wavelength`` in nm, ``transmittance``), read as a :class:`Spectrum`
  with ``flux_unit='transmission'``. TAPAS writes vacuum wavelengths unless the request asked for
  air; the header does not record it, so vacuum is assumed (``meta.extra['medium_assumed']``).
* TelFit ``.csv`` tables (``wavelength_A``, ``transmission``). TelFit models are computed by
  LBLRTM on a vacuum wavenumber grid; the HPF template files are on HPF's vacuum frame.
* APOGEE LBLRTM grids (``apogee_lblrtm_{H2O,CO2,CH4}.fits``): a (n_scale, n_airmass, n_pix)
  cube on a linear grid CRVAL1/CDELT1 (Å, vacuum as in the APOGEE pipeline), airmass axis 2 and
  column-scaling axis 3. These are grids, not spectra: :func:`read_lblrtm_grid`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError
from ..spectrum import Spectrum, SpectrumMeta
from ._common import check_path, header_float, header_value, open_fits, to_angstrom
from .text import build_1d

TRANSMISSION = "transmission"


def read_tapas(path: str | os.PathLike, *, medium: str = "vacuum") -> Spectrum:
    """A TAPAS ``.ipac`` transmission spectrum (wavelengths converted from nm to Å)."""
    from astropy.io import ascii as ascii_io

    p = check_path(path)
    what = f"read_tapas({p})"
    try:
        table = ascii_io.read(p, format="ipac")
    except Exception as exc:  # astropy raises many kinds for malformed tables
        raise FileFormatError(f"{what}: not a readable IPAC table ({exc})") from None
    names = {n.lower(): n for n in table.colnames}
    if "wavelength" not in names or not ({"transmittance", "transmission"} & set(names)):
        raise FileFormatError(f"{what}: expected columns wavelength and transmittance, found "
                              f"{table.colnames}")
    wcol = names["wavelength"]
    tcol = names.get("transmittance") or names["transmission"]
    unit = table[wcol].unit.to_string() if table[wcol].unit is not None else None
    wave = to_angstrom(np.asarray(table[wcol], float), unit, what=what)
    keywords = {k: v["value"] if isinstance(v, dict) else v
                for k, v in table.meta.get("keywords", {}).items()}
    berv = keywords.get("baryvcor")
    extra = {"product": "TAPAS transmission", "medium_assumed": True,
             "airmass": _float(keywords.get("airmass")),
             "site": keywords.get("telescop"), "date_obs": keywords.get("date-obs"),
             "barycentric_velocity_kms": _float(berv),
             "barycentric_done": keywords.get("barydone")}
    return build_1d(wave, np.asarray(table[tcol], float), None, medium, TRANSMISSION, what,
                    SpectrumMeta(instrument="TAPAS", source=str(p), extra=extra))


def read_telluric_csv(path: str | os.PathLike, *, medium: str = "vacuum") -> Spectrum:
    """A TelFit-style ``.csv`` (header ``wavelength_A,transmission``; nm/µm columns also
    recognised by their ``_nm``/``_um`` suffix) as a transmission :class:`Spectrum`."""
    p = check_path(path)
    what = f"read_telluric_csv({p})"
    with open(p, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip()
    cols = [c.strip().lower() for c in header.split(",")]
    if len(cols) < 2 or not cols[0].startswith(("wave", "lambda")):
        raise FileFormatError(f"{what}: expected a header 'wavelength_A,transmission', got "
                              f"{header[:80]!r}")
    m = re.search(r"_(a|aa|angstrom|nm|um|micron)$", cols[0])
    unit = {"a": "Angstrom", "aa": "Angstrom", "angstrom": "Angstrom", "nm": "nm", "um": "um",
            "micron": "um"}[m.group(1)] if m else None
    try:
        data = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise FileFormatError(f"{what}: non-numeric rows ({exc})") from None
    if data.shape[0] < 2 or data.shape[1] < 2:
        raise FileFormatError(f"{what}: needs at least 2 rows of wavelength,transmission")
    wave = to_angstrom(data[:, 0], unit, what=what)
    name = p.stem
    temp = re.search(r"temp(\d+)", name)
    hum = re.search(r"hum(\d+)", name)
    extra = {"product": "TelFit transmission", "medium_assumed": True,
             "temperature_K": float(temp.group(1)) if temp else None,
             "humidity_percent": float(hum.group(1)) if hum else None}
    return build_1d(wave, data[:, 1], None, medium, TRANSMISSION, what,
                    SpectrumMeta(instrument="TelFit", source=str(p), extra=extra))


@dataclass(frozen=True, eq=False)
class TelluricGrid:
    """Transmission of one absorber on a grid of airmass and column scaling.

    wavelength: (n_pix,) Å; transmission: (n_scale, n_airmass, n_pix); airmass: (n_airmass,);
    scale: (n_scale,) column-density scaling (precipitable water for H2O).
    """

    wavelength: np.ndarray
    transmission: np.ndarray
    airmass: np.ndarray
    scale: np.ndarray
    species: str | None
    medium: str = "vacuum"
    meta: dict[str, Any] = field(default_factory=dict)

    def spectrum(self, scale_index: int, airmass_index: int) -> Spectrum:
        """One grid node as a transmission :class:`Spectrum`."""
        return Spectrum(self.wavelength, self.transmission[scale_index, airmass_index],
                        medium=self.medium, flux_unit=TRANSMISSION,  # type: ignore[arg-type]
                        meta=SpectrumMeta(instrument="LBLRTM", extra={
                            "species": self.species,
                            "airmass": float(self.airmass[airmass_index]),
                            "scale": float(self.scale[scale_index])}))


def _axis(header, k: int, n: int) -> np.ndarray:
    crval = header_float(header, f"CRVAL{k}")
    cdelt = header_float(header, f"CDELT{k}")
    crpix = header_float(header, f"CRPIX{k}") or 1.0
    if crval is None or cdelt is None:
        return np.arange(n, dtype=float)
    return crval + cdelt * (np.arange(n) + 1.0 - crpix)


def read_lblrtm_grid(path: str | os.PathLike) -> TelluricGrid:
    """Read an APOGEE LBLRTM transmission cube (primary HDU, NAXIS = 3) as a TelluricGrid."""
    with open_fits(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
        if data is None or np.ndim(data) != 3:
            shape = None if data is None else data.shape
            raise FileFormatError(f"{path}: an LBLRTM grid is a 3D primary image (scale, "
                                  f"airmass, wavelength); got {shape}")
        cube = np.asarray(data, float)
    n_scale, n_airmass, n_pix = cube.shape
    wave = to_angstrom(_axis(header, 1, n_pix), header_value(header, "CUNIT1"),
                       what=f"read_lblrtm_grid({path})")
    m = re.search(r"lblrtm_([A-Za-z0-9]+)", Path(path).stem)
    return TelluricGrid(wave, cube, _axis(header, 2, n_airmass), _axis(header, 3, n_scale),
                        species=m.group(1) if m else None,
                        meta={"source": str(path), "medium_assumed": True})


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
