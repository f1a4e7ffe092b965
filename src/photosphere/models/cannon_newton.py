"""Training The Cannon fast: the scatter s²_λ of every pixel by safeguarded Newton steps on the
profile likelihood, pixels in cache-sized blocks (the unregularised model; the L1 model uses
:func:`photosphere.models.cannon_training.optimise_scatter`).

Per pixel, with w_n = 1/(s² + σ²_n), r_n = f_n - θ·ℓ_n and θ̂(s²) the weighted least-squares
solution (M θ̂ = b, M = Σ w ℓℓᵀ), the profile log-likelihood P(s²) = ln L(θ̂(s²), s²) has

    P'  = ½ Σ w² r² - ½ Σ w                                  (envelope theorem: θ̂ is optimal)
    P'' = -Σ w³ r² + ½ Σ w² + cᵀ M⁻¹ c,   c = Σ w² r ℓ         (θ̂ moves with s²: dθ̂/ds² = -M⁻¹c)

so one evaluation gives the exact Newton step. The search runs in t = ln s² from the moment
estimate at s² = 0, each step kept inside the bracket that the signs of P' have established
(bisection otherwise), until the step is below the tolerance; pixels whose P' ≤ 0 at s² = 0 keep
s² = 0, and the best of the Newton point and s² = 0 is returned, so the result is never worse
than the ivar-weighted fit.

Two kinds of evaluation. A *full* one builds the weighted normal matrices M_λ = Σ_n w_nλ ℓ_n ℓ_nᵀ
(their P(P+1)/2 distinct entries are monomials of the labels of degree ≤ 2·order, fewer still:
126 instead of 231 for the quadratic model in 5 labels, so one (monomials × stars) @
(stars × pixels) product builds them) and inverts them (by Cholesky: every later solve is a
batched matrix-vector product); θ is updated by one refinement step
θ ← θ + M⁻¹ Σ w r ℓ with r in float64 (exact: from any θ this is the least-squares solution).
A *cheap* one, for a step that changes every weight by less than ``cheap_change`` (relative)
since the pixel's last full evaluation, builds nothing: θ̂ at the new s² starts from the
first-order prediction θ + (dθ̂/ds²) Δs² and is refined with the old inverse (each step shrinks
the error by at most the largest relative weight change) until the error left is below 1e-10
of θ's size; P'' is taken from the full evaluation. Near convergence the Newton steps are small,
so most pixels need two full evaluations (s² = 0 and the moment estimate) and one cheap one.
Blocks are pixel-major (pixels × stars), so every per-pixel sum is a contiguous dot product.

With numba installed, :meth:`ScatterNewton.run` runs each block through the compiled kernel of
:mod:`photosphere.models.cannon_kernel` (same evaluations and decisions, the element-wise chains
and the bookkeeping compiled); the array code below is the fallback (``engine="numpy"``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._threads import single_threaded, thread_budget
from ..errors import ModelError
from . import cannon_kernel
from .cannon_training import _sum_log

ENGINES = ("auto", "numba", "numpy")

LN10 = float(np.log(10.0))


@dataclass
class _Block:
    """The state of one block's s² search (B pixels, P terms, n_stars stars), NumPy path.

    theta, theta0 (B, P): θ now and θ̂(0); resid (B, n_stars): the residuals of θ; var, ivar
    (B, n_stars): σ² (inf where masked) and 1/σ²; keep (B, P) bool or None (censoring);
    chi2_0 (B,): χ² at θ̂(0); iv_max (B,): the largest ivar; t (B,): ln s² (-inf: s² = 0);
    t_floor (B,): t below which s² is negligible against every σ²; lo, hi (B,): the bracket
    in t; active (B,) bool: still searching. Per pixel, of its last full evaluation: factor
    (B, P, P) the inverse normal matrices (None before the first), t_factor its t, d2_factor
    its P'' and slope (B, P) its dθ̂/ds²; t_theta (B,): the t at which θ is θ̂ now;
    need_full (B,) bool: its last cheap evaluation left θ unconverged (the next one is full).
    """

    theta: np.ndarray
    theta0: np.ndarray
    resid: np.ndarray
    var: np.ndarray
    ivar: np.ndarray
    keep: np.ndarray | None
    chi2_0: np.ndarray
    iv_max: np.ndarray
    t_floor: np.ndarray
    t: np.ndarray
    active: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    t_factor: np.ndarray
    t_theta: np.ndarray
    d2_factor: np.ndarray
    slope: np.ndarray
    need_full: np.ndarray
    factor: np.ndarray | None = None


class ScatterNewton:
    """The s² search and θ for every pixel of the training set (see the module docstring).

    design: (n_stars, n_terms) label vectors; flux, ivar: (n_stars, n_pix) (ivar = 0: masked);
    terms: the polynomial terms (tuples of label indices) of ``design``'s columns, used to find
    the distinct monomials of M (None: every product ℓ_i ℓ_j is its own column);
    term_mask: (n_pix, n_terms) bool or None (censoring: False terms are fixed at 0);
    block: pixels per block (the block's arrays should fit the CPU cache);
    precision: dtype of the normal-matrix product of the Newton evaluations, float32 or float64
    (θ is float64 either way: the first build, at s² = 0, is always float64 and later ones
    start from a nearby θ, so one refinement step with float64 residuals corrects them);
    cheap_change: largest relative weight change for which a Newton step is evaluated by
    refinement from the last factor instead of a new normal-matrix build;
    sub_block: rows per element-wise chain inside a block (their arrays should fit the L2);
    engine: "numba" (the compiled kernel of :mod:`photosphere.models.cannon_kernel`: each
    pixel's evaluations fused into loops over its stars, float64 only), "numpy" (the batched
    array code of this module), or "auto": numba when it is installed and ``precision`` is
    float64, else numpy. Both give the same s², θ and ln L within the search tolerance.
    """

    def __init__(self, design: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                 terms: Sequence[tuple[int, ...]] | None = None,
                 term_mask: np.ndarray | None = None, block: int = 64,
                 precision: type = np.float64, cheap_change: float = 0.1,
                 sub_block: int = 16, engine: str = "auto"):
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
        self.cheap_change = float(cheap_change)
        self.sub_block = max(int(sub_block), 1)
        if engine not in ENGINES:
            raise ModelError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "numba" and not cannon_kernel.AVAILABLE:
            raise ModelError("engine='numba' needs the numba package (pip install numba); "
                             "use engine='numpy' or 'auto'")
        if engine == "numba" and self.precision != np.float64:
            raise ModelError(f"engine='numba' computes in float64 only, got precision="
                             f"{self.precision}; use engine='numpy' for float32 products")
        if engine == "auto":
            engine = ("numba" if cannon_kernel.AVAILABLE and self.precision == np.float64
                      else "numpy")
        self.engine = engine
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
        self.monomials64 = np.ascontiguousarray(products.T)
        self.monomials = self.monomials64.astype(self.precision)
        self.rows, self.cols, self.inverse = rows, cols, inverse
        self.evaluated_pixels = 0
        self.cheap_evaluations = 0
        self.update_steps = 0
        self.flop = 0.0
        self._lock = threading.Lock()

    @property
    def n_monomials(self) -> int:
        return self.monomials.shape[0]

    def flops_per_pixel(self, second: bool = True, refinements: int = 1) -> float:
        """Floating-point operations of the matrix products of one evaluation of one pixel
        (the normal-matrix build, the refinement steps, and with ``second`` the P'' product)."""
        n_stars, n_terms = self.design.shape
        return 2.0 * n_stars * (self.n_monomials + (2 * refinements + int(second)) * n_terms)

    # ------------------------------------------------------------------ one block
    def _normal_factor(self, w: np.ndarray, keep: np.ndarray | None, precise: bool,
                       invert: bool = True):
        """Inverses (B, P, P) (float64, by Cholesky; with ``invert`` False the Cholesky
        factors, a torch tensor, for a single solve) of the normal matrices for
        weights w (B, n_stars) float64; the product in float64 if ``precise``, else in the
        ``precision`` dtype."""
        import torch

        if precise or self.precision == np.float64:
            flat = self.monomials64 @ w.T                                     # (n_mono, B)
        else:
            flat = self.monomials @ w.astype(self.precision).T
        n_terms = self.design.shape[1]
        m = np.empty((w.shape[0], n_terms, n_terms))
        upper = flat[self.inverse].T                                         # (B, n_upper)
        m[:, self.rows, self.cols] = upper
        m[:, self.cols, self.rows] = upper
        if keep is not None:
            m *= keep[:, :, None] & keep[:, None, :]
            m[:, np.arange(n_terms), np.arange(n_terms)] += ~keep
        factor, info = torch.linalg.cholesky_ex(torch.from_numpy(m))
        if info.numpy().any():
            raise ModelError(
                "the weighted normal equations are singular at some pixel: the training labels "
                "or unmasked pixels do not constrain every polynomial term; use fewer terms "
                "(lower order / no cross terms) or more training stars")
        # explicit inverses: every later solve is a batched matrix-vector product (0.2 µs
        # per pixel against ~1 µs for a LAPACK triangular solve pair through torch); their
        # error, ~cond(M) × 1e-16, is far below what the refinement steps need
        return torch.cholesky_inverse(factor).numpy() if invert else factor

    def _weights(self, s2, var, ivar):
        """w = 1/(s² + σ²) (B, n_stars) (0 where masked); s2 None: ivar itself."""
        if s2 is None:
            return ivar
        w = np.add(var, s2[:, None])
        return np.reciprocal(w, out=w)

    @staticmethod
    def _solve(inverse, rhs):
        """M⁻¹ rhs (B, P) for the inverses (B, P, P) (or torch Cholesky factors)."""
        if isinstance(inverse, np.ndarray):
            return np.matmul(inverse, rhs[:, :, None])[:, :, 0]
        import torch

        return torch.cholesky_solve(torch.from_numpy(rhs[:, :, None]),
                                    inverse)[:, :, 0].numpy()

    def _sub_blocks(self, nb: int):
        """Row slices of at most ``sub_block`` rows: the element-wise chains of an evaluation
        run on these, so that a slice's w, r, w r and w² r stay in the L2 cache from one
        operation to the next (a 64-pixel block's arrays do not)."""
        return [slice(i, min(i + self.sub_block, nb)) for i in range(0, nb, self.sub_block)]

    def _evaluate(self, s2, theta, resid, var, ivar, keep, second: bool = True,
                  precise: bool = False):
        """One full evaluation of a block of B pixels at scatter s2 (B,) (None: s² = 0), from
        θ (B, P) with residuals resid (B, n_stars) of that θ; var = 1/ivar (inf where masked),
        ivar (B, n_stars). Updates θ to the least-squares θ̂(s²) and resid to its residuals
        (in place) and returns P', P'' (B,) (None unless ``second``), M⁻¹ (B, P, P) and
        dθ̂/ds² = -M⁻¹c (B, P) (None unless ``second``).

        The normal matrices are built in the ``precision`` dtype (float64 if ``precise``); θ by
        one refinement step with float64 residuals (exact with a float64 M: θ + M⁻¹ Σ w r ℓ
        is the least-squares solution; with a float32 M, from a nearby θ, its error is
        ~cond(M) × 1e-7 of the change).
        """
        import torch

        nb = resid.shape[0]
        w = self._weights(s2, var, ivar)
        with self._lock:
            self.evaluated_pixels += nb
            self.flop += nb * self.flops_per_pixel(second)
        # the s² = 0 build is used for one solve only: its Cholesky factor is enough
        factor = self._normal_factor(w, keep, precise, invert=second)
        design_t = torch.from_numpy(self.design).T
        d1 = np.empty(nb)
        d2 = np.empty(nb) if second else None
        slope = np.empty_like(theta) if second else None
        for sl in self._sub_blocks(nb):
            ws, rs, fs = w[sl], resid[sl], factor[sl]
            grad = (ws * rs) @ self.design                            # Σ w r ℓ
            if keep is not None:
                grad *= keep[sl]
            delta = self._solve(fs, grad)
            theta[sl] += delta
            torch.from_numpy(rs).addmm_(torch.from_numpy(delta), design_t, alpha=-1.0)
            q = ws * rs                                               # w r at θ̂
            d1[sl] = 0.5 * (np.vecdot(q, q) - ws.sum(axis=1))
            if second:
                p = ws * q                                            # w² r
                c = p @ self.design
                if keep is not None:
                    c *= keep[sl]
                y = self._solve(fs, c)                                # M⁻¹ c = -dθ̂/ds²
                d2[sl] = 0.5 * np.vecdot(ws, ws) - np.vecdot(p, q) + np.vecdot(c, y)
                slope[sl] = -y
        return d1, d2, factor, slope

    def _update(self, s2, theta, resid, var, ivar, keep, factor, slope, shift, contraction,
                max_steps: int = 4):
        """A cheap evaluation at s2 (B,) close to the s² of ``factor`` (the inverse normal
        matrices of an earlier full evaluation): θ̂(s²) from the first-order
        prediction θ + slope × shift (slope = dθ̂/ds² = -M⁻¹c there, shift = the change of s²),
        then refinement steps θ ← θ + M⁻¹ Σ w r ℓ preconditioned with that factor; each
        shrinks the error by at most ``contraction`` (B,) (the largest relative weight change,
        plus the product's rounding), and they stop when the error left is below 1e-10 of
        θ's size (or after ``max_steps``). Returns P' (B,) and whether θ converged (B,)."""
        import torch

        nb = resid.shape[0]
        w = self._weights(s2, var, ivar)
        design_t = torch.from_numpy(self.design).T
        d1 = np.empty(nb)
        converged = np.zeros(nb, dtype=bool)
        steps = 0
        for sl in self._sub_blocks(nb):
            ws, rs, th, fs = w[sl], resid[sl], theta[sl], factor[sl]
            delta = slope[sl] * shift[sl, None]
            th += delta
            torch.from_numpy(rs).addmm_(torch.from_numpy(delta), design_t, alpha=-1.0)
            limit = 1e-10 * np.abs(th).max(axis=1) / contraction[sl]
            for _ in range(max_steps):
                grad = (ws * rs) @ self.design
                if keep is not None:
                    grad *= keep[sl]
                delta = self._solve(fs, grad)
                th += delta
                torch.from_numpy(rs).addmm_(torch.from_numpy(delta), design_t, alpha=-1.0)
                steps += th.shape[0]
                done = np.abs(delta).max(axis=1) <= limit
                if done.all():
                    break
            converged[sl] = done
            q = ws * rs
            d1[sl] = 0.5 * (np.vecdot(q, q) - ws.sum(axis=1))
        with self._lock:
            self.cheap_evaluations += nb
            self.update_steps += steps
            self.flop += steps * 4.0 * resid.shape[1] * self.design.shape[1]
        return d1, converged

    def _solve_block(self, flux, ivar, keep, tolerance, loglike_tolerance, max_iter):
        """θ (B, P), s² (B,), ln L (B,) and the Newton iterations for one block; flux, ivar
        (B, n_stars) float64 contiguous (flux is overwritten: it becomes the residuals)."""
        block = self._start_at_zero(flux, ivar, keep)
        iterations = 0
        while block.active.any() and iterations < max_iter:
            iterations += 1
            idx, d1, d2 = self._evaluate_active(block, np.flatnonzero(block.active))
            self._newton_step(block, idx, d1, d2, tolerance, loglike_tolerance)
        s2, loglike = self._best_loglike(block)
        return block.theta, s2, loglike, iterations

    def _start_at_zero(self, flux, ivar, keep) -> _Block:
        """The s² = 0 evaluation of a block (θ̂(0), its residuals, χ²(0)) and the search's
        starting point: t = ln s² from the moment estimate Σ ivar² (r² - 1/ivar) / Σ ivar²
        where P'(0) > 0 (those pixels are active), -inf elsewhere."""
        nb = flux.shape[0]
        n_terms = self.design.shape[1]
        theta = np.zeros((nb, n_terms))
        resid = flux
        with np.errstate(divide="ignore"):
            var = np.reciprocal(ivar)
        d1, _, _, _ = self._evaluate(None, theta, resid, var, ivar, keep, second=False,
                                  precise=True)
        theta0 = theta.copy()
        chi2_0 = np.vecdot(resid * ivar, resid)
        active = d1 > 0
        sum_ivar2 = np.vecdot(ivar, ivar)
        with np.errstate(divide="ignore"):
            t = np.log(np.where(active, 2 * d1 / np.maximum(sum_ivar2, 1e-300), 0.0))
        # t below which s² is negligible against every σ² (then s² = 0 is taken)
        iv_max = ivar.max(axis=1)
        t_floor = np.log(1e-10 / np.maximum(iv_max, 1e-300))
        return _Block(theta=theta, theta0=theta0, resid=resid, var=var, ivar=ivar, keep=keep,
                      chi2_0=chi2_0, iv_max=iv_max, t_floor=t_floor, t=t, active=active,
                      lo=np.full(nb, -np.inf), hi=np.full(nb, np.inf),
                      t_factor=np.full(nb, np.nan), t_theta=np.full(nb, np.nan),
                      d2_factor=np.zeros(nb), slope=np.zeros((nb, n_terms)),
                      need_full=np.zeros(nb, dtype=bool))

    def _evaluate_active(self, block: _Block, idx: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One Newton iteration's evaluations of the active pixels idx of a block: cheap where
        the weights changed by less than ``cheap_change`` since the pixel's last full
        evaluation and its last cheap one converged, full otherwise. Returns the pixels that
        take a Newton step now (those whose cheap evaluation left θ unconverged get a full one
        next time instead) with their P' and P'' (per unit s²)."""
        # largest relative weight change since the pixel's last full evaluation
        with np.errstate(invalid="ignore", over="ignore"):
            s_new, s_old = np.exp(block.t[idx]), np.exp(block.t_factor[idx])
            change = np.abs(s_new - s_old) * block.iv_max[idx] / (
                1 + np.minimum(s_new, s_old) * block.iv_max[idx])
        cheap = ~block.need_full[idx] & (change < self.cheap_change)
        d1 = np.empty(idx.size)
        d2 = np.empty(idx.size)
        full = idx[~cheap]
        if full.size:
            # most pixels: evaluate the whole block (finished ones stay put)
            whole = full.size > 0.75 * block.theta.shape[0] and not cheap.any()
            d1[~cheap], d2[~cheap] = self._full_evaluations(block, full, whole)
        if cheap.any():
            part = idx[cheap]
            d1[cheap], ok = self._cheap_evaluations(block, part, s_new[cheap], change[cheap])
            d2[cheap] = block.d2_factor[part]            # P'' of the full evaluation
        block.t_theta[idx] = block.t[idx]
        block.need_full[idx] = False
        if cheap.any() and not ok.all():   # θ not converged: a full evaluation next time
            keep_rows = np.ones(idx.size, dtype=bool)
            keep_rows[np.flatnonzero(cheap)[~ok]] = False
            block.need_full[idx[~keep_rows]] = True
            idx, d1, d2 = idx[keep_rows], d1[keep_rows], d2[keep_rows]
        return idx, d1, d2

    def _full_evaluations(self, block: _Block, full: np.ndarray, whole: bool
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Full evaluations of the block's pixels ``full`` at their s² (of every pixel of the
        block if ``whole``): θ, the residuals and the factor, P'' and dθ̂/ds² kept for later
        cheap evaluations are updated; returns P' and P'' (full.size,)."""
        keep = block.keep
        if whole:
            f1, f2, fac, dth = self._evaluate(np.exp(block.t), block.theta, block.resid,
                                              block.var, block.ivar, keep)
            f1, f2, rows = f1[full], f2[full], slice(None)
        else:
            th, rs = block.theta[full], block.resid[full]
            f1, f2, fac, dth = self._evaluate(
                np.exp(block.t[full]), th, rs, block.var[full], block.ivar[full],
                None if keep is None else keep[full])
            block.theta[full], block.resid[full] = th, rs
            rows = full
        if block.factor is None:
            nb, n_terms = block.theta.shape
            block.factor = np.empty((nb, n_terms, n_terms))
        block.factor[rows] = fac
        block.slope[rows] = dth
        block.t_factor[full], block.d2_factor[full] = block.t[full], f2
        return f1, f2

    def _cheap_evaluations(self, block: _Block, part: np.ndarray, s_new: np.ndarray,
                           change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cheap evaluations (:meth:`_update`) of the block's pixels ``part`` at s² = s_new,
        whose weights changed by ``change`` (relative) since their last full evaluation;
        returns P' and whether θ converged (part.size,)."""
        keep = block.keep
        th, rs = block.theta[part], block.resid[part]
        d1, ok = self._update(
            s_new, th, rs, block.var[part], block.ivar[part],
            None if keep is None else keep[part], block.factor[part], block.slope[part],
            s_new - np.exp(block.t_theta[part]), change + 1e-4)
        block.theta[part], block.resid[part] = th, rs
        return d1, ok

    def _newton_step(self, block: _Block, idx, d1, d2, tolerance, loglike_tolerance) -> None:
        """The safeguarded Newton step in t = ln s² of the pixels idx (P', P'' per unit s²:
        d1, d2): at most 3 in t, inside the bracket [lo, hi] that the signs of P' have
        established (bisection otherwise). A pixel stops when its step is below the tolerance
        and would gain < loglike_tolerance, or when s² heads below the floor with P' < 0 (then
        s² = 0, θ̂(0) and its residuals are restored)."""
        max_step = 3.0
        t, lo, hi = block.t, block.lo, block.hi
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
        done = (np.abs(new - t[idx]) < tolerance) & (
            np.abs(g * (new - t[idx])) < 2 * loglike_tolerance)
        to_zero = (new < block.t_floor[idx]) & (g < 0)
        t[idx] = np.where(done | to_zero, t[idx], new)
        self._restore(idx[to_zero & ~done], t, block.theta, block.theta0, block.resid)
        block.active[idx[done | to_zero]] = False

    def _best_loglike(self, block: _Block) -> tuple[np.ndarray, np.ndarray]:
        """s² (B,) and ln L (B,) at the end of the search: ln L at the s² found, or s² = 0 and
        θ̂(0) (restored in the block) where that is better."""
        t, ivar, resid, chi2_0 = block.t, block.ivar, block.resid, block.chi2_0
        nb = t.shape[0]
        s2 = np.exp(t)
        loglike = -0.5 * chi2_0
        pos = np.flatnonzero(s2 > 0)
        if pos.size:
            every = pos.size == nb
            iv = ivar if every else ivar[pos]
            rs = resid if every else resid[pos]
            x = s2[pos, None] * iv
            x += 1.0                                              # 1 + s² ivar = (s² + σ²) ivar
            chi2 = np.vecdot(rs * (iv / x), rs)
            loglike[pos] = -0.5 * (chi2 + _sum_log(x, float(s2[pos].max() * iv.max())))
            worse = pos[loglike[pos] < -0.5 * chi2_0[pos]]
            self._restore(worse, t, block.theta, block.theta0, resid)
            s2[worse] = 0.0
            loglike[worse] = -0.5 * chi2_0[worse]
        return s2, loglike

    def _restore(self, rows, t, theta, theta0, resid):
        """Back to s² = 0 at these rows of a block: θ̂(0) and its residuals."""
        if rows.size:
            resid[rows] += (theta[rows] - theta0[rows]) @ self.design.T
            theta[rows] = theta0[rows]
            t[rows] = -np.inf

    # ------------------------------------------------------------------ all pixels
    def run(self, tolerance_dex: float = 0.01, loglike_tolerance: float = 1e-4,
            max_iter: int = 50, progress: bool = False, threads: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """θ (n_pix, P), s² (n_pix,), ln L (n_pix,) and a summary: the most Newton iterations
        of a block, the pixel evaluations (one per pixel per normal-matrix build), the cheap
        (refinement-only) evaluations and their refinement steps per pixel, and the flops of
        all matrix products.

        threads: blocks solved at once (default: the configured BLAS/torch thread count); each
        block runs on one thread, since its products are too small for threaded BLAS (the
        compiled kernel releases the GIL, so its blocks run in parallel on Python threads).
        The summary also names the ``engine`` that ran; the numba engine counts only the
        builds it makes (the NumPy code also counts finished pixels of whole-block builds).
        """
        from tqdm.auto import tqdm

        n_pix = self.flux.shape[1]
        n_terms = self.design.shape[1]
        theta = np.empty((n_pix, n_terms))
        s2 = np.empty(n_pix)
        loglike = np.empty(n_pix)
        tol = tolerance_dex * LN10

        buffers = threading.local()    # block copies, reused: a fresh copy per block costs
        n_stars = self.flux.shape[0]   # page faults and runs ~3x slower than filling these

        def solve(start: int) -> int:
            sl = slice(start, min(start + self.block, n_pix))
            nb = sl.stop - sl.start
            keep = None if self.term_mask is None else self.term_mask[sl]
            if not hasattr(buffers, "flux"):
                buffers.flux = np.empty((self.block, n_stars))
                buffers.ivar = np.empty((self.block, n_stars))
            flux, ivar = buffers.flux[:nb], buffers.ivar[:nb]
            np.copyto(flux, self.flux[:, sl].T)
            np.copyto(ivar, self.ivar[:, sl].T)
            theta[sl], s2[sl], loglike[sl], it = self._solve_block(
                flux, ivar, keep, tol, loglike_tolerance, max_iter)
            return it

        threads = thread_budget() if threads is None else max(int(threads), 1)
        starts = range(0, n_pix, self.block)
        bar = tqdm(total=len(starts), desc="Cannon training", disable=not progress, leave=False)
        if self.engine == "numba":
            return self._run_compiled(starts, threads, tol, loglike_tolerance, max_iter, bar)
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
        return theta, s2, loglike, self._summary(max(iterations), n_pix, threads, "numpy")

    def _summary(self, max_iterations: int, n_pix: int, threads: int, engine: str
                 ) -> dict[str, object]:
        """The search's counters per pixel, as both engines report them."""
        return {"max_newton_iterations": max_iterations,
                "pixel_evaluations": self.evaluated_pixels,
                "evaluations_per_pixel": self.evaluated_pixels / max(n_pix, 1),
                "cheap_evaluations_per_pixel": self.cheap_evaluations / max(n_pix, 1),
                "refinement_steps_per_pixel": self.update_steps / max(n_pix, 1),
                "flop": self.flop, "threads": threads, "engine": engine}

    def _run_compiled(self, starts, threads, tolerance, loglike_tolerance, max_iter, bar):
        """:meth:`run` with the numba kernel, one call per block (several blocks at once on
        ``threads`` threads: the kernel releases the GIL)."""
        from threadpoolctl import threadpool_limits

        n_stars, n_pix = self.flux.shape
        n_terms = self.design.shape[1]
        flux = np.ascontiguousarray(self.flux, dtype=np.float64)
        ivar = np.ascontiguousarray(self.ivar, dtype=np.float64)
        has_keep = self.term_mask is not None
        keep = (np.ascontiguousarray(self.term_mask, dtype=bool) if has_keep
                else np.ones((1, n_terms), dtype=bool))
        design_t = np.ascontiguousarray(self.design.T)
        monomials_t = np.ascontiguousarray(self.monomials64.T)
        inverse = self.inverse.astype(np.int64)
        rows, cols = self.rows.astype(np.int64), self.cols.astype(np.int64)
        theta = np.empty((n_pix, n_terms))
        s2 = np.empty(n_pix)
        loglike = np.empty(n_pix)
        counters = np.zeros((threads, 5))
        # the normal matrices at s² = 0 (weights ivar) of all pixels: one large product
        with threadpool_limits(limits=threads, user_api="blas"):
            normal0 = self.monomials64 @ ivar
        self.flop += 2.0 * normal0.size * n_stars

        # work space of each worker, reused from block to block
        chunk = min(self.sub_block, self.block)
        spaces = [(*(np.empty((self.block, n_stars)) for _ in range(3)),
                   *(np.empty((chunk, n_stars)) for _ in range(3)),
                   np.empty((self.block, n_terms, n_terms))) for _ in range(threads)]

        def solve(task: tuple[int, int]) -> int:
            worker, start = task
            return cannon_kernel.solve_block(
                flux, ivar, normal0, start, min(self.block, n_pix - start), keep, has_keep,
                self.design, design_t, monomials_t, inverse, rows, cols, float(tolerance),
                float(loglike_tolerance), int(max_iter), self.cheap_change, theta, s2, loglike,
                counters[worker], *spaces[worker])

        tasks = [(k % threads, start) for k, start in enumerate(starts)]
        with single_threaded():
            if threads == 1:
                status = []
                for task in tasks:
                    status.append(solve(task))
                    bar.update()
            else:
                # one worker per counter row: blocks are dealt round-robin to fixed workers
                def worker(k: int) -> list[int]:
                    out = []
                    for task in tasks[k::threads]:
                        out.append(solve(task))
                        bar.update()
                    return out

                with ThreadPoolExecutor(threads) as pool:
                    status = [x for part in pool.map(worker, range(threads)) for x in part]
        bar.close()
        if any(status):
            raise ModelError(
                "the weighted normal equations are singular at some pixel: the training labels "
                "or unmasked pixels do not constrain every polynomial term; use fewer terms "
                "(lower order / no cross terms) or more training stars")
        total = counters.sum(axis=0)
        self.evaluated_pixels = int(total[0])
        self.cheap_evaluations = int(total[1])
        self.update_steps = int(total[2])
        self.flop += float(total[3])
        return theta, s2, loglike, self._summary(int(counters[:, 4].max()), n_pix, threads,
                                                 "numba")

