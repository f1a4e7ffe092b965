import numpy as np
import pytest

from photosphere import EchelleSpectrum, Spectrum, SpectrumMeta
from photosphere.errors import InvalidSpectrumError
from photosphere.io import read
from photosphere.io.writers import write_echelle_hdf5, write_fits_table


def test_fits_table_roundtrip(tmp_path, rng):
    wave = np.linspace(6000.0, 6010.0, 200)
    flux = 1.0 + 0.01 * rng.standard_normal(200)
    mask = np.zeros(200, bool)
    mask[10] = True
    spec = Spectrum(wave, flux, np.full(200, 0.01), mask=mask, medium="vacuum",
                    meta=SpectrumMeta(object_name="star", instrument="X", snr=100.0),
                    flux_unit="normalized")
    back = read(write_fits_table(spec, tmp_path / "s.fits"))
    np.testing.assert_allclose(back.wavelength, wave)
    np.testing.assert_allclose(back.flux[~mask], flux[~mask])
    assert back.medium == "vacuum" and back.mask[10] and not back.mask[11]
    assert back.meta.object_name == "star" and back.meta.instrument == "X"


def test_echelle_hdf5_roundtrip(tmp_path, rng):
    wave = np.stack([np.linspace(5000 + 20 * i, 5021 + 20 * i, 300) for i in range(3)])
    flux = 100 + rng.standard_normal(wave.shape)
    mask = np.zeros(wave.shape, bool)
    mask[1, 5] = True
    spec = EchelleSpectrum(wave, flux, np.ones_like(wave), mask=mask, medium="air",
                           meta=SpectrumMeta(object_name="star", instrument="Y"),
                           order_numbers=np.array([119, 118, 117]))
    back = read(write_echelle_hdf5(spec, tmp_path / "e.hdf5"))
    assert isinstance(back, EchelleSpectrum) and back.shape == (3, 300)
    np.testing.assert_allclose(back.flux[~mask], flux[~mask])
    assert back.mask[1, 5] and back.mask.sum() == 1 and back.meta.instrument == "Y"
    assert list(back.order_numbers) == [119, 118, 117]


def test_echelle_hdf5_with_a_damaged_orders_dataset_is_refused(tmp_path):
    import h5py

    wave = np.stack([np.linspace(5000 + 20 * i, 5021 + 20 * i, 50) for i in range(2)])
    spec = EchelleSpectrum(wave, np.ones_like(wave), np.ones_like(wave), medium="air")
    path = write_echelle_hdf5(spec, tmp_path / "e.hdf5")
    with h5py.File(path, "r+") as f:
        del f["orders"]
        f["orders"] = np.array([1, 2, 3])
    with pytest.raises(InvalidSpectrumError, match="orders dataset has 3 entries for 2"):
        read(path)


def test_writers_refuse_the_wrong_kind(tmp_path):
    spec = Spectrum([1.0, 2.0, 3.0], [1, 1, 1], medium="air")
    with pytest.raises(InvalidSpectrumError, match="EchelleSpectrum"):
        write_echelle_hdf5(spec, tmp_path / "x.hdf5")  # type: ignore[arg-type]
    vac = EchelleSpectrum(np.array([[1.0, 2.0], [3.0, 4.0]]), np.ones((2, 2)), medium="vacuum")
    with pytest.raises(InvalidSpectrumError, match="air"):
        write_echelle_hdf5(vac, tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()
