"""The Cannon: training recovers a known model, s² is the global likelihood maximum, the test step
recovers labels with honest covariances, and bad input is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import CheckpointError, ModelError
from photosphere.models import cannon_inference, polynomial
from photosphere.models.cannon import CannonModel
from photosphere.models.cannon_training import PixelSolver, lasso_coordinate_descent
from photosphere.spectrum import Spectrum

NAMES = ("teff", "logg", "feh")
CENTRE = np.array([4800.0, 2.5, -0.3])
HALF_WIDTH = np.array([400.0, 0.8, 0.4])


def make_truth(rng, n_pix=40, s2_range=(1e-5, 1e-3)):
    """A known quadratic Cannon: θ (n_pix, 10) and s² (n_pix,) in the scaling of `scaling`."""
    terms = polynomial.polynomial_terms(3, 2)
    theta = rng.normal(0, 0.03, (n_pix, len(terms)))
    theta[:, 0] = 1 - np.abs(rng.normal(0, 0.2, n_pix))
    s2 = 10 ** rng.uniform(np.log10(s2_range[0]), np.log10(s2_range[1]), n_pix)
    return theta, s2


def draw(rng, theta, s2, n, scaling, snr=(50, 200), labels=None):
    """Labels, flux and ivar drawn from the known model (labels scaled with `scaling`)."""
    if labels is None:
        labels = CENTRE + HALF_WIDTH * rng.uniform(-1, 1, (n, 3))
    x = (labels - scaling[0]) / scaling[1]
    mean = polynomial.design_matrix(x, polynomial.polynomial_terms(3, 2)) @ theta.T
    sigma = (1 / rng.uniform(*snr, n))[:, None] * np.ones_like(mean)
    flux = mean + rng.normal(size=mean.shape) * np.sqrt(sigma**2 + s2)
    return labels, flux, 1 / sigma**2


def trained(rng, n_train=500, n_pix=40, **kwargs):
    theta, s2 = make_truth(rng, n_pix)
    labels = CENTRE + HALF_WIDTH * rng.uniform(-1, 1, (n_train, 3))
    # the model scales labels by the training median and 2.5-97.5 % range: use the same here
    scaling = (np.percentile(labels, 50, axis=0),
               np.ptp(np.percentile(labels, [2.5, 97.5], axis=0), axis=0))
    labels, flux, ivar = draw(rng, theta, s2, n_train, scaling, labels=labels)
    wavelength = np.linspace(15200.0, 15300.0, n_pix)
    model = CannonModel(NAMES, **kwargs).fit(labels, flux, ivar, wavelength)
    return model, theta, s2, scaling, ivar


def test_polynomial_terms_and_analytic_jacobian(rng):
    terms = polynomial.polynomial_terms(3, 2)
    assert len(terms) == 10
    assert polynomial.term_names(terms, NAMES)[:5] == ["1", "teff", "logg", "feh", "teff^2"]
    assert len(polynomial.polynomial_terms(3, 3, cross_terms=False)) == 10
    x = rng.normal(size=(4, 3))
    jac = polynomial.design_jacobian(x, polynomial.polynomial_terms(3, 3))
    eps = 1e-6
    for k in range(3):
        dx = np.zeros(3)
        dx[k] = eps
        fd = (polynomial.design_matrix(x + dx, polynomial.polynomial_terms(3, 3))
              - polynomial.design_matrix(x - dx, polynomial.polynomial_terms(3, 3))) / (2 * eps)
        np.testing.assert_allclose(jac[..., k], fd, atol=1e-8)


def test_training_recovers_known_theta_and_scatter(rng):
    model, theta, s2, scaling, ivar = trained(rng, n_train=800)
    np.testing.assert_allclose(model.fiducials_, scaling[0])
    # standard errors of θ from the weighted normal matrix at the true s²
    a = model.design_matrix(model.training_labels_)
    m, *_ = PixelSolver(a, np.ones((800, 40)), ivar).normal_equations(s2)
    se = np.sqrt(np.diagonal(np.linalg.inv(m), axis1=1, axis2=2))
    z = (model.theta_ - theta) / se
    assert np.abs(z).max() < 5
    assert 0.8 < np.std(z) < 1.2
    ratio = model.s2_ / s2
    assert 0.75 < np.median(ratio) < 1.25
    assert np.all((ratio > 0.4) & (ratio < 2.5))
    assert model.n_terms == 10 and model.n_parameters == 40 * 11


def test_batched_theta_equals_per_pixel_weighted_least_squares(rng):
    model, *_ = trained(rng, n_train=200, n_pix=8)
    # rebuild the training data the slow, obvious way for one pixel
    labels = model.training_labels_
    a = model.design_matrix(labels)
    flux = rng.normal(1, 0.01, (200, 8))
    ivar = rng.uniform(1e3, 1e4, (200, 8))
    s2 = rng.uniform(1e-6, 1e-4, 8)
    theta, _ = PixelSolver(a, flux, ivar).solve(s2)
    for pix in range(8):
        w = np.sqrt(ivar[:, pix] / (1 + s2[pix] * ivar[:, pix]))
        ref = np.linalg.lstsq(a * w[:, None], flux[:, pix] * w, rcond=None)[0]
        np.testing.assert_allclose(theta[pix], ref, rtol=1e-7, atol=1e-9)


def _brute_force_loglike(a, flux, ivar, s2_values):
    """Profile log-likelihood of one pixel on a list of s² values, one lstsq each."""
    out = []
    for s2 in s2_values:
        var = s2 + 1 / ivar
        w = 1 / np.sqrt(var)
        theta = np.linalg.lstsq(a * w[:, None], flux * w, rcond=None)[0]
        r = flux - a @ theta
        out.append(-0.5 * np.sum(r**2 / var + np.log(var * ivar)))
    return np.array(out)


def test_scatter_is_the_global_maximum_of_the_training_likelihood(rng):
    model, *_ = trained(rng, n_train=150, n_pix=6)
    theta_true, s2_true = make_truth(rng, 6, s2_range=(1e-7, 3e-3))
    labels = model.training_labels_
    a = model.design_matrix(labels)
    sigma = (1 / rng.uniform(30, 300, 150))[:, None] * np.ones((150, 6))
    flux = a @ theta_true.T + rng.normal(size=sigma.shape) * np.sqrt(sigma**2 + s2_true)
    ivar = 1 / sigma**2
    refit = CannonModel(NAMES).fit(labels, flux, ivar)
    fine = np.concatenate([[0.0], np.logspace(-10, 0, 1201)])
    for pix in range(6):
        brute = _brute_force_loglike(a, flux[:, pix], ivar[:, pix], fine)
        ours = _brute_force_loglike(a, flux[:, pix], ivar[:, pix], [refit.s2_[pix]])[0]
        assert ours >= brute.max() - 1e-3, (pix, refit.s2_[pix], fine[brute.argmax()])
        np.testing.assert_allclose(refit.training_log_likelihood_[pix], ours, rtol=1e-9)


def test_l1_regularisation_gives_sparse_theta_satisfying_kkt(rng):
    model, *_ = trained(rng, n_train=300, n_pix=10)
    labels = model.training_labels_
    a = model.design_matrix(labels)
    flux = rng.normal(1, 0.02, (300, 10)) + 0.05 * a[:, 1:2]   # only the teff term matters
    ivar = np.full((300, 10), 1e4)
    plain = CannonModel(NAMES).fit(labels, flux, ivar)
    lam = 1e3
    sparse = CannonModel(NAMES, regularization=lam).fit(labels, flux, ivar)
    assert np.mean(sparse.theta_[:, 1:] == 0) > 0.5
    assert np.mean(plain.theta_[:, 1:] == 0) == 0
    assert np.all(sparse.theta_[:, 1] != 0)
    # KKT conditions of the lasso at the fitted s²
    solver = PixelSolver(a, flux, ivar)
    m, b, *_ = solver.normal_equations(sparse.s2_)
    grad = np.einsum("lpq,lq->lp", m, sparse.theta_) - b
    nz = sparse.theta_ != 0
    nz[:, 0] = False
    np.testing.assert_allclose(grad[nz], -lam * np.sign(sparse.theta_[nz]), rtol=1e-4,
                               atol=1e-3)
    assert np.all(np.abs(grad[:, 1:][sparse.theta_[:, 1:] == 0]) <= lam * (1 + 1e-6))
    np.testing.assert_allclose(grad[:, 0], 0, atol=1e-3)


def test_lasso_without_penalty_is_least_squares(rng):
    m = rng.normal(size=(5, 4, 4))
    m = m @ m.transpose(0, 2, 1) + 4 * np.eye(4)
    b = rng.normal(size=(5, 4))
    theta = lasso_coordinate_descent(m, b, np.zeros(5), np.zeros((5, 4)), tolerance=1e-13)
    np.testing.assert_allclose(theta, np.linalg.solve(m, b[:, :, None])[:, :, 0], atol=1e-9)


def test_censoring_removes_label_influence(rng):
    n_pix = 12
    allowed = np.ones(n_pix, bool)
    allowed[:6] = False
    model, *_ = trained(rng, n_train=300, n_pix=n_pix, censors={"feh": allowed})
    feh_terms = [p for p, t in enumerate(model.term_indices) if 2 in t]
    assert np.all(model.theta_[:6, feh_terms] == 0)
    assert np.all(model.theta_[6:, feh_terms] != 0)
    grad = model.gradient(np.array([[4800.0, 2.5, -0.3]]))[0]
    assert np.all(grad[:6, 2] == 0) and np.all(grad[6:, 2] != 0)


def test_predict_torch_matches_numpy_and_gradient_matches_finite_differences(rng):
    model, *_ = trained(rng, n_train=200, n_pix=15)
    labels = np.array([[4700.0, 2.2, -0.1], [5000.0, 3.0, -0.5]])
    flux = model.predict(labels)
    t = torch.tensor(labels, requires_grad=True)
    flux_t = model.predict(t)
    np.testing.assert_allclose(flux_t.detach().numpy(), flux, rtol=1e-12)
    flux_t[:, 3].sum().backward()
    grad = model.gradient(labels)
    np.testing.assert_allclose(t.grad.numpy(), grad[:, 3, :], rtol=1e-8)
    step = np.array([1.0, 1e-3, 1e-3])
    for k in range(3):
        d = np.zeros(3)
        d[k] = step[k]
        fd = (model.predict(labels + d) - model.predict(labels - d)) / (2 * step[k])
        np.testing.assert_allclose(grad[..., k], fd, rtol=1e-5, atol=1e-10)


def _test_set(rng, model, theta, s2, scaling, n, snr=(80, 150)):
    labels = CENTRE + 0.8 * HALF_WIDTH * rng.uniform(-1, 1, (n, 3))
    x = (labels - scaling[0]) / scaling[1]
    mean = polynomial.design_matrix(x, polynomial.polynomial_terms(3, 2)) @ theta.T
    sigma = (1 / rng.uniform(*snr, n))[:, None] * np.ones_like(mean)
    flux = mean + rng.normal(size=mean.shape) * np.sqrt(sigma**2 + s2)
    return labels, flux, 1 / sigma**2


def test_inference_recovers_labels_with_calibrated_covariance(rng):
    model, theta, s2, scaling, _ = trained(rng, n_train=1500, n_pix=150)
    labels, flux, ivar = _test_set(rng, model, theta, s2, scaling, 300)
    fit = model.infer_labels(flux, ivar)
    z = (fit.labels - labels) / fit.sigma
    inside = np.mean(np.abs(z) < 1, axis=0)
    assert np.all((inside > 0.58) & (inside < 0.78)), inside
    assert np.all(np.abs(np.median(z, axis=0)) < 0.25)
    assert np.all(fit.flags & cannon_inference.FLAG_NOT_CONVERGED == 0)
    np.testing.assert_allclose(np.median(fit.chi2_reduced), 1.0, atol=0.1)
    assert fit.covariance.shape == (300, 3, 3)


def test_covariance_is_inverse_fisher_matrix_in_physical_units(rng):
    model, theta, s2, scaling, _ = trained(rng, n_train=400, n_pix=60)
    _, flux, ivar = _test_set(rng, model, theta, s2, scaling, 2)
    fit = model.infer_labels(flux, ivar)
    step = np.array([0.5, 1e-3, 1e-3])
    for i in range(2):
        jac = np.empty((60, 3))
        for k in range(3):
            d = np.zeros(3)
            d[k] = step[k]
            jac[:, k] = (model.predict(fit.labels[i] + d) - model.predict(fit.labels[i] - d)) / (
                2 * step[k])
        w = ivar[i] / (1 + model.s2_ * ivar[i])
        fisher = jac.T @ (jac * w[:, None])
        np.testing.assert_allclose(fit.covariance[i], np.linalg.inv(fisher), rtol=1e-4)


def test_batched_inference_equals_one_at_a_time_and_multistart_never_worse(rng):
    model, theta, s2, scaling, _ = trained(rng, n_train=300, n_pix=50)
    _, flux, ivar = _test_set(rng, model, theta, s2, scaling, 6, snr=(10, 20))
    batch = model.infer_labels(flux, ivar, n_starts=4, chunk_size=4)
    for i in range(6):
        one = model.infer_labels(flux[i], ivar[i], n_starts=4)
        # same optimum: chi2 equal to round-off, labels equal to far below their 1-sigma
        # (flat chi2 directions at S/N 10-20 let round-off move a label by ~1e-6 of its value)
        assert one.chi2[0] == pytest.approx(batch.chi2[i], rel=1e-9)
        sigma = np.sqrt(np.diag(batch.covariance[i]))
        assert np.all(np.abs(one.labels[0] - batch.labels[i]) < 1e-3 * sigma)
    single = model.infer_labels(flux, ivar, n_starts=1)
    assert np.all(batch.chi2 <= single.chi2 * (1 + 1e-9))


def test_reported_chi2_and_labels_equal_a_direct_per_spectrum_solve(rng):
    """The batched LM works on quadratic forms (T = θᵀWθ per spectrum); its χ² must equal the
    direct Σ w (f - model)², and its labels a plain per-spectrum scipy least-squares fit."""
    from scipy.optimize import least_squares

    model, theta, s2, scaling, _ = trained(rng, n_train=400, n_pix=60)
    _, flux, ivar = _test_set(rng, model, theta, s2, scaling, 5)
    fit = model.infer_labels(flux, ivar)
    w = ivar / (1 + model.s2_ * ivar)
    direct = np.sum(w * (flux - model.predict(fit.labels)) ** 2, axis=1)
    np.testing.assert_allclose(fit.chi2, direct, rtol=1e-9)
    for i in range(5):
        ref = least_squares(lambda lab, i=i: (flux[i] - model.predict(lab)) * np.sqrt(w[i]),
                            fit.labels[i] + np.array([30.0, 0.05, 0.03]),
                            x_scale=np.array([100.0, 0.1, 0.1]), xtol=1e-12, ftol=1e-12,
                            gtol=1e-12)
        assert 2 * ref.cost >= fit.chi2[i] * (1 - 1e-9)
        assert np.all(np.abs(fit.labels[i] - ref.x) < 1e-3 * fit.sigma[i]), (
            fit.labels[i], ref.x, fit.sigma[i])


def test_bounds_poor_fit_and_spectrum_input(rng):
    model, theta, s2, scaling, _ = trained(rng, n_train=300, n_pix=50)
    labels, flux, ivar = _test_set(rng, model, theta, s2, scaling, 3)
    labels[:, 0] = [4500.0, 4700.0, 5000.0]
    fit = model.infer_labels(flux, ivar, bounds={"teff": (4000.0, 4401.0)})
    assert np.all(fit.labels[:, 0] <= 4401.0)
    assert np.all(fit.flags & cannon_inference.FLAG_AT_BOUND)
    poor = model.infer_labels(flux, ivar * 25)
    assert np.all(poor.flags & cannon_inference.FLAG_POOR_FIT)
    assert "poor_fit" in poor.flag_names(0)
    spec = Spectrum(model.wavelength, flux[0], ivar=ivar[0], medium="vacuum")
    one = model.infer_spectrum(spec)
    np.testing.assert_allclose(one.labels[0], model.infer_labels(flux[0], ivar[0]).labels[0])
    assert set(one.as_dict(0)["labels"]) == set(NAMES)
    # the one Result type: same labels, σ and χ², the model spectrum as a segment
    result = one.to_result(0, spec)
    assert result.method == "cannon" and result.free == tuple(NAMES)
    assert result.labels[NAMES[0]] == (one.labels[0, 0], one.sigma[0, 0])
    assert result.chi2 == one.chi2[0] and result.n_pixels == one.n_pixels[0]
    np.testing.assert_array_equal(result.segments[0].model, one.model_flux[0])
    assert fit.to_result(1).flags["cannon"] == fit.flag_names(1)


def test_save_load_round_trip(rng, tmp_path):
    model, *_ = trained(rng, n_train=200, n_pix=20, censors={"logg": np.arange(20) > 3})
    path = model.save(tmp_path / "cannon.h5")
    again = CannonModel.load(path)
    for name in ("theta_", "s2_", "fiducials_", "scales_", "training_labels_", "wavelength_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))
    assert again.settings() == model.settings()
    assert again.provenance_["n_training_stars"] == 200
    np.testing.assert_array_equal(again.censors["logg"], model.censors["logg"])
    labels = np.array([[4800.0, 2.5, -0.3]])
    np.testing.assert_array_equal(again.predict(labels), model.predict(labels))
    bogus = tmp_path / "bogus.h5"
    import h5py

    with h5py.File(bogus, "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(CheckpointError, match="not a photosphere Cannon model"):
        CannonModel.load(bogus)


@pytest.mark.parametrize("compiled", [True, False])
def test_ivar_and_flux_checks_in_both_paths(rng, monkeypatch, compiled):
    """Negative, NaN or -inf ivar is refused; non-finite flux and +inf ivar are masked (the
    result equals training with those values masked by hand). ``compiled``: the checks by the
    numba pass (when numba is installed) or by the NumPy reductions."""
    from photosphere.models import cannon_kernel

    if compiled and not cannon_kernel.AVAILABLE:
        pytest.skip("numba is not installed")
    if not compiled:
        monkeypatch.setattr(cannon_kernel, "AVAILABLE", False)
    _, theta, s2, scaling, _ = trained(rng, n_train=100, n_pix=10)
    labels, flux, ivar = draw(rng, theta, s2, 100, scaling)
    for bad in (-1.0, np.nan, -np.inf):
        wrong = ivar.copy()
        wrong[3, 2] = bad
        with pytest.raises(ModelError, match="ivar has negative or NaN values"):
            CannonModel(NAMES).fit(labels, flux, wrong)
    dirty_flux, dirty_ivar = flux.copy(), ivar.copy()
    dirty_flux[5, 1], dirty_flux[6, 2] = np.nan, np.inf
    dirty_ivar[8, 3] = np.inf
    clean_ivar = ivar.copy()
    clean_ivar[5, 1] = clean_ivar[6, 2] = clean_ivar[8, 3] = 0.0
    clean_flux = flux.copy()
    clean_flux[5, 1] = clean_flux[6, 2] = 1.0
    dirty = CannonModel(NAMES).fit(labels, dirty_flux, dirty_ivar)
    clean = CannonModel(NAMES).fit(labels, clean_flux, clean_ivar)
    np.testing.assert_array_equal(dirty.theta_, clean.theta_)
    np.testing.assert_array_equal(dirty.s2_, clean.s2_)
    masked = ivar.copy()
    masked[:95, 4] = 0                       # 5 usable stars, 10 terms
    masked[95:, 4] = np.inf                  # ... of which none after cleaning: still refused
    with pytest.raises(ModelError, match=r"pixel 4 .*with 0"):
        CannonModel(NAMES).fit(labels, flux, masked)


def test_bad_input_is_refused_with_clear_errors(rng):
    model, theta, s2, scaling, _ = trained(rng, n_train=100, n_pix=10)
    labels, flux, ivar = draw(rng, theta, s2, 100, scaling)
    nan_labels = labels.copy()
    nan_labels[7, 1] = np.nan
    with pytest.raises(ModelError, match=r"non-finite value.*star 7 label 'logg'"):
        CannonModel(NAMES).fit(nan_labels, flux, ivar)
    with pytest.raises(ModelError, match="9 training stars cannot constrain 10 terms"):
        CannonModel(NAMES).fit(labels[:9], flux[:9], ivar[:9])
    masked = ivar.copy()
    masked[:, 4] = 0
    with pytest.raises(ModelError, match=r"pixel 4 .*all- or nearly all-masked"):
        CannonModel(NAMES).fit(labels, flux, masked, np.linspace(15200, 15300, 10))
    with pytest.raises(ModelError, match="different wavelength grid"):
        model.infer_labels(flux, ivar, wavelength=model.wavelength + 0.5)
    with pytest.raises(ModelError, match="resample them onto the model"):
        model.infer_labels(flux[:, :8], ivar[:, :8])
    with pytest.raises(ModelError, match="all-masked"):
        model.infer_labels(flux[:3], np.zeros_like(ivar[:3]))
    one_empty = ivar[:3].copy()
    one_empty[1] = 0
    fit = model.infer_labels(flux[:3], one_empty)
    assert np.all(np.isnan(fit.labels[1])) and np.all(np.isfinite(fit.labels[[0, 2]]))
    assert fit.flag_names(1) == ["not_converged", "few_pixels"]
    with pytest.raises(ModelError, match="not trained yet"):
        CannonModel(NAMES).predict(labels)
    with pytest.raises(ModelError, match="do not vary"):
        same = labels.copy()
        same[:, 2] = -0.3
        CannonModel(NAMES).fit(same, flux, ivar)


def test_sum_of_logs_by_products_is_exact_and_never_overflows(rng):
    from photosphere.models.cannon_training import _sum_log

    for largest in (1e-3, 1e2, 1e12, 1e100):
        x = 1 + rng.uniform(0, largest, (7, 301))
        ref = np.log(x).sum(axis=1)
        np.testing.assert_allclose(_sum_log(x.copy(), largest), ref, rtol=1e-12)


def _jittered_set(rng, model, theta, s2, scaling, n, jitter):
    """Spectra made at labels + jitter (unknown to the fit): a model error correlated across
    pixels, like a quadratic Cannon's mismatch with real spectra. Returns (labels, flux, ivar)."""
    labels = CENTRE + 0.7 * HALF_WIDTH * rng.uniform(-1, 1, (n, 3))
    _, flux, ivar = _test_set(rng, model, theta, s2, scaling, n)
    shifted = labels + jitter * rng.normal(size=labels.shape)
    x = (shifted - scaling[0]) / scaling[1]
    mean = polynomial.design_matrix(x, polynomial.polynomial_terms(3, 2)) @ theta.T
    sigma = 1 / np.sqrt(ivar)
    flux = mean + rng.normal(size=mean.shape) * np.sqrt(sigma**2 + s2)
    return labels, flux, ivar


def test_uncertainty_calibration_restores_coverage_and_is_saved(rng, tmp_path):
    model, theta, s2, scaling, _ = trained(rng, n_train=1500, n_pix=150)
    # exact model: the formal errors are right and the calibration leaves them (scale ≈ 1)
    labels, flux, ivar = _test_set(rng, model, theta, s2, scaling, 300)
    summary = model.calibrate_uncertainties(flux, ivar, labels)
    assert np.allclose(model.sigma_scale_, 1.0, atol=0.15), summary
    # a model error correlated across pixels: the formal errors are several times too small
    sigma_formal = np.median(model.infer_labels(flux, ivar).sigma_formal, axis=0)
    jitter = 3 * sigma_formal
    labels, flux, ivar = _jittered_set(rng, model, theta, s2, scaling, 400, jitter)
    summary = model.calibrate_uncertainties(flux, ivar, labels)
    assert np.all(model.sigma_scale_ > 2.0), summary
    assert np.all(np.array(list(summary["coverage_1sigma_formal"].values())) < 0.45)
    # on an independent set from the same process, the calibrated errors cover ~68 %
    labels, flux, ivar = _jittered_set(rng, model, theta, s2, scaling, 400, jitter)
    fit = model.infer_labels(flux, ivar)
    covered = np.mean(np.abs(fit.labels - labels) <= fit.sigma, axis=0)
    assert np.all((covered > 0.58) & (covered < 0.78)), covered
    np.testing.assert_allclose(fit.sigma, fit.sigma_formal * model.sigma_scale_)
    # saved and loaded with the model
    again = CannonModel.load(model.save(tmp_path / "calibrated.h5"))
    np.testing.assert_array_equal(again.sigma_scale_, model.sigma_scale_)
    assert again.provenance_["uncertainty_calibration"]["n_spectra"] > 300
    with pytest.raises(ModelError, match="too few"):
        model.calibrate_uncertainties(flux[:5], ivar[:5], labels[:5])
