"""The fast s² search (batched Newton on the profile likelihood) against an obvious per-pixel
reference: for each pixel alone, weighted least squares by lstsq at every s² of a fine grid and a
bounded scalar maximisation around the best node."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from photosphere.errors import ModelError
from photosphere.models import cannon_kernel, polynomial
from photosphere.models.cannon_newton import ScatterNewton


def _profile(a, flux, ivar, s2, keep=None):
    """θ̂ and ln L of one pixel at scatter s2, by lstsq on the whitened design."""
    cols = np.ones(a.shape[1], dtype=bool) if keep is None else keep
    var_ivar = 1 + s2 * ivar                        # (s² + σ²) ivar
    w = np.sqrt(ivar / var_ivar)
    theta = np.zeros(a.shape[1])
    theta[cols] = np.linalg.lstsq(a[:, cols] * w[:, None], flux * w, rcond=None)[0]
    r = flux - a @ theta
    return theta, -0.5 * np.sum(r**2 * ivar / var_ivar + np.log(var_ivar))


def _reference(a, flux, ivar, keep=None):
    """s², θ, ln L of one pixel: the best of a fine log grid (and s² = 0), then polished."""
    grid = np.concatenate([[0.0], np.logspace(-10, 0, 401)])
    values = [_profile(a, flux, ivar, s2, keep)[1] for s2 in grid]
    best = int(np.argmax(values))
    if best > 0:
        lo, hi = np.log10(grid[max(best - 1, 1)]), np.log10(grid[min(best + 1, len(grid) - 1)])
        res = minimize_scalar(lambda t: -_profile(a, flux, ivar, 10**t, keep)[1],
                              bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
        if -res.fun > values[best]:
            return 10**res.x, *_profile(a, flux, ivar, 10**res.x, keep)
    return grid[best], *_profile(a, flux, ivar, grid[best], keep)


def _data(rng, n_stars=300, n_pix=24, n_labels=3, masked=0.1):
    terms = polynomial.polynomial_terms(n_labels, 2)
    x = rng.uniform(-1, 1, (n_stars, n_labels))
    a = polynomial.design_matrix(x, terms)
    theta = rng.normal(0, 0.05, (n_pix, len(terms)))
    theta[:, 0] = 1.0
    # s² from 0 (a third of the pixels: noise alone) up to 1e-2, S/N 20-300 per star and pixel
    s2 = np.where(rng.random(n_pix) < 0.33, 0.0, 10 ** rng.uniform(-6, -2, n_pix))
    sigma = 1 / rng.uniform(20, 300, (n_stars, n_pix))
    flux = a @ theta.T + rng.normal(size=sigma.shape) * np.sqrt(sigma**2 + s2)
    ivar = np.where(rng.random(sigma.shape) < masked, 0.0, 1 / sigma**2)
    return terms, a, flux, ivar


@pytest.mark.parametrize("block", [5, 64])
def test_newton_matches_per_pixel_reference(rng, block):
    terms, a, flux, ivar = _data(rng)
    theta, s2, loglike, info = ScatterNewton(a, flux, ivar, terms, block=block).run()
    assert info["max_newton_iterations"] >= 1
    for pix in range(flux.shape[1]):
        ref_s2, _, ref_ll = _reference(a, flux[:, pix], ivar[:, pix])
        # never worse than the reference optimum by more than the stopping tolerance
        assert loglike[pix] >= ref_ll - 2e-4, (pix, s2[pix], ref_s2)
        # the returned θ and ln L are exactly those of the returned s²
        exact_theta, exact_ll = _profile(a, flux[:, pix], ivar[:, pix], s2[pix])
        np.testing.assert_allclose(theta[pix], exact_theta, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(loglike[pix], exact_ll, rtol=1e-10)
        if ref_s2 > 0 and s2[pix] > 0:
            assert abs(np.log10(s2[pix] / ref_s2)) < 0.05 or abs(loglike[pix] - ref_ll) < 2e-4
        else:
            assert s2[pix] == ref_s2 or abs(loglike[pix] - ref_ll) < 2e-4


def test_cheap_evaluations_equal_a_direct_solve_and_the_grid_search(rng):
    """On APOGEE-like data (S/N 50-200, s² well below σ²) most Newton steps are evaluated by
    refinement from an earlier factor; the result must still be, pixel by pixel, the direct
    least-squares θ at the returned s², and as good as the independent grid + Brent search."""
    from photosphere.models.cannon_training import PixelSolver, optimise_scatter

    terms = polynomial.polynomial_terms(3, 2)
    n_stars, n_pix = 400, 40
    a = polynomial.design_matrix(rng.uniform(-1, 1, (n_stars, 3)), terms)
    theta_true = rng.normal(0, 0.05, (n_pix, len(terms)))
    theta_true[:, 0] = 1.0
    sigma = 1 / rng.uniform(50, 200, (n_stars, 1)) * np.ones((1, n_pix))
    s2_true = np.where(rng.random(n_pix) < 0.2, 0.0, 10 ** rng.uniform(-6.5, -4.5, n_pix))
    flux = a @ theta_true.T + rng.normal(size=sigma.shape) * np.sqrt(sigma**2 + s2_true)
    ivar = np.where(rng.random(sigma.shape) < 0.02, 0.0, 1 / sigma**2)
    theta, s2, loglike, info = ScatterNewton(a, flux, ivar, terms, block=16).run()
    assert info["cheap_evaluations_per_pixel"] > 0.5          # the cheap path is exercised
    for pix in range(n_pix):
        good = ivar[:, pix] > 0
        var = 1 / ivar[good, pix] + s2[pix]
        ag, fg = a[good], flux[good, pix]
        direct = np.linalg.solve(ag.T @ (ag / var[:, None]), ag.T @ (fg / var))
        # refinement stops when the error left is below 1e-10 of max|θ| (θ_0 ≈ 1 here)
        np.testing.assert_allclose(theta[pix], direct, rtol=1e-9, atol=1e-10)
        r = fg - ag @ direct
        exact_ll = -0.5 * np.sum(r**2 / var + np.log(var * ivar[good, pix]))
        np.testing.assert_allclose(loglike[pix], exact_ll, rtol=1e-11)
    *_, grid_ll = optimise_scatter(
        PixelSolver(a, flux, ivar), np.concatenate([[0.0], np.logspace(-8, 0, 9)]))
    assert np.all(loglike >= grid_ll - 1e-4)


def test_distinct_monomials_build_the_same_normal_matrices(rng):
    terms, a, flux, ivar = _data(rng, n_pix=4, n_labels=5)
    newton = ScatterNewton(a, flux, ivar, terms)
    assert newton.n_monomials == 126           # degree ≤ 4 monomials of 5 labels (231 products)
    w = rng.uniform(0, 2, (4, a.shape[0]))                 # (pixels, stars)
    inverse = newton._normal_factor(w, None, precise=True)
    m = np.einsum("bn,np,nq->bpq", w, a, a)
    np.testing.assert_allclose(np.linalg.inv(inverse), m, rtol=1e-9, atol=1e-11)


def test_censored_terms_stay_zero_and_match_reference(rng):
    terms, a, flux, ivar = _data(rng, n_pix=6)
    keep = np.ones((6, len(terms)), dtype=bool)
    uses_label_2 = np.array([2 in t for t in terms])
    keep[::2] = ~uses_label_2                  # label 2 censored at pixels 0, 2, 4
    theta, s2, loglike, _ = ScatterNewton(a, flux, ivar, terms, keep).run()
    assert np.all(theta[::2][:, uses_label_2] == 0)
    for pix in range(6):
        _, _, ref_ll = _reference(a, flux[:, pix], ivar[:, pix], keep[pix])
        assert loglike[pix] >= ref_ll - 2e-4
        np.testing.assert_allclose(theta[pix], _profile(a, flux[:, pix], ivar[:, pix], s2[pix],
                                                        keep[pix])[0], rtol=1e-7, atol=1e-10)


def test_float32_normal_matrices_keep_float64_theta(rng):
    terms, a, flux, ivar = _data(rng, n_pix=8)
    *_, l64, _ = ScatterNewton(a, flux, ivar, terms).run()
    t32, s32, l32, _ = ScatterNewton(a, flux, ivar, terms, precision=np.float32).run()
    np.testing.assert_allclose(l32, l64, atol=2e-4)
    for pix in range(8):
        exact_theta, _ = _profile(a, flux[:, pix], ivar[:, pix], s32[pix])
        np.testing.assert_allclose(t32[pix], exact_theta, rtol=1e-6, atol=1e-9)


def test_blocks_on_several_threads_give_the_same_result(rng):
    import torch
    from threadpoolctl import threadpool_info

    terms, a, flux, ivar = _data(rng, n_pix=40)
    before = (torch.get_num_threads(), [lib["num_threads"] for lib in threadpool_info()])
    one = ScatterNewton(a, flux, ivar, terms, block=8).run(threads=1)
    two = ScatterNewton(a, flux, ivar, terms, block=8).run(threads=3)
    for x, y in zip(one[:3], two[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert one[3]["pixel_evaluations"] == two[3]["pixel_evaluations"]
    # the single-thread limit is lifted afterwards
    assert (torch.get_num_threads(), [lib["num_threads"] for lib in threadpool_info()]) == before


# ---------------------------------------------------------------- the compiled kernel (numba)
needs_numba = pytest.mark.skipif(not cannon_kernel.AVAILABLE,
                                 reason="numba is not installed: the NumPy path is used")


@needs_numba
@pytest.mark.parametrize("censored", [False, True])
def test_numba_kernel_equals_the_numpy_path(rng, censored):
    """Same seeded problem, both engines: ln L within the search tolerance at every pixel (here
    both make the same decisions, so s², θ and ln L agree to rounding), θ the exact weighted
    least-squares solution at the returned s² either way."""
    terms, a, flux, ivar = _data(rng, n_stars=400, n_pix=70)
    keep = None
    if censored:
        keep = np.ones((70, len(terms)), dtype=bool)
        keep[::3] = ~np.array([1 in t for t in terms])         # label 1 censored
    fast = ScatterNewton(a, flux, ivar, terms, keep, block=32, engine="numba")
    slow = ScatterNewton(a, flux, ivar, terms, keep, block=32, engine="numpy")
    t_fast, s_fast, l_fast, info_fast = fast.run()
    t_slow, s_slow, l_slow, info_slow = slow.run()
    assert (info_fast["engine"], info_slow["engine"]) == ("numba", "numpy")
    np.testing.assert_allclose(l_fast, l_slow, rtol=0, atol=1e-4)
    np.testing.assert_allclose(l_fast, l_slow, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(s_fast > 0, s_slow > 0)
    np.testing.assert_allclose(s_fast, s_slow, rtol=1e-7)
    np.testing.assert_allclose(t_fast, t_slow, rtol=1e-8, atol=1e-10)
    for pix in range(0, 70, 7):
        exact_theta, exact_ll = _profile(a, flux[:, pix], ivar[:, pix], s_fast[pix],
                                         None if keep is None else keep[pix])
        np.testing.assert_allclose(t_fast[pix], exact_theta, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(l_fast[pix], exact_ll, rtol=1e-10)
    if censored:
        assert np.all(t_fast[::3][:, [1 in t for t in terms]] == 0)
    # the kernel builds no normal matrix the NumPy path does not (it skips finished pixels)
    assert info_fast["pixel_evaluations"] <= info_slow["pixel_evaluations"]
    assert info_fast["max_newton_iterations"] == info_slow["max_newton_iterations"]


@needs_numba
def test_numba_kernel_reports_singular_normal_equations(rng):
    _, a, flux, ivar = _data(rng, n_pix=3)
    a = a.copy()
    a[:, 2] = 0.0                              # a term that nothing constrains: M singular
    for engine in ("numba", "numpy"):          # (terms=None: M from the columns themselves)
        with pytest.raises(ModelError, match="singular"):
            ScatterNewton(a, flux, ivar, None, engine=engine).run()


def test_engine_choice_and_fallback(rng, monkeypatch):
    terms, a, flux, ivar = _data(rng, n_pix=2)
    with pytest.raises(ModelError, match="engine must be one of"):
        ScatterNewton(a, flux, ivar, terms, engine="fortran")
    assert ScatterNewton(a, flux, ivar, terms, precision=np.float32).engine == "numpy"
    monkeypatch.setattr(cannon_kernel, "AVAILABLE", False)      # as without numba
    assert ScatterNewton(a, flux, ivar, terms).engine == "numpy"
    with pytest.raises(ModelError, match="needs the numba package"):
        ScatterNewton(a, flux, ivar, terms, engine="numba")
