"""End-to-end least squares on synthetic observations of the analytic model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModel, simulate
from photosphere import EchelleSpectrum
from photosphere.errors import FitError, OutOfGridError
from photosphere.infer.optimize import fit, initial_rv, rv_scan
from photosphere.ops.macroturbulence import doyle_macroturbulence

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 6.0, "rv": 12.3}
WAVE = np.linspace(5005, 5035, 1500)


def poly(w):
    return 1.5 + 0.1 * (w - 5020) / 15


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)


@pytest.fixture(scope="module")
def observed(model):
    return simulate(model, TRUTH, WAVE, resolution=40000, snr=80, seed=3, continuum=poly)[0]


def test_recovers_labels_with_sensible_uncertainties(model, observed):
    res = fit(model, observed, resolution=40000)
    assert res.converged
    assert res.free == ("teff", "logg", "feh", "vsini", "rv")
    for name, true in TRUTH.items():
        value, sigma = res.labels[name]
        assert abs(value - true) < 4 * sigma, (name, value, sigma)
    assert res.chi2_reduced == pytest.approx(1.0, abs=0.1)
    assert res.n_pixels == 1500
    assert res.n_parameters == 5 + 3
    assert res.segments[0].model.shape == (1500,)
    np.testing.assert_allclose(res.segments[0].continuum, poly(WAVE), rtol=0.01)
    assert np.all(np.linalg.eigvalsh(res.covariance) > 0)


def test_rv_scan_finds_the_velocity(model, observed):
    from photosphere.infer.chain import ObservationChain

    chain = ObservationChain(model, observed, resolution=40000, rv_bounds=(-100, 100))
    theta = chain.theta_from({**TRUTH, "teff": 5500.0, "rv": 0.0})
    chi2 = rv_scan(chain, theta, np.array([-50.0, 0.0, 12.0, 50.0]))
    assert int(np.argmin(chi2)) == 2
    assert initial_rv(chain, theta) == pytest.approx(12.3, abs=1.0)


def test_fixed_parameters_are_held(model, observed):
    res = fit(model, observed, resolution=40000, fixed={"logg": 4.3, "vsini": 6.0}, n_grid=2)
    assert res.free == ("teff", "feh", "rv")
    assert res.values["logg"] == 4.3 and np.isnan(res.sigma["logg"])
    assert res.covariance.shape == (3, 3)
    assert res.to_dict()["labels"]["logg"]["sigma"] is None


def test_multistart_reports_every_start_and_keeps_the_best(model, observed):
    res = fit(model, observed, resolution=40000, n_grid=2, n_starts=3,
              initial={"teff": 4200.0, "logg": 3.2, "feh": 0.4})
    starts = res.flags["starts"]
    assert len(starts) == res.flags["n_starts"] == 4
    assert res.chi2 == pytest.approx(min(s["chi2"] for s in starts))


def test_echelle_orders_and_two_exposures_jointly(model):
    wave = np.stack([np.linspace(5005, 5020, 700), np.linspace(5019, 5035, 700)])
    truth = {**TRUTH, "rv": -20.0}
    a = simulate(model, truth, wave, resolution=40000, snr=80, seed=1, continuum=poly)[0]
    b = simulate(model, {**truth, "rv": 15.0}, wave, resolution=40000, snr=80, seed=2,
                 continuum=poly)[0]
    assert isinstance(a, EchelleSpectrum)
    res = fit(model, [a, b], resolution=40000, initial={"rv_0": -18.0, "rv_1": 14.0},
              n_grid=2, n_starts=2)
    assert len(res.segments) == 4
    assert res.values["rv_0"] == pytest.approx(-20.0, abs=5 * res.sigma["rv_0"])
    assert res.values["rv_1"] == pytest.approx(15.0, abs=5 * res.sigma["rv_1"])
    assert res.values["teff"] == pytest.approx(5800.0, abs=5 * res.sigma["teff"])


def test_correlated_noise_auto_estimates_a_kernel(model, rng):
    """Noise correlated over ~5 km/s: noise='auto' finds the kernel and widens the errors."""
    from photosphere.infer.likelihood import CorrelatedNoise

    obs, clean = simulate(model, TRUTH, WAVE, resolution=40000, snr=1e9, continuum=poly)
    kernel = CorrelatedNoise(amplitude=0.015, length_scale=5.0)
    cov = kernel.dense(WAVE, np.full(WAVE.size, 0.005 ** 2))
    noisy = obs.replace(flux=clean + np.linalg.cholesky(cov) @ rng.normal(size=WAVE.size),
                        sigma=np.full(WAVE.size, 0.005))
    plain = fit(model, noisy, resolution=40000, n_grid=1, n_starts=1, initial=TRUTH)
    auto = fit(model, noisy, resolution=40000, n_grid=1, n_starts=1, initial=TRUTH,
               noise="auto")
    assert auto.flags["noise"]["length_scale_kms"] == pytest.approx(5.0, rel=0.6)
    assert auto.sigma["teff"] > 1.5 * plain.sigma["teff"]
    assert abs(auto.values["teff"] - 5800.0) < 3 * auto.sigma["teff"]


def test_starting_outside_the_grid_is_a_clear_error(model, observed):
    with pytest.raises(OutOfGridError, match="teff=2500 is outside the grid"):
        fit(model, observed, resolution=40000, initial={"teff": 2500.0})
    with pytest.raises(FitError, match="'mass' is not a parameter"):
        fit(model, observed, resolution=40000, initial={"mass": 1.0})
    with pytest.raises(FitError, match="noise='bogus'"):
        fit(model, observed, resolution=40000, noise="bogus", n_grid=1, n_starts=1)


@pytest.mark.slow
def test_covariance_matches_scatter_over_noise_draws(model):
    """Predicted σ agrees with the scatter of the estimates over 30 seeded noise draws (±30 %)."""
    estimates, sigmas = [], []
    for seed in range(30):
        obs = simulate(model, TRUTH, WAVE, resolution=40000, snr=60, seed=100 + seed,
                       continuum=poly)[0]
        res = fit(model, obs, resolution=40000, initial=TRUTH, n_grid=1, n_starts=1)
        estimates.append([res.values[n] for n in res.free])
        sigmas.append([res.sigma[n] for n in res.free])
    scatter = np.std(estimates, axis=0, ddof=1)
    predicted = np.mean(sigmas, axis=0)
    np.testing.assert_allclose(scatter / predicted, 1.0, atol=0.3)
    pulls = (np.array(estimates) - [TRUTH[n] for n in res.free]) / np.array(sigmas)
    assert np.all(np.abs(pulls.mean(0)) < 0.6)


def test_starts_and_steps_into_a_grid_hole_are_survived():
    """A coarse-grid start inside a hole (teff 6625 K) is rejected, not fatal."""
    from analytic_model import AnalyticModelWithHole

    model = AnalyticModelWithHole(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    truth = {**TRUTH, "teff": 5900.0}
    obs = simulate(model, truth, WAVE, resolution=40000, snr=80, seed=8)[0]
    res = fit(model, obs, resolution=40000, n_grid=4, n_starts=4)
    assert res.values["teff"] == pytest.approx(5900.0, abs=5 * res.sigma["teff"])
    assert all(np.isfinite(v) for v in res.values.values())


def test_clip_masks_features_the_model_lacks(model, observed):
    """Ten deep absorption features absent from the model (as lines missing from a line list)
    are clipped and the clean pixels kept; the labels move most of the way back to the truth
    (the features' unclipped wings, below the noise, still pull a little)."""
    flux = observed.flux.copy()
    centres = np.linspace(5008, 5032, 10)
    for c in centres:
        flux *= 1 - 0.5 * np.exp(-0.5 * ((WAVE - c) / 0.06) ** 2)
    spoiled = observed.replace(flux=flux)
    plain = fit(model, spoiled, resolution=40000, n_grid=2, n_starts=2)
    clipped = fit(model, spoiled, resolution=40000, n_grid=2, n_starts=2, clip=3.0)
    assert plain.chi2_reduced > 2.0
    assert clipped.chi2_reduced < 1.3
    assert 0 < clipped.flags["clipped"] < 0.1 * len(WAVE)
    assert clipped.flags["clip_refits"] >= 1
    masked = clipped.segments[0].mask
    near = np.min(np.abs(WAVE[:, None] - centres[None, :]), -1) < 0.2
    assert masked[near].mean() > 0.5 and masked[~near].mean() < 0.02
    assert clipped.n_pixels == len(WAVE) - clipped.flags["clipped"]
    names = ("teff", "logg", "feh", "vsini")
    plain_pulls = {n: abs(plain.values[n] - TRUTH[n]) / plain.sigma[n] for n in names}
    clipped_pulls = {n: abs(clipped.values[n] - TRUTH[n]) / clipped.sigma[n] for n in names}
    assert max(plain_pulls.values()) > 10, plain_pulls
    assert max(clipped_pulls.values()) < 4, clipped_pulls
    with pytest.raises(FitError, match="clip=0"):
        fit(model, observed, resolution=40000, n_grid=1, n_starts=1, clip=0.0)


def test_macroturbulence_fixed_recovers_the_labels_and_auto_uses_doyle(model):
    """Data broadened by ζ = 3.5 km/s of macroturbulence: fixed ζ = 3.5 recovers the labels
    and rotation; 'auto' refits with Doyle et al. (2014) at the first fit's Teff and log g."""
    truth = {**TRUTH, "vsini": 2.0}
    obs = simulate(model, truth, WAVE, resolution=60000, snr=150, seed=11, continuum=poly,
                   macroturbulence=3.5)[0]
    res = fit(model, obs, resolution=60000, macroturbulence=3.5)
    assert res.provenance["macroturbulence"] == 3.5
    for name, true in truth.items():
        value, sigma = res.labels[name]
        assert abs(value - true) < 4 * sigma, (name, value, sigma)
    auto = fit(model, obs, resolution=60000, macroturbulence="auto")
    zeta = auto.provenance["macroturbulence"]
    assert zeta == pytest.approx(doyle_macroturbulence(auto.values["teff"],
                                                       auto.values["logg"]), abs=0.05)
    assert "Doyle" in auto.provenance["macroturbulence_source"]
    with pytest.raises(FitError, match="not understood"):
        fit(model, obs, resolution=60000, macroturbulence="gray")


def test_macroturbulence_fit_recovers_vmac_with_vsini_fixed(model):
    truth = {**TRUTH, "vsini": 2.0}
    obs = simulate(model, truth, WAVE, resolution=60000, snr=150, seed=12, continuum=poly,
                   macroturbulence=5.0)[0]
    res = fit(model, obs, resolution=60000, macroturbulence="fit", fixed={"vsini": 2.0})
    assert res.free == ("teff", "logg", "feh", "vmac", "rv")
    assert res.provenance["macroturbulence"] is None
    value, sigma = res.labels["vmac"]
    assert 0 < sigma < 1.0
    assert abs(value - 5.0) < 4 * sigma, (value, sigma)
    for name in ("teff", "logg", "feh", "rv"):
        v, s = res.labels[name]
        assert abs(v - truth[name]) < 4 * s, (name, v, s)


def test_a_width_at_zero_has_no_information_and_the_rest_keep_their_sigma(model, observed):
    """At vmac = 0 the spectrum changes only quadratically with ζ: its Jacobian column is zero.
    The covariance leaves it out (NaN) and the other parameters keep finite σ."""
    from photosphere.infer.likelihood import Likelihood
    from photosphere.infer.optimize import build_chain, covariance
    from photosphere.infer.parameters import Parameters

    chain = build_chain(model, observed, resolution=40000, macroturbulence="fit",
                        rv_bounds=(0.0, 25.0))
    params = Parameters(chain.parameter_names, chain.bounds, {"vsini": TRUTH["vsini"]})
    u = params.scale(np.array([TRUTH["teff"], TRUTH["logg"], TRUTH["feh"], 0.0, TRUTH["rv"]]))
    cov, ok = covariance(Likelihood(chain), params, u)
    assert ok
    j = params.free.index("vmac")
    assert np.isnan(cov[j, j])
    others = [i for i in range(params.n_free) if i != j]
    assert np.all(np.isfinite(np.diag(cov)[others])) and np.all(np.diag(cov)[others] > 0)
    # away from zero the width is informative again
    u[j] = params.scale(np.array([5800.0, 4.3, -0.2, 4.0, 12.3]))[j]
    cov, ok = covariance(Likelihood(chain), params, u)
    assert ok and np.isfinite(cov[j, j]) and cov[j, j] > 0


def test_central_differences_match_the_derivatives_inside_and_on_the_faces_of_the_box():
    """Central differences inside the box, second-order one-sided ones on its faces, and the
    columns asked to be zero exactly zero."""
    from photosphere.infer.optimize import central_jacobian

    def fn(u):   # (B, 2) -> (B, 3)
        return torch.stack([torch.sin(3 * u[:, 0]) * u[:, 1], u[:, 0] ** 3, torch.exp(u[:, 1])],
                           -1)

    def exact(u):
        return np.array([[3 * np.cos(3 * u[0]) * u[1], np.sin(3 * u[0])],
                         [3 * u[0] ** 2, 0.0], [0.0, np.exp(u[1])]])

    for u in (np.array([0.4, 0.7]), np.array([0.0, 1.0]), np.array([1.0, 0.0])):
        value, jac = central_jacobian(fn, u, 1e-6)
        np.testing.assert_allclose(value, fn(torch.as_tensor(u[None]))[0].numpy())
        np.testing.assert_allclose(jac, exact(u), atol=1e-8)
    _, jac = central_jacobian(fn, np.array([0.4, 0.7]), 1e-6, zero=np.array([False, True]))
    assert np.all(jac[:, 1] == 0) and np.all(jac[:2, 0] != 0)


def test_covariance_by_differences_equals_forward_mode_autodiff(model, observed):
    """A float64 model's covariance is taken by central differences: the same σ and
    correlations as the exact forward-mode Jacobian, to 1e-5 relative."""
    from photosphere.infer.likelihood import Likelihood
    from photosphere.infer.optimize import _residual_fn, batched_jacobian, build_chain, covariance
    from photosphere.infer.parameters import Parameters

    chain = build_chain(model, observed, resolution=40000, rv_bounds=(0.0, 25.0))
    params = Parameters(chain.parameter_names, chain.bounds, {})
    u = params.scale(np.array([TRUTH[n] for n in params.free]))
    cov, ok = covariance(Likelihood(chain), params, u)
    _, jac = batched_jacobian(_residual_fn(Likelihood(chain), params),
                              torch.as_tensor(u[None]), method="forward-ad")
    jac = jac[0].numpy() / params.span
    exact = np.linalg.inv(jac.T @ jac)
    assert ok
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), np.sqrt(np.diag(exact)), rtol=1e-5)
    np.testing.assert_allclose(cov, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_a_model_computed_in_float32_keeps_the_exact_covariance(model, observed, monkeypatch):
    """A model whose float64 flux is made from float32 numbers (a mixture of grid spectra says
    so by ``prediction_precision``) gets the forward-mode covariance: differences of its
    rounding would move σ."""
    from photosphere.infer import optimize
    from photosphere.infer.likelihood import Likelihood
    from photosphere.infer.parameters import Parameters

    chain = optimize.build_chain(model, observed, resolution=40000, rv_bounds=(0.0, 25.0))
    params = Parameters(chain.parameter_names, chain.bounds, {})
    u = params.scale(np.array([TRUTH[n] for n in params.free]))
    monkeypatch.setattr(model, "prediction_precision", torch.float32, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("differences used for a float32 model")

    monkeypatch.setattr(optimize, "central_jacobian", refuse)
    cov, ok = optimize.covariance(Likelihood(chain), params, u)
    assert ok and np.all(np.isfinite(np.diag(cov)))


def test_misfit_jitter_inflates_sigma_to_cover_a_model_that_misses_features(model, observed):
    """Many weak features the model lacks (as line-list errors everywhere): the plain fit has
    χ²_red ≫ 1 and formal σ far too small; the jitter refit has χ²_red = 1 and σ larger by about
    √(χ²_red). The features are coherent over a line width, so the pulls shrink but need not
    reach 1: that is what the systematic floor measured on real stars is for."""
    rng = np.random.default_rng(7)
    flux = observed.flux.copy()
    for c in rng.uniform(5006, 5034, 120):
        flux *= 1 - rng.uniform(0.02, 0.08) * np.exp(-0.5 * ((WAVE - c) / 0.05) ** 2)
    spoiled = observed.replace(flux=flux)
    kw = dict(resolution=40000, n_grid=2, n_starts=2, model_error="none")
    plain = fit(model, spoiled, **kw)
    jit = fit(model, spoiled, misfit="jitter", **kw)
    assert plain.chi2_reduced > 3
    assert jit.chi2_reduced == pytest.approx(1.0, abs=0.15)
    assert jit.flags["chi2_reduced_before_jitter"] == pytest.approx(plain.chi2_reduced, rel=0.05)
    assert 0 < jit.flags["jitter"] < 0.1
    ratio = jit.sigma["teff"] / plain.sigma["teff"]
    assert 0.6 * np.sqrt(plain.chi2_reduced) < ratio < 1.6 * np.sqrt(plain.chi2_reduced)
    for n in ("teff", "logg", "feh"):
        pull_plain = abs(plain.values[n] - TRUTH[n]) / plain.sigma[n]
        pull_jitter = abs(jit.values[n] - TRUTH[n]) / jit.sigma[n]
        assert pull_jitter < 4 and (pull_jitter < 0.7 * pull_plain or pull_plain < 2), n


def test_misfit_jitter_is_zero_when_the_model_fits(model, observed):
    jit = fit(model, observed, resolution=40000, n_grid=2, n_starts=2, model_error="none",
              misfit="jitter")
    plain = fit(model, observed, resolution=40000, n_grid=2, n_starts=2, model_error="none")
    assert jit.flags["jitter"] == 0.0
    assert jit.sigma["teff"] == pytest.approx(plain.sigma["teff"], rel=1e-6)
    with pytest.raises(FitError, match="misfit="):
        fit(model, observed, resolution=40000, misfit="scale")
