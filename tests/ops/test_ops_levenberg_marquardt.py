"""The one Levenberg–Marquardt loop (ops.levenberg_marquardt) on small problems of its own."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from photosphere.ops.levenberg_marquardt import (
    Damping,
    block_jacobi_cg_step,
    box_step,
    diagonal_blocks,
    marquardt_steps,
    minimise,
)


class _Rosenbrock:
    """r = (10 (x₁ − x₀²), 1 − x₀), minimum at (1, 1); ``upper`` caps every parameter."""

    def __init__(self, upper: float = np.inf):
        self.upper = upper

    def residual(self, x):
        return np.stack([10 * (x[:, 1] - x[:, 0] ** 2), 1 - x[:, 0]], -1)

    def loss(self, x, rows):
        return np.sum(self.residual(x) ** 2, -1)

    def linearise(self, x, rows):
        jac = np.zeros((len(x), 2, 2))
        jac[:, 0, 0], jac[:, 0, 1], jac[:, 1, 0] = -20 * x[:, 0], 10.0, -1.0
        r = self.residual(x)
        return np.einsum("bnp,bnq->bpq", jac, jac), np.einsum("bnp,bn->bp", jac, r)

    def step(self, system, lam, x):
        jtj, grad = system
        return np.stack([np.linalg.solve(a + lam_b * np.diag(np.diag(a)), -g)
                         for a, g, lam_b in zip(jtj, grad, lam, strict=True)])

    def project(self, x):
        return np.minimum(x, self.upper)


def test_batched_starts_reach_the_minimum_independently():
    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.5, -0.5]])
    out = minimise(_Rosenbrock(), starts, max_iter=200, ftol=1e-14, xtol=1e-12)
    np.testing.assert_allclose(out.u, 1.0, atol=1e-5)
    assert out.converged.all()
    for b in range(3):  # the same as each start alone
        alone = minimise(_Rosenbrock(), starts[b], max_iter=200, ftol=1e-14, xtol=1e-12)
        np.testing.assert_allclose(alone.u[0], out.u[b], rtol=1e-12)
        assert alone.iterations[0] == out.iterations[b]
    for h in out.history:
        assert h[0] > h[-1] and np.all(np.diff(h) <= 0)


def test_projection_and_counting_only_accepted_steps():
    out = minimise(_Rosenbrock(upper=0.5), np.array([[-1.2, 1.0]]), max_iter=500,
                   ftol=1e-12, xtol=0.0, damping=Damping(initial=1e-2, up=10, down=10,
                                                         floor=1e-7, ceiling=1e10,
                                                         count_rejected=False))
    assert np.all(out.u <= 0.5)
    np.testing.assert_allclose(out.u[0], [0.5, 0.25], atol=1e-4)  # the best point in the box
    assert out.iterations[0] == len(out.history[0]) - 1  # one iteration per accepted step


def test_a_start_with_a_non_finite_loss_is_left_alone():
    out = minimise(_Rosenbrock(), np.array([[np.nan, 1.0], [0.0, 0.0]]), max_iter=100)
    assert out.iterations[0] == 0 and not out.converged[0]
    assert out.reason[0] == "non-finite residuals at the start"
    assert out.converged[1]


def test_box_step_holds_a_parameter_pushing_out_of_the_box():
    jtj, grad = np.eye(2), np.array([1.0, -1.0])  # both want to move: −1 and +1
    step = box_step(jtj, grad, 0.0, np.array([0.0, 0.5]))
    assert step[0] == 0.0 and step[1] > 0


def test_block_jacobi_cg_solves_the_damped_normal_equations(rng):
    a = sp.random(40, 12, density=0.5, random_state=1, format="csr") + sp.eye(40, 12)
    normal = (a.T @ a).tocsr()
    diag = normal.diagonal()
    rhs = rng.normal(size=12)
    step = block_jacobi_cg_step(normal, diagonal_blocks(normal, 4), diag, 0.1, rhs,
                                tolerance=1e-12, max_iter=200)
    exact = np.linalg.solve(normal.toarray() + 0.1 * np.diag(diag), rhs)
    np.testing.assert_allclose(step, exact, rtol=1e-8)
    np.testing.assert_allclose(diagonal_blocks(normal, 4)[1], normal.toarray()[4:8, 4:8])


class _PerRowTargets:
    """Start b fits its own data: r_b = A x − y[b] (the Cannon's case, one spectrum per start),
    with one batched Marquardt solve for all rows; ``rows`` picks each start's target."""

    def __init__(self, a, targets):
        self.a, self.targets = a, targets

    def loss(self, x, rows):
        return np.sum((x @ self.a.T - self.targets[rows]) ** 2, -1)

    def linearise(self, x, rows):
        r = x @ self.a.T - self.targets[rows]
        return np.broadcast_to(self.a.T @ self.a, (len(x), 3, 3)).copy(), -(r @ self.a)

    def step(self, system, lam, x):
        return marquardt_steps(*system, lam)

    def project(self, x):
        return np.clip(x, -1.0, 1.0)


def test_each_start_fits_its_own_data_through_rows(rng):
    a = rng.normal(size=(12, 3))
    truth = rng.uniform(-0.5, 0.5, size=(5, 3))
    truth[4, 0] = 3.0  # outside the box: that start ends at the bound
    targets = truth @ a.T
    starts = rng.uniform(-1, 1, size=(5, 3))
    out = minimise(_PerRowTargets(a, targets), starts, max_iter=200, ftol=1e-14, xtol=1e-12)
    np.testing.assert_allclose(out.u[:4], truth[:4], atol=1e-6)
    assert out.u[4, 0] == 1.0
    for b in (0, 4):  # the same as the start alone with its own target
        alone = minimise(_PerRowTargets(a, targets[b:b + 1]), starts[b], max_iter=200,
                         ftol=1e-14, xtol=1e-12)
        np.testing.assert_allclose(alone.u[0], out.u[b], rtol=1e-12)
        assert alone.iterations[0] == out.iterations[b]


def test_marquardt_steps_solve_each_damped_system(rng):
    jac = rng.normal(size=(4, 10, 3))
    jtj, rhs = np.einsum("bnp,bnq->bpq", jac, jac), rng.normal(size=(4, 3))
    lam = np.array([0.0, 0.1, 1.0, 10.0])
    steps = marquardt_steps(jtj, rhs, lam, ridge=1e-3)
    for b in range(4):
        damped = jtj[b] + lam[b] * np.diag(np.diag(jtj[b])) + 1e-3 * np.eye(3)
        np.testing.assert_allclose(steps[b], np.linalg.solve(damped, rhs[b]), rtol=1e-10)
