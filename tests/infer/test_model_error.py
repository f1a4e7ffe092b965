"""Model-error templates in the fit: Woodbury against dense algebra, shapes, the switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModelWithTemplates, AnalyticModelWithVariance, simulate
from photosphere.errors import FitError
from photosphere.infer import model_error
from photosphere.infer.chain import ObservationChain
from photosphere.infer.likelihood import Likelihood
from photosphere.infer.optimize import batched_jacobian, fit

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 4.0, "rv": 2.0}


@pytest.fixture(scope="module")
def model():
    return AnalyticModelWithTemplates(5000.0, 5040.0, n_lines=20, model_sigma=0.005)


def _dense_reference(chain, theta):
    """-2 log L marginalised over template amplitudes and continuum, and min_β (d-Sβ)ᵀC⁻¹(d-Sβ),
    by dense N × N algebra over all segments together."""
    with torch.no_grad():
        stellar, templates = chain.stellar_and_templates(torch.as_tensor(theta))
        base = chain.continuum(stellar)
    good = [s.ivar.numpy() > 0 for s in chain.segments]
    d = np.concatenate([s.flux.numpy()[g] for s, g in zip(chain.segments, good, strict=True)])
    var = np.concatenate([1 / s.ivar.numpy()[g] for s, g in zip(chain.segments, good, strict=True)])
    b = np.concatenate([(c[None] * t).numpy()[:, g].T
                        for c, t, g in zip(base, templates, good, strict=True)])  # (N, K)
    blocks = [(st[:, None] * s.continuum_basis).numpy()[g] for st, s, g in
              zip(stellar, chain.segments, good, strict=True)]
    design = np.zeros((len(d), sum(x.shape[1] for x in blocks)))
    r0 = c0 = 0
    for x in blocks:
        design[r0:r0 + len(x), c0:c0 + x.shape[1]] = x
        r0, c0 = r0 + len(x), c0 + x.shape[1]
    cov = np.diag(var) + b @ b.T
    ci = np.linalg.inv(cov)
    normal = design.T @ ci @ design
    beta = np.linalg.solve(normal, design.T @ ci @ d)
    r = d - design @ beta
    chi2 = r @ ci @ r
    m2loglike = (chi2 + np.linalg.slogdet(cov)[1] + np.linalg.slogdet(normal)[1]
                 + len(d) * np.log(2 * np.pi))
    return m2loglike, chi2


def test_woodbury_equals_dense_on_two_orders(model):
    wave = np.stack([np.linspace(5005, 5018, 150), np.linspace(5020, 5033, 150)])
    obs, _ = simulate(model, TRUTH, wave, resolution=30000, snr=60,
                      continuum=lambda w: 1 + 1e-3 * (w - 5020))
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20))
    like = Likelihood(chain, model_error="auto")
    assert like.use_templates and not like.use_model_variance
    theta = chain.theta_from({**TRUTH, "teff": 5750.0})
    m2loglike, chi2 = _dense_reference(chain, theta)
    r = like.residuals(torch.as_tensor(theta))
    assert r.shape == (chain.n_pixels + 2,) and like.n_residuals == chain.n_pixels + 2
    assert float((r ** 2).sum()) == pytest.approx(chi2, rel=1e-8)      # [N^-½ r; â]² = rᵀC⁻¹r
    assert float(like.log_likelihood(theta)) == pytest.approx(-0.5 * m2loglike, rel=1e-10)
    batch = like.log_likelihood(np.stack([theta, theta]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(batch[1])


def test_woodbury_equals_dense_with_fitted_macroturbulence(model):
    """The templates go through the same macroturbulence kernel as the flux (vmac free)."""
    wave = np.linspace(5006, 5034, 300)
    obs, _ = simulate(model, TRUTH, wave, resolution=30000, snr=60, macroturbulence=3.0)
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20),
                             macroturbulence="fit")
    like = Likelihood(chain, model_error="auto")
    theta = chain.theta_from({**TRUTH, "vmac": 3.0})
    m2loglike, chi2 = _dense_reference(chain, theta)
    assert float((like.residuals(torch.as_tensor(theta)) ** 2).sum()) == pytest.approx(
        chi2, rel=1e-8)
    assert float(like.log_likelihood(theta)) == pytest.approx(-0.5 * m2loglike, rel=1e-10)
    with torch.no_grad():
        _, with_vmac = chain.stellar_and_templates(torch.as_tensor(theta))
        _, without = chain.stellar_and_templates(torch.as_tensor(
            chain.theta_from({**TRUTH, "vmac": 0.0})))
    assert not torch.allclose(with_vmac[0], without[0])


def test_without_continuum_and_two_exposures_shapes_and_jacobian(model):
    truth2 = {**TRUTH, "rv": -5.0}
    a, _ = simulate(model, TRUTH, np.linspace(5006, 5034, 300), snr=50)
    b, _ = simulate(model, truth2, np.linspace(5006, 5034, 300), snr=50, seed=1)
    chain = ObservationChain(model, [a, b], continuum_degree=None, rv_bounds=(-20, 20))
    like = Likelihood(chain, model_error="auto")
    theta = chain.theta_from({**TRUTH, "rv_0": 2.0, "rv_1": -5.0})
    m2loglike, chi2 = _dense_reference_no_continuum(chain, theta)
    assert float((like.residuals(torch.as_tensor(theta)) ** 2).sum()) == pytest.approx(chi2,
                                                                                       rel=1e-8)
    assert float(like.log_likelihood(theta)) == pytest.approx(-0.5 * m2loglike, rel=1e-10)
    value, jac = batched_jacobian(like.residuals, torch.as_tensor(theta)[None],
                                  method="forward-ad")
    assert value.shape == (1, chain.n_pixels + 2) and jac.shape == (1, chain.n_pixels + 2, 6)
    assert torch.isfinite(jac).all() and jac[0, -2:].abs().sum() > 0
    # the forward-mode Jacobian agrees with a finite difference (teff, then rv_1)
    for j, h in ((0, 1e-3), (5, 1e-6)):
        step = torch.zeros(6, dtype=torch.float64)
        step[j] = h
        t = torch.as_tensor(theta)
        fd = (like.residuals(t + step) - like.residuals(t - step)) / (2 * h)
        np.testing.assert_allclose(jac[0, :, j].numpy(), fd.numpy(), rtol=1e-4,
                                   atol=1e-6 * float(fd.abs().max()))


def _dense_reference_no_continuum(chain, theta):
    with torch.no_grad():
        _, templates = chain.stellar_and_templates(torch.as_tensor(theta))
        model_flux, _ = chain.predict(torch.as_tensor(theta))
    good = [s.ivar.numpy() > 0 for s in chain.segments]
    r = np.concatenate([(s.flux - m).numpy()[g] for s, m, g in
                        zip(chain.segments, model_flux, good, strict=True)])
    var = np.concatenate([1 / s.ivar.numpy()[g] for s, g in zip(chain.segments, good, strict=True)])
    b = np.concatenate([t.numpy()[:, g].T for t, g in zip(templates, good, strict=True)])
    cov = np.diag(var) + b @ b.T
    chi2 = r @ np.linalg.solve(cov, r)
    return chi2 + np.linalg.slogdet(cov)[1] + len(r) * np.log(2 * np.pi), chi2


def test_switch_off_reproduces_the_fit_without_templates(model):
    obs, _ = simulate(model, TRUTH, np.linspace(5005, 5035, 600), resolution=30000, snr=80)
    plain = AnalyticModelWithVariance(5000.0, 5040.0, n_lines=20, model_sigma=0.005)
    kw = dict(resolution=30000, rv_bounds=(-20, 20), n_grid=2, n_starts=2)
    off = fit(model, obs, model_error="none", **kw)
    old = fit(plain, obs, **kw)
    assert off.values == old.values and off.sigma == old.sigma and off.chi2 == old.chi2
    assert off.provenance["model_error"] == "none" and off.provenance["model_variance"]
    on = fit(model, obs, model_error="auto", **kw)
    assert on.provenance["model_error"] == "templates" and not on.provenance["model_variance"]
    with pytest.raises(FitError, match="model_error='templates' is not understood"):
        fit(model, obs, model_error="templates", **kw)


def test_templates_are_not_combined_with_correlated_noise(model):
    from photosphere.infer.likelihood import CorrelatedNoise

    assert model_error.use_templates(model, "auto")
    assert not model_error.use_templates(model, "auto", CorrelatedNoise(0.01, 5.0))
    assert not model_error.use_templates(model, "none")


def test_frozen_templates_equal_the_moving_ones_at_the_reference_only(model):
    obs, _ = simulate(model, TRUTH, np.linspace(5005, 5035, 400), resolution=30000, snr=80)
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20))
    ref = chain.theta_from(TRUTH)
    other = chain.theta_from({**TRUTH, "teff": 6300.0})
    moving = Likelihood(chain, model_error="auto")
    frozen = Likelihood(chain, model_error="auto", templates_at=ref)
    assert float(frozen.log_likelihood(ref)) == pytest.approx(float(moving.log_likelihood(ref)),
                                                              rel=1e-12)
    assert float(frozen.log_likelihood(other)) != pytest.approx(
        float(moving.log_likelihood(other)), rel=1e-6)
    # with B frozen, the template columns do not move with θ: the Jacobian of the amplitudes
    # comes from the data fit only, and is finite
    _, jac = batched_jacobian(frozen.residuals, torch.as_tensor(other)[None])
    assert torch.isfinite(jac).all()


@pytest.mark.slow
def test_fit_with_templates_on_two_exposures(model):
    a, _ = simulate(model, TRUTH, np.linspace(5006, 5034, 400), resolution=30000, snr=60)
    b, _ = simulate(model, {**TRUTH, "rv": -4.0}, np.linspace(5006, 5034, 400),
                    resolution=30000, snr=60, seed=3)
    res = fit(model, [a, b], resolution=30000, rv_bounds=(-20, 20), n_grid=2, n_starts=2)
    assert res.provenance["model_error"] == "templates"
    assert 1 <= res.flags["model_error_rounds"] <= 3 and res.flags["model_error_templates"] == 2
    assert set(res.free) >= {"rv_0", "rv_1"} and res.covariance.shape == (6, 6)
    assert abs(res.values["rv_1"] + 4.0) < 5 * res.sigma["rv_1"]
    assert res.n_pixels == 800 and np.isfinite(res.chi2)


@pytest.mark.slow
def test_mcmc_runs_with_the_templates_frozen_at_the_fit(model):
    from photosphere.infer.mcmc import sample

    obs, _ = simulate(model, TRUTH, np.linspace(5008, 5032, 300), resolution=30000, snr=80)
    fixed = {"vsini": 4.0, "rv": 2.0}
    start = fit(model, obs, resolution=30000, rv_bounds=(-20, 20), n_grid=2, n_starts=2,
                fixed=fixed)
    post = sample(model, obs, initial=start, resolution=30000, rv_bounds=(-20, 20),
                  n_walkers=8, n_steps=12, burn=2, progress=False, fixed=fixed)
    assert post.samples.shape == (8 * 10, 3) and np.all(np.isfinite(post.samples))
    assert post.provenance["model_error"] == "templates"
    # sample() scores with B frozen at the least-squares solution: its χ² at the best sample
    # is that of such a likelihood, not of one whose B follows θ
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20))
    best = chain.theta_from(post.flags["max_posterior"])
    frozen = Likelihood(chain, model_error="auto", templates_at=chain.theta_from(start.values))
    moving = Likelihood(chain, model_error="auto")
    assert post.chi2 == pytest.approx(float(frozen.chi2(best)), rel=1e-10)
    assert post.chi2 != pytest.approx(float(moving.chi2(best)), rel=1e-9)
