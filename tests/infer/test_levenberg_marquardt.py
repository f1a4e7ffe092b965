"""The batched Levenberg–Marquardt primitive on a generic least-squares problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import FitError
from photosphere.infer.optimize import batched_jacobian, levenberg_marquardt

T = torch.linspace(0, 4, 200, dtype=torch.float64)


def _problem(rng):
    """y = A exp(-k t) + c with A, k, c mapped from the unit box (A 0..5, k 0..3, c -1..1)."""
    truth = np.array([0.6, 0.4, 0.55])
    def physical(u):
        return 5 * u[..., 0:1], 3 * u[..., 1:2], 2 * u[..., 2:3] - 1
    def model(u):
        a, k, c = physical(u)
        return a * torch.exp(-k * T) + c
    y = model(torch.as_tensor(truth)).numpy() + rng.normal(0, 0.01, 200)
    fn = lambda u: (torch.as_tensor(y) - model(u)) / 0.01  # noqa: E731
    return (truth, fn, *_numpy_functions(fn))


def _numpy_functions(fn):
    """The residual and residual-and-Jacobian functions of ``levenberg_marquardt`` for ``fn``."""
    def resid(u):
        with torch.no_grad():
            return fn(torch.as_tensor(u)).numpy()
    def resid_jac(u):
        r, j = batched_jacobian(fn, torch.as_tensor(u))
        return r.numpy(), j.numpy()
    return resid, resid_jac


def test_jacobian_matches_reverse_mode(rng):
    """Forward-mode autodiff to rounding; forward differences (the default) to ~1e-5 of the
    largest derivative, backwards at the edge of the box (u = 1)."""
    _, fn, _, _ = _problem(rng)
    u = torch.tensor([[0.3, 0.2, 0.5], [0.7, 0.9, 0.1], [1.0, 0.5, 1.0]], dtype=torch.float64)
    _, exact = batched_jacobian(fn, u, method="forward-ad")
    _, differences = batched_jacobian(fn, u)
    for b in range(3):
        ref = torch.autograd.functional.jacobian(fn, u[b:b + 1])[0, :, 0, :].numpy()
        np.testing.assert_allclose(exact[b].numpy(), ref, rtol=1e-10, atol=1e-8)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(differences[b].numpy(), ref, rtol=0, atol=1e-5 * scale)
    with pytest.raises(FitError, match="jacobian method"):
        batched_jacobian(fn, u, method="complex-step")


def test_recovers_truth_from_several_starts(rng):
    truth, _, resid, resid_jac = _problem(rng)
    starts = np.array([[0.1, 0.1, 0.1], [0.9, 0.8, 0.9], [0.5, 0.5, 0.5]])
    out = levenberg_marquardt(resid_jac, resid, starts)
    assert out.converged.all()
    np.testing.assert_allclose(out.u, np.tile(truth, (3, 1)), atol=5e-3)
    assert np.all(np.abs(out.chi2 / 197 - 1) < 0.3)


def test_batched_equals_one_at_a_time(rng):
    _, _, resid, resid_jac = _problem(rng)
    starts = np.array([[0.2, 0.3, 0.4], [0.8, 0.6, 0.2]])
    both = levenberg_marquardt(resid_jac, resid, starts)
    for b in range(2):
        one = levenberg_marquardt(resid_jac, resid, starts[b:b + 1])
        np.testing.assert_allclose(one.u[0], both.u[b], atol=1e-8)
        assert one.iterations[0] == both.iterations[b]


def test_bounds_hold_when_optimum_is_outside(rng):
    """The unconstrained optimum has c = 0.55 in the box; a box capped at c <= 0.3 must stop at
    the bound, not beyond."""
    _, fn, _, _ = _problem(rng)
    cap = lambda u: fn(torch.cat([u[..., :2], 0.3 * u[..., 2:3]], -1))  # noqa: E731
    resid, resid_jac = _numpy_functions(cap)
    out = levenberg_marquardt(resid_jac, resid, np.array([[0.5, 0.5, 0.5]]))
    assert out.u[0, 2] == 1.0
    assert np.all((out.u >= 0) & (out.u <= 1))


def test_nonfinite_start_is_reported_not_raised():
    resid, resid_jac = _numpy_functions(lambda u: torch.log(u - 0.5))
    out = levenberg_marquardt(resid_jac, resid, np.array([[0.1]]))
    assert not out.converged[0]
    assert "non-finite" in out.reason[0]


def test_the_difference_step_follows_the_models_precision():
    """float32 predictions (the grid interpolator) need a larger step than float64 ones, or
    rounding swamps the differences."""
    from analytic_model import AnalyticModel
    from photosphere.infer.optimize import FD_STEP, fd_step

    class Single(AnalyticModel):
        def predict(self, labels):
            return super().predict(labels).to(torch.float32)

    assert fd_step(AnalyticModel()) == FD_STEP[torch.float64]
    assert fd_step(Single()) == FD_STEP[torch.float32] > FD_STEP[torch.float64]


def test_the_difference_step_of_a_model_over_several_epochs():
    """A binary over several epochs refuses ``predict`` (one spectrum per epoch); its step is
    read through ``predict_epochs``."""
    from analytic_model import AnalyticModel
    from photosphere.infer.optimize import FD_STEP, fd_step

    class Epochs(AnalyticModel):
        def predict(self, labels):
            raise ValueError("predicts one spectrum per epoch")

        def predict_epochs(self, labels):
            return torch.stack([super().predict(labels)] * 2, -2).to(torch.float32)

    assert fd_step(Epochs()) == FD_STEP[torch.float32]
