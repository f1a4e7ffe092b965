import numpy as np
import pytest
import torch
from astropy.io import fits

from conftest import shared_file
from photosphere.errors import FileFormatError, InvalidSpectrumError, MissingFileError
from photosphere.ops.airvac import vacuum_to_air
from photosphere.ops.echelle import (
    HARPSN_5050_5350,
    OrderLayout,
    format_echelle,
    random_slant,
)
from photosphere.ops.resample import pixel_edges
from photosphere.spectrum import EchelleSpectrum, Spectrum, SpectrumMeta

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead

HARPS_WAVE = "harps/HARPS.2003-12-12T21-47-59.366_wave_A.fits"


@pytest.mark.realdata
def test_layout_from_real_harps_wave_file():
    layout = OrderLayout.from_wavelength_file(shared_file(HARPS_WAVE))
    assert layout.shape == (72, 4096)
    assert layout.medium == "air"
    lo, hi = layout.wavelength_range
    assert 3770 < lo < 3790 and 6900 < hi < 6920
    assert np.all(np.diff(layout.wavelength[:, 2048]) > 0)
    assert np.all((layout.velocity_step() > 0.5) & (layout.velocity_step() < 1.5))


def test_layout_from_small_fits_and_npy(tmp_path):
    wave = np.stack([np.linspace(5100, 5150, 50), np.linspace(5000, 5050, 50)]).astype(np.float32)
    fits.PrimaryHDU(wave).writeto(tmp_path / "wave.fits")
    layout = OrderLayout.from_wavelength_file(tmp_path / "wave.fits", order_numbers=[100, 101])
    assert layout.wavelength[0, 0] == pytest.approx(5000.0)  # sorted by wavelength
    np.testing.assert_array_equal(layout.order_numbers, [101, 100])
    np.save(tmp_path / "wave.npy", wave)
    assert OrderLayout.from_wavelength_file(tmp_path / "wave.npy").shape == (2, 50)


def test_layout_file_errors(tmp_path):
    with pytest.raises(MissingFileError):
        OrderLayout.from_wavelength_file(tmp_path / "absent.fits")
    fits.PrimaryHDU(np.arange(10.0)).writeto(tmp_path / "flat.fits")
    with pytest.raises(FileFormatError, match="2D"):
        OrderLayout.from_wavelength_file(tmp_path / "flat.fits")
    (tmp_path / "junk.fits").write_text("not a fits file")
    with pytest.raises(FileFormatError):
        OrderLayout.from_wavelength_file(tmp_path / "junk.fits")


def test_from_instrument_constant_velocity_step_and_overlap():
    layout = OrderLayout.from_instrument(5000.0, 6000.0, 5, 1000, overlap=0.2)
    dv = np.diff(np.log(layout.wavelength), axis=1)
    np.testing.assert_allclose(dv, dv[0, 0], rtol=1e-9)
    assert layout.wavelength[0, 0] == pytest.approx(5000.0)
    assert layout.wavelength[-1, -1] == pytest.approx(6000.0)
    # each order overlaps the next by 20 % of its span
    span = np.log(layout.wavelength[:, -1] / layout.wavelength[:, 0])
    shared = np.log(layout.wavelength[:-1, -1] / layout.wavelength[1:, 0])
    np.testing.assert_allclose(shared / span[:-1], 0.2, rtol=1e-9)


def test_from_instrument_pixels_from_resolution():
    layout = OrderLayout.from_instrument(5000.0, 5100.0, 2, resolving_power=50_000, sampling=2.5)
    np.testing.assert_allclose(layout.velocity_step(), 299792.458 / 50_000 / 2.5, rtol=1e-3)
    with pytest.raises(InvalidSpectrumError, match="n_pixels"):
        OrderLayout.from_instrument(5000.0, 5100.0, 2)


def test_harpsn_layout():
    layout = HARPSN_5050_5350()
    assert layout.shape == (8, 4096)
    assert layout.wavelength_range == pytest.approx((5050.0, 5350.0))
    assert layout.resolving_power == 115_000.0


def _flat_spectrum(lo=5040.0, hi=5360.0, medium="air"):
    wave = np.linspace(lo, hi, 40_000)
    return Spectrum(wave, 1 + 0.2 * np.sin(wave / 3), np.full(wave.size, 0.01), medium=medium,
                    meta=SpectrumMeta(object_name="sun"))


def test_format_echelle_conserves_flux_per_order():
    spec = _flat_spectrum()
    layout = HARPSN_5050_5350(n_pixels=512)
    ech = format_echelle(spec, layout)
    assert isinstance(ech, EchelleSpectrum) and ech.shape == (8, 512)
    assert not ech.mask.any() and ech.meta.extra["layout"] == layout.name
    for k in range(8):
        edges = pixel_edges(torch.tensor(layout.wavelength[k])).numpy()
        fine = np.linspace(edges[0], edges[-1], 200_001)
        mid = 0.5 * (fine[1:] + fine[:-1])
        exact = np.sum((1 + 0.2 * np.sin(mid / 3)) * np.diff(fine))
        assert np.sum(ech.flux[k] * np.diff(edges)) == pytest.approx(exact, rel=1e-5)


def test_slant_and_blaze():
    spec = _flat_spectrum()
    layout = HARPSN_5050_5350(n_pixels=256)
    plain = format_echelle(spec, layout)
    slant = random_slant(8, rng=3, max_slope=0.2)
    blaze = np.tile(np.hanning(258)[1:-1], (8, 1))
    out = format_echelle(spec, layout, slant=slant, blaze=blaze)
    x = np.linspace(-1, 1, 256)
    expected = plain.flux * blaze * (slant[:, :1] + slant[:, 1:] * x)
    np.testing.assert_allclose(out.flux, expected, rtol=1e-12)
    np.testing.assert_allclose(out.sigma, plain.sigma * np.abs(blaze * (slant[:, :1]
                                                                       + slant[:, 1:] * x)))
    np.testing.assert_allclose(format_echelle(spec, layout, slant=np.tile([1.0, 0.0], (8, 1))).flux,
                               plain.flux)
    with pytest.raises(InvalidSpectrumError, match="slant"):
        format_echelle(spec, layout, slant=np.ones((7, 2)))
    with pytest.raises(InvalidSpectrumError, match="blaze"):
        format_echelle(spec, layout, blaze=np.ones((8, 10)))


def test_medium_conversion_and_partial_cover():
    vac = _flat_spectrum(5060.0, 5400.0, medium="vacuum")
    layout = HARPSN_5050_5350(n_pixels=256)
    ech = format_echelle(vac, layout)
    assert ech.medium == "air"
    first_air = vacuum_to_air(vac.wavelength[0])
    np.testing.assert_array_equal(ech.mask[0], layout.wavelength[0] < first_air + 0.05)
    assert ech.mask[0, 0] and not ech.mask[-1].any()
    with pytest.raises(InvalidSpectrumError, match="overlap"):
        format_echelle(_flat_spectrum(6000.0, 6100.0), layout)


def test_layout_validation():
    with pytest.raises(InvalidSpectrumError):
        OrderLayout(np.linspace(5000, 5100, 10))
    with pytest.raises(InvalidSpectrumError, match="increasing"):
        OrderLayout(np.array([[5000.0, 4999.0], [5001.0, 5002.0]]))
    with pytest.raises(InvalidSpectrumError, match="medium"):
        OrderLayout(np.array([[5000.0, 5001.0]]), medium="glass")
