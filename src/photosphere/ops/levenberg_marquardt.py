"""Levenberg–Marquardt: the one damped Gauss–Newton loop of every least-squares fit.

:func:`minimise` is the algorithm, batched over independent starts: at the current point x it
asks the *problem* for the Gauss–Newton normal equations, solves the damped system
``(JᵀJ + λ D) δ = −Jᵀr`` (``D`` = diag(JᵀJ), Marquardt's scaling), projects ``x + δ`` back into
the feasible set and accepts the trial when the loss does not rise; λ falls by
``Damping.down`` after an accepted step and rises by ``Damping.up`` after a rejected one.

The problem supplies the numbers, so one loop serves dense and sparse fits alike:

- ``loss(x (B, P)) -> (B,)``: the sum of squared whitened residuals (any fixed factor);
- ``linearise(x (B, P)) -> list``: one linear system per row (the normal equations at x);
- ``step(system, lam, x (P,)) -> (P,)``: the damped step of that system;
- ``project(x (B, P)) -> (B, P)``: the nearest feasible point (a box, physical limits).

Two step solvers are here: :func:`box_step` (dense, with the parameters at a bound of the
unit box held there; the label fits of :mod:`photosphere.infer.optimize`) and
:func:`block_jacobi_cg_step` (sparse normal equations by conjugate gradients preconditioned with
their diagonal blocks; the line clone's 4 × 10⁴ parameters, :mod:`photosphere.models.lines.
jacobian`). The loop sits in ``ops`` because both the inference layer and the models' own
construction (the clone) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from tqdm.auto import tqdm


class LeastSquaresProblem(Protocol):
    """What :func:`minimise` needs of a problem (shapes in the module docstring)."""

    def loss(self, x: np.ndarray) -> np.ndarray: ...

    def linearise(self, x: np.ndarray) -> Sequence[Any]: ...

    def step(self, system: Any, lam: float, x: np.ndarray) -> np.ndarray: ...

    def project(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Damping:
    """The λ schedule: start at ``initial``; after an accepted step ``max(λ / down, floor)``,
    after a rejected one ``λ × up``; a start whose λ reaches ``ceiling`` has converged (no step
    lowers the loss). ``count_rejected``: whether a rejected trial counts as an iteration
    (``False``: an iteration is one accepted step, however many λ it took)."""

    initial: float = 1e-3
    up: float = 4.0
    down: float = 3.0
    floor: float = 1e-12
    ceiling: float = 1e12
    count_rejected: bool = True


@dataclass(frozen=True)
class LMOutcome:
    """Per start: ``u (B, P)`` solution, ``chi2 (B,)`` its loss, ``iterations (B,)``,
    ``converged (B,)`` bool, ``reason`` (B,) strings and ``history`` (B,) lists of the loss
    after each accepted step (the initial loss first)."""

    u: np.ndarray
    chi2: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    reason: list[str]
    history: list[list[float]] = field(default_factory=list)


def minimise(problem: LeastSquaresProblem, x0: np.ndarray, *, max_iter: int = 100,
             ftol: float = 1e-7, xtol: float = 1e-7, damping: Damping = Damping(),
             progress: bool = False, description: str = "LM") -> LMOutcome:
    """Levenberg–Marquardt from each row of ``x0`` (B, P), the rows independent.

    A start has converged when an accepted step lowers the loss by less than ``ftol``
    relatively (reason ``"ftol"``) or moves every parameter by less than ``xtol`` (``"xtol"``),
    or when no damping up to ``damping.ceiling`` lowers it (``"no further decrease"``); it
    stops unconverged after ``max_iter`` iterations (``"max_iter"``). A start whose initial
    loss is not finite is not iterated. ``progress`` shows a bar of the first start.
    """
    x = problem.project(np.atleast_2d(np.asarray(x0, float)).copy())
    n_b = x.shape[0]
    lam = np.full(n_b, damping.initial)
    loss = np.asarray(problem.loss(x), float).copy()
    iterations = np.zeros(n_b, int)
    converged = np.zeros(n_b, bool)
    reason = ["max_iter"] * n_b
    active = np.isfinite(loss)
    for b in np.flatnonzero(~active):
        reason[b] = "non-finite residuals at the start"
    history = [[float(v)] for v in loss]
    systems: list[Any] = [None] * n_b
    stale = np.ones(n_b, bool)  # the system must be rebuilt (after a moved point)
    bar = tqdm(total=max_iter, desc=description, disable=not progress, leave=False)
    while True:
        idx = np.flatnonzero(active & (iterations < max_iter))
        if idx.size == 0:
            break
        need = idx[stale[idx]]
        if need.size:
            for b, system in zip(need, problem.linearise(x[need]), strict=True):
                systems[b] = system
            stale[need] = False
        steps = np.stack([problem.step(systems[b], lam[b], x[b]) for b in idx])
        trial = problem.project(x[idx] + steps)
        trial_loss = np.asarray(problem.loss(trial), float)
        first = iterations[0]
        for k, b in enumerate(idx):
            moved = float(np.max(np.abs(trial[k] - x[b])))
            accepted = bool(np.isfinite(trial_loss[k]) and trial_loss[k] <= loss[b])
            if accepted or damping.count_rejected:
                iterations[b] += 1
            if accepted:
                decrease = (loss[b] - trial_loss[k]) / max(loss[b], 1e-300)
                x[b], loss[b] = trial[k], trial_loss[k]
                history[b].append(float(loss[b]))
                stale[b] = True
                lam[b] = max(lam[b] / damping.down, damping.floor)
                if decrease < ftol or moved < xtol:
                    converged[b], active[b] = True, False
                    reason[b] = "ftol" if decrease < ftol else "xtol"
            else:
                lam[b] *= damping.up
                if lam[b] >= damping.ceiling or moved < xtol:
                    converged[b], active[b], reason[b] = True, False, "no further decrease"
        if iterations[0] > first:
            bar.update(int(iterations[0] - first))
            bar.set_postfix(loss=f"{loss[0]:.4g}")
    bar.close()
    return LMOutcome(u=x, chi2=loss, iterations=iterations, converged=converged, reason=reason,
                     history=history)


def box_step(jtj: np.ndarray, grad: np.ndarray, lam: float, u: np.ndarray) -> np.ndarray:
    """Marquardt step ``(JᵀJ + λ D) δ = −g`` in the unit box ``u ∈ [0, 1]^P``, dense.

    Parameters at a bound whose step points outward are held there and the step re-solved for
    the others (a bound-aware active set). D = diag(JᵀJ), floored at 10⁻¹² of its largest entry.
    """
    p = len(grad)
    diag = np.maximum(np.diag(jtj), 1e-12 * max(np.max(np.diag(jtj)), 1e-300))
    held = np.zeros(p, bool)
    step = np.zeros(p)
    for _ in range(2):
        a = jtj + lam * np.diag(diag)
        b = -grad.copy()
        a[held, :] = 0.0
        a[:, held] = 0.0
        a[held, held] = 1.0
        b[held] = 0.0
        try:
            step = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(a, b, rcond=None)[0]
        outward = ((u <= 0.0) & (step < 0)) | ((u >= 1.0) & (step > 0))
        if not np.any(outward & ~held):
            break
        held |= outward
    return step


def diagonal_blocks(normal: sp.spmatrix, block: int) -> np.ndarray:
    """The ``(P / block, block, block)`` diagonal blocks of a sparse ``(P, P)`` matrix."""
    coo = normal.tocoo()
    same = (coo.row // block) == (coo.col // block)
    blocks = np.zeros((normal.shape[0] // block, block, block))
    np.add.at(blocks, (coo.row[same] // block, coo.row[same] % block, coo.col[same] % block),
              coo.data[same])
    return blocks


def block_jacobi_cg_step(normal: sp.spmatrix, blocks: np.ndarray, diag: np.ndarray,
                         lam: float, rhs: np.ndarray, *, tolerance: float = 1e-2,
                         max_iter: int = 50) -> np.ndarray:
    """``(N + λ diag(d)) δ = rhs`` by conjugate gradients preconditioned with the inverse of
    each damped diagonal block (block Jacobi): an inexact Gauss–Newton step, as in
    truncated-Newton LM. normal: sparse (P, P); blocks: ``(P / k, k, k)`` from
    :func:`diagonal_blocks`; diag, rhs: (P,); ``tolerance``: CG's relative residual."""
    n_blocks, k, _ = blocks.shape
    damped_blocks = blocks + lam * diag.reshape(n_blocks, k)[:, :, None] * np.eye(k)
    inverse = np.linalg.inv(damped_blocks)
    damped = normal + sp.diags(lam * diag, format="csr")
    precondition = spl.LinearOperator(
        damped.shape, matvec=lambda v: np.einsum("nij,nj->ni", inverse,
                                                 v.reshape(n_blocks, k)).ravel())
    step, _ = spl.cg(damped, rhs, M=precondition, rtol=tolerance, maxiter=max_iter)
    return step
