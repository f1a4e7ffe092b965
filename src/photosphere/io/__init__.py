"""Readers: one module per file product, all returning :class:`~photosphere.Spectrum` or
:class:`~photosphere.EchelleSpectrum` with wavelengths in Å and an explicit air/vacuum frame.

``read(path, medium=None)`` detects the product (``identify(path)``, one table in
:mod:`photosphere.io.registry`) and dispatches; ``describe(path)``
summarises any supported file, spectra and auxiliary products (catalogues, grids, calibration
files) alike. Downloaders for APOGEE DR17 and PHOENIX files live in :mod:`photosphere.io.download`.
"""

from .apogee import read_allstar, read_apstar, read_apvisit, read_rv_synthgrid, select_allstar
from .csv_table import read_csv_table
from .fits1d import read_fits1d
from .harps import read_e2ds, read_s1d
from .hires import read_hires_orders, read_hires_table
from .iraf_multispec import read_iraf_multispec
from .ispec import read_ispec
from .miles import read_miles
from .payne import read_payne_spectrum, read_payne_visits
from .phoenix import read_phoenix
from .registry import PRODUCTS, describe, identify, read
from .telluric import read_lblrtm_grid, read_tapas, read_telluric_csv
from .text import read_text
from .text_folder import read_text_folder
from .tres import read_tres_hdf5

__all__ = [
    "PRODUCTS",
    "describe",
    "identify",
    "read",
    "read_allstar",
    "read_apstar",
    "read_apvisit",
    "read_csv_table",
    "read_e2ds",
    "read_fits1d",
    "read_hires_orders",
    "read_hires_table",
    "read_iraf_multispec",
    "read_ispec",
    "read_lblrtm_grid",
    "read_miles",
    "read_payne_spectrum",
    "read_payne_visits",
    "read_phoenix",
    "read_rv_synthgrid",
    "read_s1d",
    "read_tapas",
    "read_telluric_csv",
    "read_text",
    "read_text_folder",
    "read_tres_hdf5",
    "select_allstar",
]
