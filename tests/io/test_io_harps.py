"""HARPS e2ds (+ wave, blaze) and s1d readers on fixture files in the DRS layout."""

from __future__ import annotations

import numpy as np
import pytest
from io_fixtures import write_harps_e2ds, write_harps_s1d

from photosphere.errors import InvalidSpectrumError, MissingFileError
from photosphere.io import identify, read, read_e2ds, read_s1d


def test_e2ds_finds_wave_and_blaze_named_in_header(tmp_path):
    truth = write_harps_e2ds(tmp_path)
    spec = read_e2ds(truth["e2ds"])
    assert spec.shape == (4, 64)
    assert spec.medium == "air"
    assert np.allclose(spec.wavelength, truth["wave"])
    assert spec.meta.extra["wavelength_source"].endswith("_wave_A.fits")
    assert np.allclose(spec.meta.extra["blaze"], truth["blaze"], atol=1e-6)
    assert spec.meta.barycentric_correction == pytest.approx(12.345)
    assert spec.meta.extra["snr_per_order"].tolist() == [40.0, 41.0, 42.0, 43.0]
    # 2 blue orders from 161, one order lost in the CCD gap, then the red ones
    assert spec.order_numbers.tolist() == [161, 160, 158, 157]


def test_e2ds_sigma_is_photon_plus_read_noise(tmp_path):
    truth = write_harps_e2ds(tmp_path)
    spec = read_e2ds(truth["e2ds"])
    g, ron, window = 1.42, 5.0, 17
    expected = np.sqrt(np.clip(spec.flux, 0, None) * g + window * ron ** 2) / g
    assert np.allclose(spec.sigma, expected)


def test_e2ds_deblaze_divides_flux_and_sigma(tmp_path):
    truth = write_harps_e2ds(tmp_path)
    raw = read_e2ds(truth["e2ds"])
    flat = read_e2ds(truth["e2ds"], deblaze=True)
    assert np.allclose(flat.flux * truth["blaze"], raw.flux, rtol=1e-5)
    assert np.allclose(flat.sigma * truth["blaze"], raw.sigma, rtol=1e-5)
    assert flat.meta.extra["deblazed"]


def test_e2ds_without_wave_file_uses_header_polynomial(tmp_path):
    truth = write_harps_e2ds(tmp_path, with_wave=False)
    spec = read_e2ds(truth["e2ds"])
    assert np.allclose(spec.wavelength, truth["wave"], atol=1e-9)
    assert "header polynomial" in spec.meta.extra["wavelength_source"]


def test_e2ds_deblaze_without_blaze_names_the_missing_file(tmp_path):
    truth = write_harps_e2ds(tmp_path, with_blaze=False)
    assert read_e2ds(truth["e2ds"]).meta.extra["blaze"] is None
    with pytest.raises(MissingFileError, match="blaze"):
        read_e2ds(truth["e2ds"], deblaze=True)


def test_e2ds_with_mismatched_wave_file_is_refused(tmp_path):
    from astropy.io import fits

    truth = write_harps_e2ds(tmp_path)
    fits.PrimaryHDU(np.ones((3, 64)) * 5000 + np.arange(64)).writeto(tmp_path / "w.fits")
    with pytest.raises(InvalidSpectrumError, match=r"\(3, 64\).*\(4, 64\)"):
        read_e2ds(truth["e2ds"], wave=tmp_path / "w.fits")


def test_identify_harps_products(tmp_path):
    truth = write_harps_e2ds(tmp_path)
    names = {p.name: identify(p) for p in tmp_path.iterdir()}
    assert sorted(names.values()) == ["harps_blaze", "harps_e2ds", "harps_wave"]
    assert identify(truth["e2ds"]) == "harps_e2ds"


def test_s1d_linear_grid_barycentric(tmp_path):
    flux = write_harps_s1d(tmp_path / "HARPS.x_s1d_A.fits")
    spec = read_s1d(tmp_path / "HARPS.x_s1d_A.fits")
    assert spec.wavelength[0] == pytest.approx(3781.19)
    assert spec.wavelength[-1] == pytest.approx(3781.19 + 0.01 * (flux.size - 1))
    assert spec.meta.barycentric_correction == 0.0
    assert spec.meta.extra["berv_kms"] == pytest.approx(-23.5)
    assert spec.meta.snr == pytest.approx(30.0)
    assert identify(tmp_path / "HARPS.x_s1d_A.fits") == "harps_s1d"
    assert len(read(tmp_path / "HARPS.x_s1d_A.fits")) == flux.size


def test_identify_harps_calibration_by_archive_name_without_drs_keys(tmp_path):
    from astropy.io import fits

    path = tmp_path / "HARPS.2003-12-12T21-42-45.093_blaze_A.fits"
    fits.PrimaryHDU(np.ones((2, 8))).writeto(path)
    assert identify(path) == "harps_blaze"
