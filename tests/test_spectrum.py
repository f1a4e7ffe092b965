import numpy as np
import pytest
from astropy import units as u

from photosphere import EchelleSpectrum, Spectrum, SpectrumMeta
from photosphere.errors import InvalidSpectrumError, PhotosphereError, UnitsError


def _spec(n=100, **kw):
    wave = np.linspace(5000.0, 5010.0, n)
    flux = 1.0 - 0.5 * np.exp(-0.5 * ((wave - 5005.0) / 0.1) ** 2)
    return Spectrum(wave, flux, np.full(n, 0.01), medium="air", flux_unit="normalized", **kw)


def test_valid_spectrum_is_immutable():
    s = _spec()
    with pytest.raises(ValueError):
        s.flux[0] = 2.0
    with pytest.raises(AttributeError):
        s.flux = np.ones(100)  # type: ignore[misc]


def test_sigma_ivar_roundtrip():
    s = _spec()
    np.testing.assert_allclose(s.ivar, 1e4)
    t = Spectrum(s.wavelength, s.flux, ivar=s.ivar, medium="air")
    np.testing.assert_allclose(t.sigma, s.sigma)
    assert t.has_uncertainty


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_flux_is_refused(bad):
    wave = np.linspace(5000, 5010, 10)
    flux = np.ones(10)
    flux[3] = bad
    with pytest.raises(InvalidSpectrumError, match="mask"):
        Spectrum(wave, flux, medium="air")


def test_nonfinite_flux_masked_gets_zero_weight():
    wave = np.linspace(5000, 5010, 10)
    flux = np.ones(10)
    flux[3] = np.nan
    s = Spectrum.from_arrays(wave, flux, np.full(10, 0.1), mask_nonfinite=True, medium="air")
    assert s.mask[3] and s.ivar[3] == 0 and np.isfinite(s.flux).all()
    assert s.ivar[2] > 0


def test_non_monotonic_wavelength():
    with pytest.raises(InvalidSpectrumError, match="strictly increasing"):
        Spectrum([1.0, 3.0, 2.0], [1, 1, 1], medium="air")


def test_mismatched_shapes():
    with pytest.raises(InvalidSpectrumError, match="shape"):
        Spectrum([1.0, 2.0, 3.0], [1, 1], medium="air")
    with pytest.raises(InvalidSpectrumError, match="uncertainty shape"):
        Spectrum([1.0, 2.0, 3.0], [1, 1, 1], [0.1, 0.1], medium="air")


def test_negative_sigma_and_medium():
    with pytest.raises(InvalidSpectrumError, match="non-negative"):
        Spectrum([1.0, 2.0], [1, 1], [0.1, -0.1], medium="air")
    with pytest.raises(UnitsError, match="medium"):
        Spectrum([1.0, 2.0], [1, 1], medium="vac")  # type: ignore[arg-type]


def test_quantity_wavelengths_are_converted():
    s = Spectrum(np.array([500.0, 500.1, 500.2]) * u.nm, [1, 1, 1], medium="vacuum")
    np.testing.assert_allclose(s.wavelength, [5000.0, 5001.0, 5002.0])
    with pytest.raises(UnitsError, match="not a length"):
        Spectrum(np.array([1.0, 2.0]) * u.s, [1, 1], medium="air")


def test_errors_share_a_base():
    with pytest.raises(PhotosphereError):
        Spectrum([1.0, 1.0], [1, 1], medium="air")


def test_slice_and_table_and_specutils():
    s = _spec(meta=SpectrumMeta(object_name="Sun", instrument="test"))
    sub = s.slice(5002.0, 5008.0)
    assert sub.wavelength.min() >= 5002.0 and sub.wavelength.max() <= 5008.0
    with pytest.raises(InvalidSpectrumError, match="covering"):
        s.slice(6000, 6001)
    t = s.to_table()
    assert t["wavelength"].unit == u.AA and t.meta["object_name"] == "Sun"
    sp = s.to_specutils()
    back = Spectrum.from_specutils(sp)
    np.testing.assert_allclose(back.flux, s.flux)
    np.testing.assert_allclose(back.sigma, s.sigma)
    assert back.medium == "air"


def test_echelle_orders_and_slicing():
    wave = np.stack([np.linspace(5000 + 50 * i, 5060 + 50 * i, 64) for i in range(4)])
    flux = np.ones_like(wave)
    e = EchelleSpectrum(wave, flux, np.full_like(wave, 0.02), medium="air",
                        order_numbers=[110, 109, 108, 107])
    assert e.shape == (4, 64) and e.order(1).meta.extra["order"] == 109
    sub = e.slice(5055, 5120)
    assert sub.n_orders == 3 and sub.mask.any()
    whole = e.slice(4990, 5115, whole_orders=True)
    assert whole.n_orders == 2 and not whole.mask.any()
    assert e.select_orders([0, 2]).order_numbers.tolist() == [110, 108]
    again = EchelleSpectrum.from_orders(e.orders, order_numbers=e.order_numbers)
    np.testing.assert_allclose(again.wavelength, e.wavelength)
    assert len(e.to_table()) == 4
    with pytest.raises(InvalidSpectrumError, match="2D"):
        EchelleSpectrum(wave[0], flux[0], medium="air")


def test_replace_revalidates():
    s = _spec()
    with pytest.raises(InvalidSpectrumError):
        s.replace(flux=np.full(100, np.nan))
    m = s.with_mask(s.wavelength > 5009)
    assert m.mask.sum() > 0 and np.all(m.ivar[m.mask] == 0)
