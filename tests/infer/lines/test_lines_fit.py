"""Joint fit of line corrections, RV, vsini, continuum and tellurics on synthetic observations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from photosphere.errors import FitError, InvalidSpectrumError
from photosphere.infer.chain import chebyshev_basis
from photosphere.infer.lines.fit import (
    FitSettings,
    ObservedLineModel,
    fit_lines,
    initial_rv_of,
    observed_spectrum,
)
from photosphere.infer.lines.table import fitted_line_table, plot_fit
from photosphere.models.lines.model import LineModel, read_line_model, write_table
from photosphere.models.lines.telluric import TelluricModel
from photosphere.ops.noise import estimate_snr
from photosphere.spectrum import EchelleSpectrum, Spectrum

RV, VSINI = 12.3, 4.0


def _lines(rng, n, lo, hi, depth_scale=1.0):
    centre = np.sort(rng.uniform(lo, hi, n))
    return (centre, depth_scale * rng.uniform(0.003, 0.03, n), rng.uniform(0.02, 0.04, n),
            rng.uniform(0.005, 0.015, n))


def _observe(truth, wave, settings, telluric=None, noise=0.003, seed=3):
    """A noisy observation of ``truth`` at RV, VSINI on ``wave``: the line fit's own chain,
    times a cubic Chebyshev continuum."""
    template = Spectrum(wave, np.ones_like(wave), np.full_like(wave, noise))
    obs_model = ObservedLineModel(truth, template, settings, telluric, rv=RV)
    continuum = chebyshev_basis(wave, np.ones(wave.size, bool), 3) @ [1.0, 0.02, -0.01, 0.0]
    with torch.no_grad():
        obs_model.log_vsini.fill_(np.log(VSINI))
        flux = obs_model.normalised().numpy() * continuum
    rng = np.random.default_rng(seed)
    return Spectrum(wave, flux + rng.normal(0, noise, flux.size), np.full(flux.size, noise))


@pytest.mark.slow
def test_injected_rv_vsini_and_amplitudes_are_recovered(rng):
    torch.manual_seed(0)
    settings = FitSettings(resolution=60000, n_global_steps=60, n_steps=150,
                           amplitude_l1=0.1, amplitude_l2=1.0, rv_search=40.0)
    centre, amp, sigma, gamma = _lines(rng, 40, 6002, 6016, depth_scale=2.0)
    truth = LineModel(centre, amp, sigma, gamma)
    wave = np.linspace(6004, 6014, 1000)
    obs = _observe(truth, wave, settings)
    perturbed = amp * np.exp(rng.normal(0, 0.2, amp.size))
    start = LineModel(centre, perturbed, sigma, gamma)
    result = fit_lines(start, obs, settings=settings, progress=False)
    assert result.rv == pytest.approx(RV, abs=0.2)
    assert result.vsini == pytest.approx(VSINI, abs=0.5)
    assert 0.8 < result.chi2_per_pixel < 1.2
    one = result.to_result()  # the one Result type
    assert one.method == "lines" and one.values == {"rv": result.rv, "vsini": result.vsini}
    assert one.chi2 / one.n_pixels == pytest.approx(result.chi2_per_pixel)
    assert one.segments[0].model.shape == wave.shape
    inside = (centre > 6005) & (centre < 6013)
    before = np.log(perturbed / amp)[inside]
    after = (start.log_amplitude.detach().numpy() - np.log(amp))[inside]
    assert np.std(after) < 0.7 * np.std(before)

    table = fitted_line_table(result)
    assert {"centre_initial", "centre_fit", "equivalent_width_fit", "vanished",
            "telluric_blended"} <= set(table.colnames)
    assert not table["telluric_blended"].any()


@pytest.mark.slow
def test_fit_with_tellurics_flags_blended_lines_and_writes_outputs(rng, tmp_path):
    settings = FitSettings(resolution=60000, n_global_steps=40, n_steps=20)
    centre, amp, sigma, gamma = _lines(rng, 15, 6002, 6018)
    truth = LineModel(centre, amp, sigma, gamma)
    # one telluric line on top of line 3 as observed (shifted by the stellar RV), one alone
    doppler = np.sqrt((1 + RV / 299792.458) / (1 - RV / 299792.458))
    tell_centre = np.array([centre[3] * doppler + 0.02, 6015.5])
    tell = TelluricModel({"H2O": LineModel(tell_centre, [0.02, 0.02], [0.02, 0.02],
                                           [0.005, 0.005])})
    wave = np.linspace(6004, 6016, 1200)
    obs = _observe(truth, wave, settings, telluric=tell)
    result = fit_lines(LineModel(centre, amp, sigma, gamma), obs, settings=settings,
                       telluric=tell, rv=RV, progress=False)
    assert result.telluric_scale["H2O"] == pytest.approx(1.0, abs=0.2)
    table = fitted_line_table(result)
    assert bool(table["telluric_blended"][3])
    assert table["telluric_blended"].sum() <= 3
    write_table(table, tmp_path / "fit.ecsv")
    write_table(result.model.stellar.to_table(), tmp_path / "lines.fits")
    again = read_line_model(tmp_path / "lines.fits")
    np.testing.assert_allclose(again.centre.detach().numpy(),
                               result.model.stellar.centre.detach().numpy())
    plot_fit(result, tmp_path / "fit.png", n_regions=2)
    assert (tmp_path / "fit.png").stat().st_size > 10_000


def test_a_spectrum_off_the_line_list_is_a_clear_error(rng):
    centre, amp, sigma, gamma = _lines(rng, 5, 6002, 6008)
    wave = np.linspace(6000, 6010, 500)
    flux = np.ones_like(wave)
    flux[7] = np.nan
    spectrum = Spectrum(wave, flux, np.full_like(wave, 0.01), mask=~np.isfinite(flux))
    assert observed_spectrum(spectrum).mask.sum() == 1
    far = LineModel(centre + 1000, amp, sigma, gamma)
    with pytest.raises(FitError, match="falls in the observed range"):
        fit_lines(far, spectrum, progress=False)


def _bad_inputs():
    """(what, build): each build() makes an input that the line fit must refuse."""
    wave = np.linspace(6000, 6010, 200)
    flux = 1 + np.random.default_rng(5).normal(0, 0.01, wave.size)
    sigma = np.full_like(wave, 0.01)

    def with_value(array, index, value):
        out = array.copy()
        out[index] = value
        return out

    return {
        "nan flux": (lambda: Spectrum(wave, with_value(flux, 7, np.nan), sigma), "mask them"),
        "inf flux": (lambda: Spectrum(wave, with_value(flux, 7, np.inf), sigma), "mask them"),
        "nan sigma": (lambda: Spectrum(wave, flux, with_value(sigma, 7, np.nan)), "NaN"),
        "zero sigma": (lambda: Spectrum(wave, flux, with_value(sigma, 7, 0.0)),
                       r"σ = 0 on 1 unmasked pixel\(s\), first at 6000.352 Å; mask them"),
        "negative sigma": (lambda: Spectrum(wave, flux, with_value(sigma, 7, -0.01)),
                           "non-negative"),
        "all masked": (lambda: Spectrum(wave, flux, sigma, mask=np.ones(wave.size, bool)),
                       "every pixel"),
        "2-D": (lambda: Spectrum(np.stack([wave, wave]), np.stack([flux, flux])), "1D"),
        "shapes differ": (lambda: Spectrum(wave, flux[:-1]), "does not match"),
        "decreasing wavelengths": (lambda: Spectrum(wave[::-1], flux, sigma),
                                   "strictly increasing"),
        "echelle": (lambda: EchelleSpectrum(np.stack([wave, wave + 20]),
                                            np.stack([flux, flux])), "one order"),
        "flat flux without sigma": (lambda: Spectrum(wave, np.ones_like(wave)),
                                    "noise cannot be estimated"),
        "nothing to estimate sigma from": (
            lambda: Spectrum(wave, flux, mask=np.arange(wave.size) > 3), "pass sigma"),
        "zero median flux without sigma": (
            lambda: Spectrum(wave, np.where(np.arange(wave.size) % 3 == 0, flux, 0.0)),
            "σ = 0 estimated from the flux"),
    }


@pytest.mark.parametrize("case", sorted(_bad_inputs()))
def test_inputs_the_line_fit_cannot_use_are_clear_errors(rng, case):
    """Each bad input raises InvalidSpectrumError naming the fix, whether ``Spectrum`` itself
    refuses it or :func:`observed_spectrum` (the entry of fit_lines and initial_rv_of) does."""
    build, message = _bad_inputs()[case]
    lines = LineModel(*_lines(rng, 5, 6002, 6008))
    for entry in (observed_spectrum, lambda s: fit_lines(lines, s, progress=False),
                  lambda s: initial_rv_of(lines, s, FitSettings())):
        with pytest.raises(InvalidSpectrumError, match=message):
            entry(build())


def test_an_infinite_sigma_masks_its_pixel():
    """σ = inf is how a Spectrum marks a masked pixel, so the fit leaves it out, not refuses."""
    wave = np.linspace(6000, 6010, 200)
    sigma = np.full_like(wave, 0.01)
    sigma[[3, 50]] = np.inf
    got = observed_spectrum(Spectrum(wave, np.ones_like(wave), sigma))
    np.testing.assert_array_equal(np.flatnonzero(got.mask), [3, 50])


def test_the_observed_spectrum_keeps_sigma_or_estimates_one_value(rng):
    wave = np.linspace(6000, 6010, 500)
    flux = 1 + rng.normal(0, 0.01, wave.size)
    mask = np.zeros(wave.size, bool)
    mask[40:45] = True
    flux[41] = 1e6  # a masked cosmic ray: no part of the σ estimate
    sigma = np.full_like(wave, 0.01)
    given = Spectrum(wave, flux, sigma, mask=mask)
    assert observed_spectrum(given) is given
    got = observed_spectrum(Spectrum(wave, flux, mask=mask))
    good = ~mask
    want = np.median(flux[good]) / estimate_snr(flux[good])  # one σ: median flux / DER_SNR S/N
    np.testing.assert_array_equal(got.sigma[good], np.full(good.sum(), want))
    assert np.all(np.isinf(got.sigma[mask])) and want == pytest.approx(0.01, rel=0.2)


def test_masked_flux_values_do_not_change_the_fit(rng):
    lines = LineModel(*_lines(rng, 6, 6002, 6008))
    wave = np.linspace(6001, 6009, 400)
    flux = 1 + rng.normal(0, 0.003, wave.size)
    mask = np.zeros(wave.size, bool)
    mask[100:103] = True
    settings = FitSettings(n_global_steps=3, n_steps=2)
    histories = []
    for masked_value in (1.0, 1e300):
        spectrum = Spectrum(wave, np.where(mask, masked_value, flux), np.full_like(wave, 0.003),
                            mask=mask)
        result = fit_lines(copy.deepcopy(lines), spectrum, settings=settings, rv=0.0,
                           progress=False)
        histories.append(result.history)
    assert np.all(np.isfinite(histories[0]))
    assert histories[0] == histories[1]


@pytest.mark.slow
def test_a_line_missing_from_the_clone_is_added_and_flagged(rng):
    from photosphere.infer.lines.missing import fit_adding_lines

    settings = FitSettings(resolution=60000, n_global_steps=50, n_steps=60,
                           amplitude_l1=0.1, amplitude_l2=1.0, rv_search=40.0)
    centre, amp, sigma, gamma = _lines(rng, 16, 6002, 6010)
    missing = 6004.8  # a strong line that the clone lacks, away from the others
    truth = LineModel(np.append(centre, missing), np.append(amp, 0.03),
                      np.append(sigma, 0.03), np.append(gamma, 0.01))
    obs = _observe(truth, np.linspace(6003, 6009, 600), settings, noise=0.002)
    clone = LineModel(centre, amp, sigma, gamma)
    first, final, added = fit_adding_lines(clone, obs, settings=settings, progress=False)
    assert added.sum() >= 1
    new_centres = final.model.stellar.centre.detach().numpy()[added]
    assert np.min(np.abs(new_centres - missing)) < 0.02
    assert final.chi2_per_pixel < 0.5 * first.chi2_per_pixel
    table = fitted_line_table(final, added=added)
    assert table["added"].sum() == added.sum()
    assert not table["added"][np.argmin(np.abs(table["centre_initial"] - centre[0]))]


@pytest.mark.slow
def test_a_scaling_per_molecule_is_recovered(rng):
    settings = FitSettings(resolution=60000, n_global_steps=150, fit_line_parameters=False)
    centre, amp, sigma, gamma = _lines(rng, 8, 6002, 6010)
    truth = LineModel(centre, amp, sigma, gamma)
    groups = {name: LineModel(np.sort(rng.uniform(6004, 6008, 4)), np.full(4, 0.015),
                              np.full(4, 0.02), np.full(4, 0.004)) for name in ("H2O", "CO2")}
    tell = TelluricModel(groups)
    wave = np.linspace(6003.5, 6008.5, 500)
    with torch.no_grad():
        tell.log_scale.copy_(torch.log(torch.tensor([1.5, 0.6], dtype=torch.float64)))
    obs = _observe(truth, wave, settings, telluric=tell, noise=0.002)
    with torch.no_grad():
        tell.log_scale.zero_()
    result = fit_lines(LineModel(centre, amp, sigma, gamma), obs, settings=settings,
                       telluric=tell, rv=RV, progress=False)
    assert result.telluric_scale["H2O"] == pytest.approx(1.5, rel=0.1)
    assert result.telluric_scale["CO2"] == pytest.approx(0.6, rel=0.1)
