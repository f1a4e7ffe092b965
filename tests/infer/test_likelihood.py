"""Likelihood: banded correlated-noise computation against the dense reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import cho_factor, cho_solve

from analytic_model import AnalyticModel, AnalyticModelWithVariance, simulate
from photosphere.errors import FitError
from photosphere.infer.chain import ObservationChain
from photosphere.infer.likelihood import CorrelatedNoise, Likelihood, matern32

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 4.0, "rv": 2.0}


def _dense_loglike(r, cov):
    c = cho_factor(cov, lower=True)
    return -0.5 * (r @ cho_solve(c, r) + 2 * np.log(np.diag(c[0])).sum()
                   + len(r) * np.log(2 * np.pi))


def test_banded_matches_dense(rng):
    wave = np.sort(5000 + 10 * rng.random(400))
    sigma = 0.01 + 0.005 * rng.random(400)
    noise = CorrelatedNoise(amplitude=0.02, length_scale=8.0)
    dense = noise.dense(wave, sigma ** 2)
    ab = noise.banded(wave, sigma ** 2)
    assert ab.shape[0] < 400  # banded, not dense
    for k in range(ab.shape[0]):
        np.testing.assert_allclose(ab[k, :400 - k], np.diag(dense, -k), rtol=1e-12)
    assert np.all(np.diag(dense, -ab.shape[0]) == 0)


def test_matern_limits():
    assert matern32(np.array([0.0]), 2.0, 5.0)[0] == pytest.approx(4.0)
    assert matern32(np.array([100.0]), 2.0, 5.0)[0] < 1e-10


def test_log_likelihood_equals_dense_reference():
    model = AnalyticModel(5000.0, 5040.0, n_lines=20)
    obs, _ = simulate(model, TRUTH, np.linspace(5005, 5035, 600), resolution=30000, snr=80)
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20))
    noise = CorrelatedNoise(amplitude=0.01, length_scale=6.0)
    like = Likelihood(chain, noise)
    theta = chain.theta_from({**TRUTH, "teff": 5750.0})
    seg = chain.segments[0]
    with torch.no_grad():
        model_flux, _ = chain.predict(torch.as_tensor(theta))
    r = (seg.flux - model_flux[0]).numpy()
    cov = noise.dense(seg.wavelength.numpy(), 1 / seg.ivar.numpy())
    ref = _dense_loglike(r, cov) - 0.5 * float(like.continuum_log_det(torch.as_tensor(theta)))
    assert float(like.log_likelihood(theta)) == pytest.approx(ref, rel=1e-10)
    white = Likelihood(chain)
    diag = _dense_loglike(r, np.diag(1 / seg.ivar.numpy())) \
        - 0.5 * float(white.continuum_log_det(torch.as_tensor(theta)))
    assert float(white.log_likelihood(theta)) == pytest.approx(diag, rel=1e-10)
    batch = like.log_likelihood(np.stack([theta, theta]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(batch[1])


def test_model_variance_is_added():
    model = AnalyticModelWithVariance(5000.0, 5040.0, n_lines=20, model_sigma=0.02)
    obs, _ = simulate(model, TRUTH, np.linspace(5005, 5035, 400), snr=100)
    chain = ObservationChain(model, obs, rv_bounds=(-20, 20))
    theta = chain.theta_from(TRUTH)
    with_var = Likelihood(chain).chi2(theta)
    without = Likelihood(chain, model_variance=False).chi2(theta)
    # σ_model = 0.02 on a continuum ≈ 1: χ² shrinks by (σ² + 0.02²) / σ²
    s = obs.sigma[0]
    assert without / with_var == pytest.approx((s ** 2 + 0.02 ** 2) / s ** 2, rel=0.02)


def test_kernel_estimated_from_correlated_residuals(rng):
    n = 3000
    wave = 5000 * np.exp(np.arange(n) * 1.0 / 299792.458)
    truth = CorrelatedNoise(amplitude=0.02, length_scale=5.0)
    cov = truth.dense(wave, np.full(n, 0.01 ** 2))
    resid = np.linalg.cholesky(cov) @ rng.normal(size=n)
    est = CorrelatedNoise.from_residuals([wave], [resid], [np.full(n, 0.01)])
    assert est.amplitude == pytest.approx(0.02, rel=0.3)
    assert est.length_scale == pytest.approx(5.0, rel=0.4)
    white = rng.normal(0, 0.01, n)
    none = CorrelatedNoise.from_residuals([wave], [white], [np.full(n, 0.01)])
    assert none is None or none.amplitude < 0.003


def test_invalid_kernel():
    with pytest.raises(FitError, match="length_scale > 0"):
        CorrelatedNoise(amplitude=0.1, length_scale=0.0)
