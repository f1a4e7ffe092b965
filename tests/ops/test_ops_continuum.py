import numpy as np
import pytest
from _lines import gaussian_line

from photosphere.errors import FitError, InvalidSpectrumError
from photosphere.ops.continuum import (
    APOGEE_CHIPS,
    fit_pseudo_continuum,
    fit_upper_envelope,
    normalize_pseudo_continuum,
    normalize_upper_envelope,
)
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.spectrum import EchelleSpectrum, Spectrum

WAVE = log_uniform_wavelength(15100.0, 16990.0, 6.0)  # APOGEE-like sampling


def _apogee_like(rng, noise=0.0):
    """Continuum: a different quadratic per chip; lines away from the continuum pixels."""
    cont = np.full(WAVE.size, np.nan)
    for k, (lo, hi) in enumerate(APOGEE_CHIPS):
        inside = (WAVE >= lo) & (WAVE <= hi)
        x = (WAVE[inside] - lo) / (hi - lo)
        cont[inside] = 1000.0 * (1 + 0.2 * k) * (1 + 0.3 * x - 0.2 * x**2)
    lines = np.ones(WAVE.size)
    centres = rng.uniform(15150, 16950, 60)
    for c in centres:
        lines *= gaussian_line(WAVE, c, depth=0.5, sigma_kms=12.0)
    flux = np.where(np.isfinite(cont), cont, 0.0) * lines
    continuum_pixels = (lines > 1 - 1e-13) & np.isfinite(cont)
    if noise:
        flux = flux + rng.normal(0, noise, WAVE.size) * np.nan_to_num(cont)
    ivar = np.where(np.isfinite(cont), 1.0 / (noise * np.nan_to_num(cont, nan=1.0) + 1e-9) ** 2,
                    0.0)
    return flux, ivar, cont, continuum_pixels


def test_recovers_per_chip_quadratic_exactly(rng):
    flux, ivar, cont, cp = _apogee_like(rng)
    fitted = fit_pseudo_continuum(WAVE, flux, ivar, cp, APOGEE_CHIPS)
    good = np.isfinite(cont)
    np.testing.assert_allclose(fitted[good], cont[good], rtol=1e-10)
    assert np.all(np.isnan(fitted[~good]))  # chip gaps


def test_noisy_recovery_and_index_input(rng):
    flux, ivar, cont, cp = _apogee_like(rng, noise=0.01)
    fitted = fit_pseudo_continuum(WAVE, flux, ivar, np.flatnonzero(cp), APOGEE_CHIPS)
    good = np.isfinite(cont)
    assert np.max(np.abs(fitted[good] / cont[good] - 1)) < 3e-3


def test_zero_ivar_pixels_ignored(rng):
    flux, ivar, cont, cp = _apogee_like(rng)
    flux = flux.copy()
    ivar = ivar.copy()
    flux[np.flatnonzero(cp)[::5]] = 1e6
    ivar[np.flatnonzero(cp)[::5]] = 0.0
    fitted = fit_pseudo_continuum(WAVE, flux, ivar, cp, APOGEE_CHIPS)
    good = np.isfinite(cont)
    np.testing.assert_allclose(fitted[good], cont[good], rtol=1e-9)


def test_spline_kind(rng):
    wave = np.linspace(5000, 5100, 2000)
    cont = 1 + 0.1 * np.sin((wave - 5000) / 20)
    fitted = fit_pseudo_continuum(wave, cont, None, np.ones(wave.size, bool), kind="spline",
                                  degree=3, n_knots=8)
    np.testing.assert_allclose(fitted, cont, rtol=2e-4)


def test_batch_equals_loop(rng):
    flux, ivar, _, cp = _apogee_like(rng, noise=0.01)
    batch = np.stack([flux, flux * 1.3, flux[::-1]])
    fitted = fit_pseudo_continuum(WAVE, batch, ivar, cp, APOGEE_CHIPS)
    for i in range(3):
        one = fit_pseudo_continuum(WAVE, batch[i], ivar, cp, APOGEE_CHIPS)
        np.testing.assert_allclose(fitted[i], one, equal_nan=True)


def test_normalize_spectrum_defaults_to_apogee_chips(rng):
    flux, ivar, cont, cp = _apogee_like(rng)
    spec = Spectrum(WAVE, flux, np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)),
                                         np.inf), medium="vacuum")
    norm = normalize_pseudo_continuum(spec, cp)
    assert norm.flux_unit == "normalized"
    good = np.isfinite(cont)
    np.testing.assert_array_equal(norm.mask, ~good)
    np.testing.assert_allclose(norm.flux[cp], 1.0, rtol=1e-9)
    np.testing.assert_allclose(norm.sigma[good], spec.sigma[good] / cont[good], rtol=1e-9)


def test_normalize_echelle_per_order(rng):
    wave = np.stack([np.linspace(5000, 5050, 500), np.linspace(5050, 5100, 500)])
    cont = np.stack([2 + 0.01 * (wave[0] - 5000), 3 - 0.005 * (wave[1] - 5050)])
    lines = np.stack([gaussian_line(wave[0], 5020.0), gaussian_line(wave[1], 5080.0)])
    spec = EchelleSpectrum(wave, cont * lines)
    cp = lines > 1 - 1e-13
    norm = normalize_pseudo_continuum(spec, cp, degree=1)
    np.testing.assert_allclose(norm.flux, lines, rtol=1e-10)
    with pytest.raises(InvalidSpectrumError, match="shape"):
        normalize_pseudo_continuum(spec, cp[0])


def test_upper_envelope_finds_continuum(rng):
    wave = np.linspace(5000, 5200, 8000)
    cont = 1.0 + 0.3 * (wave - 5100) / 100 - 0.1 * ((wave - 5100) / 100) ** 2
    lines = np.ones(wave.size)
    for c in rng.uniform(5000, 5200, 120):
        lines *= gaussian_line(wave, c, depth=rng.uniform(0.05, 0.7), sigma_kms=4.0)
    flux = cont * lines + rng.normal(0, 0.005, wave.size)
    flux[::997] += 0.5  # cosmic rays
    fitted = fit_upper_envelope(wave, flux, degree=2)
    assert np.max(np.abs(fitted / cont - 1)) < 0.01
    naive = np.polynomial.polynomial.polyval(wave - 5100, np.polyfit(wave - 5100, flux, 2)[::-1])
    assert np.median(naive / cont) < np.median(fitted / cont)  # plain fit sits below
    spec = Spectrum(wave, flux, np.full(wave.size, 0.005))
    norm = normalize_upper_envelope(spec, degree=2)
    assert np.median(norm.flux[lines > 0.999]) == pytest.approx(1.0, abs=0.005)


def test_upper_envelope_spline_and_echelle(rng):
    wave = np.stack([np.linspace(5000, 5050, 1000), np.linspace(5050, 5100, 1000)])
    cont = 1 + 0.05 * np.sin((wave - 5000) / 15)
    lines = np.stack([gaussian_line(w, c) for w, c in ((wave[0], 5025.0), (wave[1], 5075.0))])
    spec = EchelleSpectrum(wave, cont * lines + rng.normal(0, 0.002, wave.shape))
    norm = normalize_upper_envelope(spec, kind="spline", degree=3, n_knots=4)
    assert np.max(np.abs(norm.flux - lines)) < 0.02


def test_too_few_pixels_raise_or_nan(rng):
    flux, ivar, _, _ = _apogee_like(rng)
    cp = np.zeros(WAVE.size, bool)
    first = np.flatnonzero(WAVE > APOGEE_CHIPS[0][0])[:2]
    cp[first] = True
    with pytest.raises(FitError, match="continuum pixels"):
        fit_pseudo_continuum(WAVE, flux, ivar, cp, APOGEE_CHIPS)
    out = fit_pseudo_continuum(WAVE, flux, ivar, cp, APOGEE_CHIPS, degree=1, on_failure="nan")
    assert np.all(np.isfinite(out[first])) and np.all(np.isnan(out[-10:]))


@pytest.mark.parametrize("kwargs", [dict(kind="legendre"), dict(degree=-1),
                                    dict(chips=[(1000.0, 2000.0)]), dict(chips=[(16000, 15000)])])
def test_bad_arguments(rng, kwargs):
    flux, ivar, _, cp = _apogee_like(rng)
    with pytest.raises(InvalidSpectrumError):
        fit_pseudo_continuum(WAVE, flux, ivar, cp, **kwargs)


@pytest.mark.realdata
def test_upper_envelope_on_real_apvisit():
    from conftest import shared_file
    from photosphere.io.apogee import read_apvisit

    spec = read_apvisit(shared_file("apogee/apVisit-r13-5095-55844-128.fits"))
    norm = normalize_upper_envelope(spec, degree=3)
    good = norm.flux[~norm.mask]
    assert norm.flux_unit == "normalized"
    lo, median, hi = np.percentile(good, [5, 50, 95])
    assert 0.93 < median < 1.0 and 1.0 < hi < 1.06 and lo > 0.7
