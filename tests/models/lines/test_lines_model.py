"""Sparse line evaluation against the dense sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import ModelError
from photosphere.models.lines.model import LineModel, dense_opacity, sparse_opacity


def _random_lines(rng, n_lines, lo, hi):
    centre = np.sort(rng.uniform(lo, hi, n_lines))
    amplitude = rng.uniform(0.002, 0.05, n_lines)
    sigma = rng.uniform(0.02, 0.08, n_lines)
    gamma = rng.uniform(0.005, 0.05, n_lines)
    return centre, amplitude, sigma, gamma


@pytest.mark.parametrize("profile", ["pseudo_voigt", "voigt"])
def test_sparse_equals_dense_within_window(rng, profile):
    wave = torch.linspace(5000, 5020, 4001, dtype=torch.float64)
    # lines include some near both edges so the window clamping is exercised
    params = [torch.as_tensor(p) for p in _random_lines(rng, 60, 4999.5, 5020.5)]
    sparse = sparse_opacity(wave, *params, half_window=1.0, profile=profile)
    dense = dense_opacity(wave, *params, half_window=1.0, profile=profile)
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-14)


def test_sparse_gradients_equal_dense_gradients(rng):
    wave = torch.linspace(5000, 5010, 2001, dtype=torch.float64)
    base = [torch.as_tensor(p) for p in _random_lines(rng, 25, 5000.5, 5009.5)]
    grads = []
    for fn in (sparse_opacity, dense_opacity):
        params = [p.clone().requires_grad_() for p in base]
        w = wave.clone().requires_grad_()
        tau = fn(w, *params, half_window=0.8)
        (torch.exp(-tau) * torch.sin(w.detach())).sum().backward()
        grads.append([*(p.grad for p in params), w.grad])
    for g_sparse, g_dense in zip(*grads, strict=True):
        torch.testing.assert_close(g_sparse, g_dense, rtol=1e-10, atol=1e-12)


def test_float32_pairs_agree_with_float64(rng):
    wave = torch.linspace(5000, 5020, 4001, dtype=torch.float64)
    params = [torch.as_tensor(p) for p in _random_lines(rng, 60, 5000.5, 5019.5)]
    exact = sparse_opacity(wave, *params, half_window=1.0)
    fast = sparse_opacity(wave, *params, half_window=1.0, pair_dtype=torch.float32)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-6 * float(exact.max()))


def test_wide_window_reaches_the_untruncated_sum(rng):
    wave = torch.linspace(5000, 5010, 2001, dtype=torch.float64)
    params = [torch.as_tensor(p) for p in _random_lines(rng, 10, 5004, 5006)]
    sparse = sparse_opacity(wave, *params, half_window=6.5)
    full = dense_opacity(wave, *params)
    torch.testing.assert_close(sparse, full, rtol=1e-12, atol=1e-14)


def test_line_model_flux_depth_and_equivalent_width():
    model = LineModel([5000.0], [0.01], [0.05], [0.02], half_window=3.0, profile="voigt")
    wave = torch.linspace(4997, 5003, 6001, dtype=torch.float64)
    flux = model(wave).detach()
    assert float(1 - flux.min()) == pytest.approx(model.depth()[0], rel=1e-6)
    ew_direct = torch.trapezoid(1 - flux, wave).item()
    assert model.equivalent_width(n_samples=6001)[0] == pytest.approx(ew_direct, rel=1e-6)
    # a weak line's EW tends to its opacity area
    weak = LineModel([5000.0], [1e-5], [0.05], [0.02], half_window=3.0)
    assert weak.equivalent_width()[0] == pytest.approx(1e-5, rel=2e-2)


def test_bad_line_parameters_are_clear_errors():
    with pytest.raises(ModelError, match="sigma must be > 0"):
        LineModel([5000.0], [0.01], [0.0], [0.01])
    with pytest.raises(ModelError, match="NaN"):
        LineModel([np.nan], [0.01], [0.1], [0.01])
    with pytest.raises(ModelError, match="same length"):
        LineModel([5000.0, 5001.0], [0.01], [0.1], [0.01])
    with pytest.raises(ModelError, match="half_window"):
        LineModel([5000.0], [0.01], [0.05], [0.01], half_window=0.0)


def test_per_line_windows_equal_dense_with_the_same_truncation(rng):
    wave = torch.linspace(5000, 5020, 4001, dtype=torch.float64)
    params = [torch.as_tensor(p) for p in _random_lines(rng, 40, 4999.0, 5021.0)]
    half = torch.as_tensor(rng.uniform(0.2, 3.0, 40))
    sparse = sparse_opacity(wave, *params, half_window=half)
    dense = dense_opacity(wave, *params, half_window=half)
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-14)


def test_auto_window_grows_with_line_strength():
    model = LineModel([5000.0, 5010.0], [0.001, 2.0], [0.03, 0.05], [0.01, 0.3])
    half = model.half_window.numpy()
    assert half[1] > 5 * half[0]
    assert 0.3 <= half[0] and half[1] <= 10.0


def test_window_longer_than_spectrum_uses_the_whole_spectrum():
    model = LineModel([5000.0], [0.01], [0.05], [0.01], half_window=5.0)
    wave = torch.linspace(4999, 5001, 50, dtype=torch.float64)
    tau = model.opacity(wave).detach()
    dense = dense_opacity(wave, model.centre.detach(), model.amplitude.detach(),
                          model.sigma.detach(), model.gamma.detach())
    torch.testing.assert_close(tau, dense)
