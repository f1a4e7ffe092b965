"""Voigt and pseudo-Voigt profiles against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import voigt_profile, wofz

from photosphere.errors import ModelError
from photosphere.models.lines.profiles import (
    faddeeva,
    get_profile,
    pseudo_voigt,
    voigt,
    voigt_fwhm,
)

WIDTHS = [0.001, 0.01, 0.05, 0.2, 1.0]
LORENTZ = [0.0, 1e-4, 1e-3, 0.01, 0.05, 0.2, 1.0, 5.0]


def _t(v):
    return torch.as_tensor(v, dtype=torch.float64)


def test_faddeeva_matches_scipy_wofz(rng):
    z = rng.uniform(-30, 30, 2000) + 1j * rng.uniform(0, 15, 2000)
    w = faddeeva(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(w, wofz(z), rtol=1e-11)


@pytest.mark.parametrize("sigma", WIDTHS)
@pytest.mark.parametrize("gamma", LORENTZ)
def test_voigt_matches_scipy(sigma, gamma):
    half = 30 * max(sigma, gamma)
    x = np.linspace(-half, half, 4001)
    ref = voigt_profile(x, sigma, gamma)
    ours = voigt(_t(x), _t(sigma), _t(gamma)).numpy()
    core = ref > 1e-6 * ref.max()
    assert np.max(np.abs(ours - ref)[core] / ref[core]) < 1e-6
    assert np.max(np.abs(ours - ref)) < 1e-10 * ref.max()


def test_voigt_roles_of_sigma_and_gamma_not_swapped():
    x = _t(np.linspace(-1, 1, 11))
    a = voigt(x, _t(0.05), _t(0.3)).numpy()
    np.testing.assert_allclose(a, voigt_profile(x.numpy(), 0.05, 0.3), rtol=1e-9)
    assert not np.allclose(a, voigt_profile(x.numpy(), 0.3, 0.05), rtol=1e-2)


def test_voigt_is_area_normalised():
    x = _t(np.linspace(-400, 400, 400001))
    v = voigt(x, _t(0.1), _t(0.05))
    area = torch.trapezoid(v, x).item()
    # the Lorentz wings beyond ±400 Å hold 2γ/(π·400) of the area
    assert area == pytest.approx(1 - 2 * 0.05 / (np.pi * 400), rel=1e-6)


def test_voigt_gradients_match_finite_differences():
    x = _t([-0.13, 0.0, 0.07, 0.4]).requires_grad_()
    sigma = _t(0.08).requires_grad_()
    gamma = _t(0.03).requires_grad_()
    assert torch.autograd.gradcheck(voigt, (x, sigma, gamma))


@pytest.mark.parametrize("sigma", [0.01, 0.1])
@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
def test_pseudo_voigt_peak_within_one_percent(sigma, ratio):
    gamma = ratio * sigma
    peak = pseudo_voigt(_t(0.0), _t(sigma), _t(gamma)).item()
    assert abs(peak / voigt_profile(0.0, sigma, gamma) - 1) < 0.01


def test_pseudo_voigt_close_to_voigt_everywhere_and_normalised():
    x = np.linspace(-3, 3, 6001)
    ref = voigt_profile(x, 0.1, 0.1)
    pv = pseudo_voigt(_t(x), _t(0.1), _t(0.1)).numpy()
    assert np.max(np.abs(pv - ref)) < 0.02 * ref.max()
    xs = _t(np.linspace(-2000, 2000, 2_000_001))
    area = torch.trapezoid(pseudo_voigt(xs, _t(0.1), _t(0.1)), xs).item()
    assert area == pytest.approx(1.0, abs=1e-3)


def test_fwhm_limits():
    assert voigt_fwhm(_t(1.0), _t(0.0)).item() == pytest.approx(2 * np.sqrt(2 * np.log(2)))
    assert voigt_fwhm(_t(0.0), _t(1.0)).item() == pytest.approx(2.0)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ModelError, match="gaussian"):
        get_profile("gaussian")
