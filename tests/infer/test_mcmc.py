"""emcee sampling through the plain log-probability function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModel, simulate
from photosphere.errors import FitError
from photosphere.infer.chain import ObservationChain
from photosphere.infer.likelihood import Likelihood
from photosphere.infer.mcmc import LogProbability, sample
from photosphere.infer.optimize import fit
from photosphere.infer.parameters import Parameters
from photosphere.infer.priors import Gaussian

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 6.0, "rv": 12.3}
WAVE = np.linspace(5005, 5035, 1200)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    obs = simulate(model, TRUTH, WAVE, resolution=40000, snr=60, seed=5)[0]
    chain = ObservationChain(model, obs, resolution=40000, rv_bounds=(-30, 50))
    return model, obs, chain


def test_log_probability_is_minus_inf_outside_bounds_never_nan(setup):
    _, _, chain = setup
    params = Parameters(chain.parameter_names, chain.bounds)
    logp = LogProbability(Likelihood(chain), params)
    inside = np.array([5800.0, 4.3, -0.2, 6.0, 12.3])
    out = logp(np.array([inside, [2500.0, 4.3, -0.2, 6.0, 12.3], [np.nan, 4.3, 0.0, 6.0, 0.0],
                         [5800.0, 4.3, -0.2, -1.0, 12.3]]))
    assert np.isfinite(out[0])
    assert np.all(out[1:] == -np.inf)
    assert logp(inside) == pytest.approx(out[0])
    assert logp(inside) > logp(np.array([6500.0, 4.3, -0.2, 6.0, 12.3]))


def test_gaussian_prior_shifts_the_log_probability(setup):
    _, _, chain = setup
    params = Parameters(chain.parameter_names, chain.bounds)
    like = Likelihood(chain)
    plain = LogProbability(like, params)
    with_prior = LogProbability(like, params, [Gaussian("logg", 4.0, 0.1)])
    theta = np.array([5800.0, 4.3, -0.2, 6.0, 12.3])
    diff = with_prior(theta) - plain(theta)
    assert diff == pytest.approx(-0.5 * 9.0 - np.log(0.1 * np.sqrt(2 * np.pi)))


@pytest.mark.slow
def test_sample_recovers_truth_and_reports_diagnostics(setup):
    model, obs, chain = setup
    ls = fit(model, obs, chain=chain, initial=TRUTH, n_grid=1, n_starts=1)
    res = sample(model, obs, chain=chain, initial=ls, n_walkers=12, n_steps=300, burn=100,
                 progress=False, seed=1)
    assert res.method == "mcmc"
    assert res.samples.shape == (12 * 200, 5)
    assert np.all(np.isfinite(res.samples))
    for name in ("teff", "logg", "feh", "rv"):
        assert abs(res.values[name] - TRUTH[name]) < 4 * res.sigma[name]
        assert res.sigma[name] == pytest.approx(ls.sigma[name], rel=0.5)
    flags = res.flags
    assert 0.1 < flags["acceptance_fraction"] < 0.9
    assert set(flags["autocorr_time"]) == set(res.free)
    assert flags["chain_too_short"]  # 200 kept steps < 50 τ
    assert all(v > 0 for v in flags["effective_sample_size"].values())
    assert res.to_dict()["method"] == "mcmc"


def test_fixed_parameters_and_bad_settings(setup):
    model, obs, chain = setup
    with pytest.raises(FitError, match="too few"):
        sample(model, obs, chain=chain, n_walkers=4, n_steps=10, progress=False,
               initial=TRUTH)
    with pytest.raises(FitError, match="burn"):
        sample(model, obs, chain=chain, n_walkers=12, n_steps=10, burn=10, progress=False)


def test_walkers_in_a_grid_hole_get_minus_inf_not_a_crash():
    from analytic_model import AnalyticModelWithHole

    model = AnalyticModelWithHole(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    obs = simulate(model, TRUTH, WAVE, resolution=40000, snr=60, seed=6)[0]
    chain = ObservationChain(model, obs, resolution=40000, rv_bounds=(-30, 50))
    logp = LogProbability(Likelihood(chain), Parameters(chain.parameter_names, chain.bounds))
    out = logp(np.array([[5800.0, 4.3, -0.2, 6.0, 12.3], [6600.0, 4.3, -0.2, 6.0, 12.3]]))
    assert np.isfinite(out[0]) and out[1] == -np.inf
