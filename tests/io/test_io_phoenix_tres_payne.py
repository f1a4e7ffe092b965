"""PHOENIX, TRES HDF5 and The Payne .npz readers on fixture files in the real layouts."""

from __future__ import annotations

import numpy as np
import pytest
from io_fixtures import write_payne, write_phoenix, write_tres

from photosphere import EchelleSpectrum
from photosphere.errors import InvalidSpectrumError, MissingFileError
from photosphere.io import (
    identify,
    read,
    read_payne_spectrum,
    read_payne_visits,
    read_phoenix,
    read_tres_hdf5,
)


def test_phoenix_flux_converted_per_angstrom(tmp_path):
    flux_path, wave_path, wave, flux_cm = write_phoenix(tmp_path)
    spec = read_phoenix(flux_path, wave_path)
    assert spec.medium == "vacuum"
    assert np.allclose(spec.wavelength, wave)
    assert np.allclose(spec.flux, flux_cm * 1e-8, rtol=1e-6)
    assert spec.flux_unit == "erg / (s cm2 Angstrom)"
    assert spec.meta.extra["labels"] == {"teff": 5800.0, "logg": 4.5, "feh": 0.0, "alpha": 0.0}


def test_phoenix_finds_wave_file_beside_and_slices(tmp_path):
    flux_path, _, _, _ = write_phoenix(tmp_path)
    spec = read_phoenix(flux_path, wavelength_min=5040, wavelength_max=5060)
    assert spec.wavelength.min() >= 5040 and spec.wavelength.max() <= 5060
    assert identify(flux_path) == "phoenix_flux"
    assert identify(tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits") == "phoenix_wave"


def test_phoenix_missing_wave_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    flux_path, wave_path, _, _ = write_phoenix(tmp_path)
    wave_path.unlink()
    with pytest.raises(MissingFileError, match=r"WAVE_PHOENIX-ACES-AGSS-COND-2011\.fits"):
        read_phoenix(flux_path)


def test_tres_orders_sorted_and_bad_sigma_masked(tmp_path):
    truth = write_tres(tmp_path / "star.hdf5")
    spec = read_tres_hdf5(tmp_path / "star.hdf5")
    assert isinstance(spec, EchelleSpectrum)
    assert spec.medium == "air"
    assert np.allclose(spec.wavelength, truth["wls"])
    assert spec.mask[1, 5] and spec.mask.sum() == 1
    assert spec.meta.barycentric_correction == pytest.approx(-19.99)
    assert identify(tmp_path / "star.hdf5") == "tres_hdf5"


def test_payne_spectrum_uses_companion_grid_and_masks_large_errors(tmp_path):
    truth = write_payne(tmp_path)
    spec = read_payne_spectrum(truth["spectrum"])
    assert spec.medium == "vacuum" and spec.flux_unit == "normalized"
    assert np.allclose(spec.wavelength, truth["wave"])
    assert spec.mask.tolist().count(True) == 2 and spec.mask[3] and spec.mask[7]
    assert spec.meta.object_name == "2M00000001+0000001"
    assert identify(truth["spectrum"]) == "payne_spectrum"


def test_payne_visits_stack_and_single(tmp_path):
    truth = write_payne(tmp_path)
    stack = read(truth["visits"])
    assert stack.shape == (2, truth["wave"].size)
    one = read_payne_visits(truth["visits"], visit=1)
    assert one.meta.snr == pytest.approx(110.0)
    with pytest.raises(InvalidSpectrumError, match="holds 2 visits"):
        read_payne_visits(truth["visits"], visit=2)


def test_payne_missing_wavelength_companion_is_named(tmp_path):
    truth = write_payne(tmp_path)
    (tmp_path / "apogee_wavelength.npz").unlink()
    with pytest.raises(MissingFileError, match=r"apogee_wavelength\.npz"):
        read_payne_spectrum(truth["spectrum"])
