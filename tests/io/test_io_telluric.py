"""Telluric products: TAPAS .ipac, TelFit .csv (transmission spectra) and LBLRTM grids."""

from __future__ import annotations

import numpy as np
import pytest
from io_fixtures import write_lblrtm, write_tapas

from photosphere.errors import FileFormatError
from photosphere.io import describe, identify, read, read_lblrtm_grid, read_telluric_csv


def test_tapas_ipac_nm_descending_to_angstrom(tmp_path):
    wave_nm = write_tapas(tmp_path / "t.ipac")
    assert identify(tmp_path / "t.ipac") == "tapas"
    spec = read(tmp_path / "t.ipac")
    assert spec.flux_unit == "transmission"
    assert spec.wavelength[0] == pytest.approx(wave_nm.min() * 10)
    assert spec.wavelength[-1] == pytest.approx(wave_nm.max() * 10)
    assert spec.meta.extra["airmass"] == pytest.approx(4.373605)


def test_telfit_csv(tmp_path):
    w = np.linspace(8079.0, 8100.0, 40)
    rows = "\n".join(f"{x},{t}" for x, t in zip(w, np.linspace(0.9, 1.0, 40), strict=True))
    (tmp_path / "telfit_x_temp286_hum050.csv").write_text("wavelength_A,transmission\n" + rows)
    path = tmp_path / "telfit_x_temp286_hum050.csv"
    assert identify(path) == "telluric_csv"
    spec = read_telluric_csv(path)
    assert np.allclose(spec.wavelength, w)
    assert spec.meta.extra["temperature_K"] == 286.0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FileFormatError, match="wavelength_A"):
        read_telluric_csv(tmp_path / "bad.csv")


def test_lblrtm_grid_axes_and_refusal_by_read(tmp_path):
    path = tmp_path / "apogee_lblrtm_H2O.fits"
    write_lblrtm(path)
    grid = read_lblrtm_grid(path)
    assert grid.transmission.shape == (4, 7, 50)
    assert grid.airmass.tolist() == [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
    assert grid.scale.tolist() == [0.5, 1.0, 1.5, 2.0]
    assert grid.wavelength[-1] == pytest.approx(15104.9)
    assert grid.species == "H2O"
    assert grid.spectrum(1, 2).meta.extra["airmass"] == 1.5
    with pytest.raises(FileFormatError, match="read_lblrtm_grid"):
        read(path)
    d = describe(path)
    assert d["kind"] == "auxiliary" and d["wavelength_min"] == pytest.approx(15100.0)
