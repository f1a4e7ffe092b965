"""Readers: one module per file product, all returning :class:`~photosphere.Spectrum` or
:class:`~photosphere.EchelleSpectrum` with wavelengths in Å and an explicit air/vacuum frame.

``read(path)`` detects the product (``identify(path)``) and dispatches; ``describe(path)``
summarises any supported file, spectra and auxiliary products (catalogues, grids, calibration
files) alike. Downloaders for APOGEE DR17 and PHOENIX files live in :mod:`photosphere.io.download`.
"""

from .apogee import read_allstar, read_apstar, read_apvisit, read_rv_synthgrid, select_allstar
from .fits1d import read_fits1d
from .harps import read_e2ds, read_s1d
from .payne import read_payne_spectrum, read_payne_visits
from .phoenix import read_phoenix
from .registry import PRODUCTS, describe, identify, read
from .telluric import read_lblrtm_grid, read_tapas, read_telluric_csv
from .text import read_text
from .tres import read_tres_hdf5

__all__ = [
    "PRODUCTS",
    "describe",
    "identify",
    "read",
    "read_allstar",
    "read_apstar",
    "read_apvisit",
    "read_e2ds",
    "read_fits1d",
    "read_lblrtm_grid",
    "read_payne_spectrum",
    "read_payne_visits",
    "read_phoenix",
    "read_rv_synthgrid",
    "read_s1d",
    "read_tapas",
    "read_telluric_csv",
    "read_text",
    "read_tres_hdf5",
    "select_allstar",
]
