"""Training The Cannon fast: the scatter s²_λ of every pixel by safeguarded Newton steps on the
profile likelihood, pixels in cache-sized blocks (the unregularised model; the L1 model uses
:func:`photosphere.models.cannon_training.optimise_scatter`).

Per pixel, with w_n = 1/(s² + σ²_n), r_n = f_n - θ·ℓ_n and θ̂(s²) the weighted least-squares
solution (M θ̂ = b, M = Σ w ℓℓᵀ), the profile log-likelihood P(s²) = ln L(θ̂(s²), s²) has

    P'  = ½ Σ w² r² - ½ Σ w                                  (envelope theorem: θ̂ is optimal)
    P'' = -Σ w³ r² + ½ Σ w² + cᵀ M⁻¹ c,   c = Σ w² r ℓ         (θ̂ moves with s²: dθ̂/ds² = -M⁻¹c)

so one evaluation (one weighted normal-equation build, the only large product) gives the exact
Newton step. The search runs in t = ln s² from the moment estimate at s² = 0, each step kept
inside the bracket that the signs of P' have established (bisection otherwise), until the step is
below the tolerance; pixels whose P' ≤ 0 at s² = 0 keep s² = 0, and the best of the Newton point
and s² = 0 is returned, so the result is never worse than the ivar-weighted fit.

The normal matrices M_λ = Σ_n w_nλ ℓ_n ℓ_nᵀ have P(P+1)/2 distinct entries, but these are
monomials of the labels of degree ≤ 2·order, fewer still (126 instead of 231 for the quadratic
model in 5 labels): one (monomials × stars) @ (stars × pixels) product per evaluation builds them.
θ is updated by iterative refinement, θ ← θ + M⁻¹ Σ w r ℓ with r computed in float64, so M may
be built in float32 (twice as fast) without losing float64 accuracy in θ.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._threads import single_threaded, thread_budget
from ..errors import ModelError

LN10 = float(np.log(10.0))


class ScatterNewton:
    """The s² search and θ for every pixel of the training set (see the module docstring).

    design: (n_stars, n_terms) label vectors; flux, ivar: (n_stars, n_pix) (ivar = 0: masked);
    terms: the polynomial terms (tuples of label indices) of ``design``'s columns, used to find
    the distinct monomials of M (None: every product ℓ_i ℓ_j is its own column);
    term_mask: (n_pix, n_terms) bool or None (censoring: False terms are fixed at 0);
    block: pixels per block (the block's arrays should fit the CPU cache);
    precision: dtype of the normal-matrix product, float32 or float64 (θ is float64 either way).
    """

    def __init__(self, design: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                 terms: Sequence[tuple[int, ...]] | None = None,
                 term_mask: np.ndarray | None = None, block: int = 64,
                 precision: type = np.float64):
        self.design = np.ascontiguousarray(design, dtype=np.float64)
        n_stars, n_terms = self.design.shape
        if flux.shape != ivar.shape or flux.shape[0] != n_stars:
            raise ModelError(f"flux {flux.shape} and ivar {ivar.shape} must both be "
                             f"(n_stars={n_stars}, n_pix)")
        self.flux = flux
        self.ivar = ivar
        self.term_mask = term_mask
        self.block = int(block)
        self.precision = np.dtype(precision)
        rows, cols = np.triu_indices(n_terms)
        if terms is None:
            keys = list(zip(rows.tolist(), cols.tolist(), strict=True))
        else:
            if len(terms) != n_terms:
                raise ModelError(f"{len(terms)} terms given for a design with {n_terms} columns")
            keys = [tuple(sorted(terms[i] + terms[j])) for i, j in zip(rows, cols, strict=True)]
        unique: dict = {}
        first = []
        inverse = np.empty(len(keys), dtype=int)
        for k, key in enumerate(keys):
            if key not in unique:
                unique[key] = len(first)
                first.append(k)
            inverse[k] = unique[key]
        products = self.design[:, rows[first]] * self.design[:, cols[first]]
        # (n_monomials, n_stars): M's distinct entries are monomials @ w
        self.monomials = np.ascontiguousarray(products.T, dtype=self.precision)
        self.design_t = np.ascontiguousarray(self.design.T)
        self.rows, self.cols, self.inverse = rows, cols, inverse
        # the column of M's product entries that is Σ_n w_n (the constant term squared), if any
        self._sum_w = int(inverse[0]) if terms is not None and tuple(terms[0]) == () else None
        self.evaluated_pixels = 0
        self.flop = 0.0
        self._lock = threading.Lock()

    @property
    def n_monomials(self) -> int:
        return self.monomials.shape[0]

    def flops_per_pixel(self, second: bool = True) -> float:
        """Floating-point operations of the matrix products of one evaluation of one pixel
        (the normal-matrix build, the refinement, and with ``second`` the P'' product)."""
        n_stars, n_terms = self.design.shape
        refinements = 1 if self.precision == np.float64 else 2
        return 2.0 * n_stars * (self.n_monomials + (2 * refinements + int(second)) * n_terms)

    # ------------------------------------------------------------------ one block
    def _normal_factor(self, w: np.ndarray, keep: np.ndarray | None):
        """Cholesky factors (B, P, P) (torch, lower) of the normal matrices for weights w
        (n_stars, B), and Σ_n w (B,)."""
        import torch

        flat = (self.monomials @ w.astype(self.precision, copy=False)).T.astype(np.float64)
        n_terms = self.design.shape[1]
        m = np.empty((w.shape[1], n_terms, n_terms))
        m[:, self.rows, self.cols] = flat[:, self.inverse]
        m[:, self.cols, self.rows] = flat[:, self.inverse]
        if keep is not None:
            m *= keep[:, :, None] & keep[:, None, :]
            m[:, np.arange(n_terms), np.arange(n_terms)] += ~keep
        factor, info = torch.linalg.cholesky_ex(torch.from_numpy(m))
        if bool((info != 0).any()):
            raise ModelError(
                "the weighted normal equations are singular at some pixel: the training labels "
                "or unmasked pixels do not constrain every polynomial term; use fewer terms "
                "(lower order / no cross terms) or more training stars")
        sum_w = w.sum(axis=0) if self._sum_w is None else flat[:, self._sum_w]
        return factor, sum_w

    def _evaluate(self, s2, theta, resid, var, keep, second: bool = True):
        """At scatter s2 (B,) from θ (P, B) with residuals resid (n_stars, B) of that θ, noise
        variances var = 1/ivar (n_stars, B; inf where masked): the least-squares θ̂, its
        residuals (both updated in place), P' and P'' (B,) (P'' None unless ``second``)."""
        import torch

        w = var + s2
        np.reciprocal(w, out=w)                                   # 1/(s² + σ²), 0 if masked
        with self._lock:
            self.evaluated_pixels += w.shape[1]
            self.flop += w.shape[1] * self.flops_per_pixel(second)
        factor, sum_w = self._normal_factor(w, keep)
        wr = np.empty_like(w)
        for _ in range(1 if self.precision == np.float64 else 2):   # iterative refinement
            np.multiply(w, resid, out=wr)
            grad = self.design_t @ wr                             # Σ w r ℓ  (P, B)
            if keep is not None:
                grad *= keep.T
            delta = torch.cholesky_solve(torch.from_numpy(grad.T[:, :, None]), factor)
            delta = delta[:, :, 0].numpy().T
            theta += delta
            resid -= self.design @ delta
        np.multiply(w, resid, out=wr)
        wr2 = wr * wr
        d1 = 0.5 * (wr2.sum(axis=0) - sum_w)
        if not second:
            return d1, None
        w3r2 = np.einsum("nb,nb->b", wr2, w)
        wr *= w                                                   # w² r
        c = self.design_t @ wr
        if keep is not None:
            c *= keep.T
        z = torch.linalg.solve_triangular(factor, torch.from_numpy(c.T[:, :, None]), upper=False)
        d2 = 0.5 * np.einsum("nb,nb->b", w, w) - w3r2 + (z[:, :, 0] ** 2).sum(1).numpy()
        return d1, d2

    def _solve_block(self, flux, ivar, keep, tolerance, loglike_tolerance, max_iter):
        nb = flux.shape[1]
        n_terms = self.design.shape[1]
        theta = np.zeros((n_terms, nb))
        resid = flux.copy()
        zeros = np.zeros(nb)
        with np.errstate(divide="ignore"):
            var = 1.0 / ivar
        d1, _ = self._evaluate(zeros, theta, resid, var, keep, second=False)
        theta0, resid0 = theta.copy(), resid.copy()
        chi2_0 = np.einsum("nb,nb,nb->b", resid0, resid0, ivar)
        # s² from the moment estimate Σ ivar² (r² - 1/ivar) / Σ ivar² where P'(0) > 0
        active = d1 > 0
        sum_ivar2 = np.einsum("nb,nb->b", ivar, ivar)
        s2 = np.where(active, 2 * np.maximum(d1, 0) / np.maximum(sum_ivar2, 1e-300), 0.0)
        t = np.log(np.where(active, s2, 1.0))
        # t below which s² is negligible against every σ² (then s² = 0 is taken)
        t_floor = np.log(1e-10 / np.maximum(ivar.max(axis=0), 1e-300))
        lo = np.full(nb, -np.inf)
        hi = np.full(nb, np.inf)
        max_step = 3.0
        iterations = 0
        while active.any() and iterations < max_iter:
            iterations += 1
            idx = np.flatnonzero(active)
            if idx.size > 0.75 * nb:   # most pixels: evaluate the block (converged ones stay put)
                d1, d2 = self._evaluate(np.exp(t), theta, resid, var, keep)
                d1, d2 = d1[idx], d2[idx]
            else:                      # a few stragglers: evaluate copies of their columns
                th, rs = theta[:, idx], resid[:, idx]
                d1, d2 = self._evaluate(np.exp(t[idx]), th, rs, var[:, idx],
                                        None if keep is None else keep[idx])
                theta[:, idx], resid[:, idx] = th, rs
            s = np.exp(t[idx])
            g = s * d1                                            # dP/dt
            h = s * s * d2 + g                                    # d²P/dt²
            lo[idx] = np.where(g > 0, t[idx], lo[idx])
            hi[idx] = np.where(g <= 0, t[idx], hi[idx])
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where(h < 0, -g / h, np.sign(g) * max_step)
            step = np.clip(step, -max_step, max_step)
            new = t[idx] + step
            outside = (new <= lo[idx]) | (new >= hi[idx])
            both = np.isfinite(lo[idx]) & np.isfinite(hi[idx])
            new = np.where(outside & both, 0.5 * (lo[idx] + hi[idx]), new)
            # done when the step is below the tolerance and would gain < loglike_tolerance
            done = (np.abs(new - t[idx]) < tolerance) & (
                np.abs(g * (new - t[idx])) < 2 * loglike_tolerance)
            to_zero = (new < t_floor[idx]) & (g < 0)
            t[idx] = np.where(done | to_zero, t[idx], new)
            zero_idx = idx[to_zero & ~done]
            t[zero_idx] = -np.inf
            theta[:, zero_idx], resid[:, zero_idx] = theta0[:, zero_idx], resid0[:, zero_idx]
            active[idx[done | to_zero]] = False
        s2 = np.exp(t)
        w = ivar / (1.0 + s2 * ivar)
        chi2 = np.einsum("nb,nb,nb->b", resid, resid, w)
        loglike = -0.5 * (chi2 + _sum_log_rows(1.0 + s2 * ivar, float(s2.max() * ivar.max())))
        worse = loglike < -0.5 * chi2_0
        s2[worse] = 0.0
        theta[:, worse] = theta0[:, worse]
        loglike[worse] = -0.5 * chi2_0[worse]
        return theta.T, s2, loglike, iterations

    # ------------------------------------------------------------------ all pixels
    def run(self, tolerance_dex: float = 0.01, loglike_tolerance: float = 1e-4,
            max_iter: int = 50, progress: bool = False, threads: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """θ (n_pix, P), s² (n_pix,), ln L (n_pix,) and a summary: the most Newton iterations
        of a block, the pixel evaluations (one per pixel per normal-matrix build) and their
        matrix-product flops.

        threads: blocks solved at once (default: the configured BLAS/torch thread count); each
        block runs on one thread, since its products are too small for threaded BLAS.
        """
        from tqdm.auto import tqdm

        n_pix = self.flux.shape[1]
        n_terms = self.design.shape[1]
        theta = np.empty((n_pix, n_terms))
        s2 = np.empty(n_pix)
        loglike = np.empty(n_pix)
        tol = tolerance_dex * LN10

        def solve(start: int) -> int:
            sl = slice(start, min(start + self.block, n_pix))
            keep = None if self.term_mask is None else self.term_mask[sl]
            flux = np.ascontiguousarray(self.flux[:, sl], dtype=np.float64)
            ivar = np.ascontiguousarray(self.ivar[:, sl], dtype=np.float64)
            theta[sl], s2[sl], loglike[sl], it = self._solve_block(
                flux, ivar, keep, tol, loglike_tolerance, max_iter)
            return it

        threads = thread_budget() if threads is None else max(int(threads), 1)
        starts = range(0, n_pix, self.block)
        bar = tqdm(total=len(starts), desc="Cannon training", disable=not progress, leave=False)
        iterations = [0]
        with single_threaded():
            if threads == 1:
                for start in starts:
                    iterations.append(solve(start))
                    bar.update()
            else:
                with ThreadPoolExecutor(threads) as pool:
                    for it in pool.map(solve, starts):
                        iterations.append(it)
                        bar.update()
        bar.close()
        return theta, s2, loglike, {
            "max_newton_iterations": max(iterations),
            "pixel_evaluations": self.evaluated_pixels,
            "evaluations_per_pixel": self.evaluated_pixels / max(n_pix, 1),
            "flop": self.flop,
            "threads": threads}


def _sum_log_rows(x: np.ndarray, largest: float) -> np.ndarray:
    """Σ_n ln x_n along axis 0 of x (n_stars, B), x ≥ 1 and x ≤ 1 + largest, as logs of products
    of k rows (one logarithm per k elements; k small enough that no product overflows)."""
    n_stars = x.shape[0]
    k = min(int(np.clip(280 / max(np.log10(1.0 + largest), 1e-3), 1, 64)), n_stars)
    m = n_stars // k
    total = np.log(np.multiply.reduce(x[:m * k].reshape(k, m, -1), axis=0)).sum(axis=0)
    if m * k < n_stars:
        total += np.log(x[m * k:]).sum(axis=0)
    return total
