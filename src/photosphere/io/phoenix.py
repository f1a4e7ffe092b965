"""PHOENIX-ACES-AGSS-COND-2011 high-resolution model spectra (Husser et al. 2013).

A flux file (primary HDU, surface flux in erg/s/cm²/cm, labels in ``PHXTEFF``, ``PHXLOGG``,
``PHXM_H``, ``PHXALPHA``) pairs with the common wavelength file
``WAVE_PHOENIX-ACES-AGSS-COND-2011.fits`` (primary HDU, vacuum Å). The reader returns the flux in
erg/s/cm²/Å (divided by 1e8).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError, MissingFileError
from ..spectrum import Spectrum, SpectrumMeta
from ._common import header_float, header_value, open_fits

WAVE_FILE = "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
FLUX_UNIT = "erg / (s cm2 Angstrom)"
_CM_PER_ANGSTROM = 1e-8


def find_wave_file(flux_path: str | os.PathLike) -> Path:
    """The PHOENIX wavelength file beside ``flux_path``, else in the photosphere cache."""
    from .._files import cache_dir

    for folder in (Path(flux_path).parent, Path(flux_path).parent.parent):
        if (folder / WAVE_FILE).exists():
            return folder / WAVE_FILE
    cached = cache_dir("phoenix") / WAVE_FILE
    if cached.exists():
        return cached
    raise MissingFileError(f"{flux_path}: the PHOENIX wavelength file {WAVE_FILE} is neither "
                           f"beside it nor in {cached.parent}; download it with "
                           "photosphere.io.download.download_phoenix_wavelength() or pass "
                           "wave_path=...")


def read_phoenix(flux_path: str | os.PathLike, wave_path: str | os.PathLike | None = None, *,
                 wavelength_min: float | None = None, wavelength_max: float | None = None
                 ) -> Spectrum:
    """A PHOENIX HiRes model as a :class:`Spectrum` (vacuum Å, erg/s/cm²/Å).

    wave_path: the WAVE file (default: found beside ``flux_path`` or in the cache).
    wavelength_min, wavelength_max: optional Å limits to keep (the full file has 1.5 M pixels).
    Labels go to ``meta.extra['labels']`` (teff K, logg dex, feh dex, alpha dex).
    """
    wave_path = find_wave_file(flux_path) if wave_path is None else Path(wave_path)
    with open_fits(flux_path) as hdul:
        header = hdul[0].header
        flux = hdul[0].data
        if flux is None or np.ndim(flux) != 1:
            raise FileFormatError(f"{flux_path}: a PHOENIX flux file has a 1D primary HDU, got "
                                  f"{None if flux is None else np.shape(flux)}")
        flux = np.asarray(flux, float)
    with open_fits(wave_path) as hdul:
        wave = hdul[0].data
        if wave is None or np.ndim(wave) != 1:
            raise FileFormatError(f"{wave_path}: the PHOENIX WAVE file has a 1D primary HDU")
        wave = np.asarray(wave, float)
    if wave.shape != flux.shape:
        raise InvalidSpectrumError(f"{flux_path} has {flux.size} pixels but {wave_path} has "
                                   f"{wave.size}; pass the WAVE file of the same PHOENIX grid")
    keep = np.ones(wave.shape, bool)
    if wavelength_min is not None:
        keep &= wave >= wavelength_min
    if wavelength_max is not None:
        keep &= wave <= wavelength_max
    if keep.sum() < 2:
        raise InvalidSpectrumError(f"read_phoenix: {wavelength_min}-{wavelength_max} Å keeps "
                                   f"{int(keep.sum())} pixel(s) of a model covering "
                                   f"{wave.min():.0f}-{wave.max():.0f} Å")
    labels = {"teff": header_float(header, "PHXTEFF"), "logg": header_float(header, "PHXLOGG"),
              "feh": header_float(header, "PHXM_H"), "alpha": header_float(header, "PHXALPHA")}
    meta = SpectrumMeta(object_name=_model_name(labels), instrument="PHOENIX-ACES",
                        source=str(flux_path),
                        extra={"labels": labels, "wave_file": str(wave_path),
                               "version": header_value(header, "PHXVER"),
                               "product": "PHOENIX-ACES-AGSS-COND-2011 HiRes"})
    return Spectrum.from_arrays(wave[keep], flux[keep] * _CM_PER_ANGSTROM, mask_nonfinite=True,
                                medium="vacuum", flux_unit=FLUX_UNIT, meta=meta)


def _model_name(labels: dict) -> str | None:
    if labels["teff"] is None:
        return None
    name = f"PHOENIX Teff={labels['teff']:.0f} logg={labels['logg'] or 0:.2f} " \
           f"[M/H]={labels['feh'] or 0:+.1f}"
    if labels["alpha"]:
        name += f" [a/M]={labels['alpha']:+.1f}"
    return name


def describe_wave_file(path: str | os.PathLike) -> dict:
    """What the PHOENIX WAVE file holds (for ``photosphere info``)."""
    with open_fits(path) as hdul:
        wave = np.asarray(hdul[0].data, float)
    return {"product": "phoenix_wave", "shape": list(wave.shape),
            "wavelength_min": float(wave.min()), "wavelength_max": float(wave.max()),
            "medium": "vacuum",
            "description": "PHOENIX-ACES wavelength grid (vacuum Å) shared by all HiRes flux "
                           "files; read with photosphere.io.phoenix.read_phoenix(flux_path, "
                           "wave_path=this_file)"}
