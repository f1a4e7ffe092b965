"""Levenberg–Marquardt: the one damped Gauss–Newton loop of every least-squares fit.

:func:`minimise` is the algorithm, batched over independent starts: at the current point x it
asks the *problem* for the Gauss–Newton normal equations, solves the damped system
``(JᵀJ + λ D) δ = −Jᵀr`` (``D`` = diag(JᵀJ), Marquardt's scaling), projects ``x + δ`` back into
the feasible set and accepts the trial when the loss does not rise; λ falls by
``Damping.down`` after an accepted step and rises by ``Damping.up`` after a rejected one. The
bookkeeping is vectorised over the starts, so thousands of small fits (The Cannon's test step:
one start per spectrum and starting point) cost a few array operations per iteration.

The problem supplies the numbers, so one loop serves dense and sparse fits alike. ``rows``
(b,) are the indices of the starts (rows of ``x0``) being evaluated, for a problem whose starts
fit different data (The Cannon: each start its own spectrum); others ignore them.

- ``loss(x (b, P), rows (b,)) -> (b,)``: the sum of squared whitened residuals (any fixed
  factor);
- ``linearise(x (b, P), rows (b,)) -> tuple of arrays``: the normal equations at x, each array
  with a leading axis of b (one system per row; :func:`object_rows` packs systems that are not
  arrays, e.g. sparse matrices);
- ``step(system, lam (b,), x (b, P)) -> (b, P)``: the damped steps, ``system`` being the
  linearise arrays of these b rows;
- ``project(x (b, P)) -> (b, P)``: the nearest feasible point (a box, physical limits).

Step solvers here: :func:`box_step` (dense, with the parameters at a bound of the unit box held
there; the label fits of :mod:`photosphere.infer.optimize`), :func:`marquardt_steps` (dense,
all rows in one batched solve, no active set; The Cannon's label fit,
:mod:`photosphere.models.cannon_inference`) and :func:`block_jacobi_cg_step` (sparse normal
equations by conjugate gradients preconditioned with their diagonal blocks; the line clone's
4 × 10⁴ parameters, :mod:`photosphere.models.lines.jacobian`). The loop sits in ``ops`` because
both the inference layer and the models' own construction (the clone, The Cannon) use it.
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

    def loss(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray: ...

    def linearise(self, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def step(self, system: tuple[np.ndarray, ...], lam: np.ndarray, x: np.ndarray
             ) -> np.ndarray: ...

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


#: Why a start stopped, by code (the ``reason`` strings of :class:`LMOutcome`).
_REASONS = ("max_iter", "ftol", "xtol", "no further decrease", "non-finite residuals at the start")


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
    loss = np.asarray(problem.loss(x, np.arange(n_b)), float).copy()
    iterations = np.zeros(n_b, int)
    converged = np.zeros(n_b, bool)
    reason = np.zeros(n_b, int)                      # codes into _REASONS
    active = np.isfinite(loss)
    reason[~active] = 4
    history = np.full((n_b, max_iter + 1), np.nan)   # the loss after each accepted step
    history[:, 0] = loss
    n_accepted = np.zeros(n_b, int)
    systems: tuple[np.ndarray, ...] = ()
    stale = np.ones(n_b, bool)  # the system must be rebuilt (after a moved point)
    bar = tqdm(total=max_iter, desc=description, disable=not progress, leave=False)
    while True:
        idx = np.flatnonzero(active & (iterations < max_iter))
        if idx.size == 0:
            break
        need = idx[stale[idx]]
        if need.size:
            fresh = problem.linearise(x[need], need)
            if not systems:
                systems = tuple(np.empty((n_b, *np.shape(a)[1:]), np.asarray(a).dtype)
                                for a in fresh)
            for store, part in zip(systems, fresh, strict=True):
                store[need] = part
            stale[need] = False
        every = idx.size == n_b
        system = systems if every else tuple(store[idx] for store in systems)
        x_idx = x if every else x[idx]
        trial = problem.project(x_idx + problem.step(system, lam[idx], x_idx))
        trial_loss = np.asarray(problem.loss(trial, idx), float)
        first = iterations[0]
        moved = np.max(np.abs(trial - x_idx), axis=1)
        accepted = np.isfinite(trial_loss) & (trial_loss <= loss[idx])
        iterations[idx] += accepted | damping.count_rejected
        # accepted: move, λ down, converged on a small decrease or a small move
        a, k = idx[accepted], np.flatnonzero(accepted)
        decrease = (loss[a] - trial_loss[k]) / np.maximum(loss[a], 1e-300)
        x[a], loss[a] = trial[k], trial_loss[k]
        n_accepted[a] += 1
        history[a, n_accepted[a]] = loss[a]
        stale[a] = True
        lam[a] = np.maximum(lam[a] / damping.down, damping.floor)
        small = (decrease < ftol) | (moved[k] < xtol)
        converged[a[small]], active[a[small]] = True, False
        reason[a[small]] = np.where(decrease[small] < ftol, 1, 2)
        # rejected: λ up, converged when λ reaches the ceiling or the step no longer moves
        r, k = idx[~accepted], np.flatnonzero(~accepted)
        lam[r] *= damping.up
        stuck = r[(lam[r] >= damping.ceiling) | (moved[k] < xtol)]
        converged[stuck], active[stuck], reason[stuck] = True, False, 3
        if iterations[0] > first:
            bar.update(int(iterations[0] - first))
            bar.set_postfix(loss=f"{loss[0]:.4g}")
    bar.close()
    # the filled entries only, in one conversion, then cut into rows (thousands of starts)
    lengths = n_accepted + 1
    values = history[np.arange(history.shape[1]) < lengths[:, None]].tolist()
    ends = np.cumsum(lengths).tolist()
    return LMOutcome(u=x, chi2=loss, iterations=iterations, converged=converged,
                     reason=[_REASONS[c] for c in reason],
                     history=[values[end - n:end] for end, n in zip(ends, lengths.tolist(),
                                                                    strict=True)])


def object_rows(systems: Sequence[Any]) -> tuple[np.ndarray]:
    """Per-row systems that are not arrays (a sparse matrix and its blocks) as one object array
    ``(b,)``, the form :func:`minimise` stores and indexes by row."""
    packed = np.empty(len(systems), object)
    for b, system in enumerate(systems):
        packed[b] = system
    return (packed,)


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


def marquardt_steps(jtj: np.ndarray, rhs: np.ndarray, lam: np.ndarray,
                    ridge: float = 0.0) -> np.ndarray:
    """Unconstrained Marquardt steps of many small dense systems in one batched solve:
    ``(JᵀJ + (λ diag(JᵀJ) + ridge) I) δ = rhs`` per row. jtj: (b, P, P); rhs: (b, P), the
    right-hand side −Jᵀr; lam: (b,); ``ridge``: a constant added to the diagonal (keeps a
    singular JᵀJ solvable). Returns δ (b, P); bounds are left to the problem's projection."""
    diag = np.diagonal(jtj, axis1=1, axis2=2)
    damped = jtj + (lam[:, None] * diag + ridge)[:, :, None] * np.eye(jtj.shape[-1])
    return np.linalg.solve(damped, rhs[:, :, None])[:, :, 0]


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
