"""Joint fit of line corrections, RV, vsini, continuum and tellurics on synthetic observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import FitError, InvalidSpectrumError
from photosphere.infer.lines.fit import FitSettings, Observation, ObservedLineModel, fit_lines
from photosphere.infer.lines.table import fitted_line_table, plot_fit
from photosphere.models.lines.model import LineModel, read_line_model, write_table
from photosphere.models.lines.telluric import TelluricModel
from photosphere.spectrum import EchelleSpectrum, Spectrum

RV, VSINI = 12.3, 4.0


def _lines(rng, n, lo, hi, depth_scale=1.0):
    centre = np.sort(rng.uniform(lo, hi, n))
    return (centre, depth_scale * rng.uniform(0.003, 0.03, n), rng.uniform(0.02, 0.04, n),
            rng.uniform(0.005, 0.015, n))


def _observe(truth, wave, settings, telluric=None, noise=0.003, seed=3):
    obs_model = ObservedLineModel(truth, wave, settings, telluric, rv=RV)
    with torch.no_grad():
        obs_model.log_vsini.fill_(np.log(VSINI))
        obs_model.continuum_coeffs.copy_(torch.tensor([1.0, 0.02, -0.01, 0.0]))
        flux = obs_model().numpy()
    rng = np.random.default_rng(seed)
    return Observation.from_arrays(wave, flux + rng.normal(0, noise, flux.size),
                                   np.full(flux.size, noise))


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


def test_bad_observations_are_clear_errors(rng):
    centre, amp, sigma, gamma = _lines(rng, 5, 6002, 6008)
    wave = np.linspace(6000, 6010, 500)
    flux = np.ones_like(wave)
    flux[7] = np.nan
    with pytest.raises(InvalidSpectrumError, match="mask them"):
        Observation.from_arrays(wave, flux, np.full_like(wave, 0.01))
    obs = Observation.from_arrays(wave, flux, np.full_like(wave, 0.01), mask=~np.isfinite(flux))
    assert obs.mask.sum() == 1
    far = LineModel(centre + 1000, amp, sigma, gamma)
    with pytest.raises(FitError, match="falls in the observed range"):
        fit_lines(far, obs, progress=False)
    spectrum = Spectrum(wave, np.where(np.isfinite(flux), flux, 0.0), np.full_like(wave, 0.01),
                        mask=~np.isfinite(flux))
    with pytest.raises(FitError, match="falls in the observed range"):  # a Spectrum as well
        fit_lines(far, spectrum, progress=False)
    echelle = EchelleSpectrum(np.stack([wave, wave + 20]), np.ones((2, wave.size)))
    with pytest.raises(InvalidSpectrumError, match="one order"):
        Observation.from_spectrum(echelle)


def test_an_observation_from_a_spectrum(rng):
    wave = np.linspace(6000, 6010, 500)
    flux = 1 + rng.normal(0, 0.01, wave.size)
    mask = np.zeros(wave.size, bool)
    mask[40:45] = True
    sigma = np.full_like(wave, 0.01)
    got = Observation.from_spectrum(Spectrum(wave, flux, sigma, mask=mask))
    want = Observation.from_arrays(wave, flux, sigma, mask=mask)
    for name in ("wavelength", "flux", "sigma"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    no_sigma = Observation.from_spectrum(Spectrum(wave, flux))  # σ from DER_SNR, one value
    good = no_sigma.sigma[np.isfinite(no_sigma.sigma)]
    assert np.all(good == good[0]) and good[0] == pytest.approx(0.01, rel=0.2)


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
