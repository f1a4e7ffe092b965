"""Training The Cannon, vectorised over pixels (Ness et al. 2015 §2.2; Casey et al. 2016 §2.3).

Per pixel λ the model is f_nλ = θ_λ · ℓ(x_n) with variance s²_λ + σ²_nλ, so the training
log-likelihood of that pixel is

    ln L_λ(θ_λ, s²_λ) = -½ Σ_n [ (f_nλ - θ_λ·ℓ_n)² w_nλ + ln(s²_λ + σ²_nλ) ],
    w_nλ = 1/(s²_λ + σ²_nλ).

At fixed s² the best θ is a weighted linear least-squares solution (with the optional L1 penalty
of The Cannon 2: a lasso, solved by coordinate descent). The weights differ per pixel, so the
normal matrices M_λ = Σ_n w_nλ ℓ_n ℓ_nᵀ differ too; they are all built at once by one matrix
product of the (n_pix, n_stars) weights with the (n_stars, n_terms(n_terms+1)/2) products of
label-vector entries, and solved batched. s²_λ maximises the *profile* likelihood
ln L_λ(θ̂_λ(s²), s²): first on a log-spaced grid (global), then by a bracketed 1D search in
log s² between the grid neighbours of the best node (successive parabolic interpolation with a
golden-section fallback), every pixel at once.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..errors import ModelError


class PixelSolver:
    """Solves θ for all pixels at given s² and returns the per-pixel (penalised) log-likelihood.

    design: (n_stars, n_terms) label vectors; flux, ivar: (n_stars, n_pix);
    term_mask: (n_pix, n_terms) bool or None (censoring); regularization: (n_pix,) L1 strength Λ
    (0 = plain least squares); the constant term is never penalised.
    """

    def __init__(self, design: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                 term_mask: np.ndarray | None = None, regularization: np.ndarray | None = None,
                 l1_max_sweeps: int = 2000, l1_tolerance: float = 1e-10):
        self.design = np.ascontiguousarray(design, dtype=float)
        n_terms = self.design.shape[1]
        self.rows, self.cols = np.triu_indices(n_terms)
        self.products = self.design[:, self.rows] * self.design[:, self.cols]
        self.flux_t = np.ascontiguousarray(flux.T, dtype=float)
        self.ivar_t = np.ascontiguousarray(ivar.T, dtype=float)
        self.term_mask = term_mask
        self.regularization = regularization
        self.l1_max_sweeps = l1_max_sweeps
        self.l1_tolerance = l1_tolerance
        self._theta_start: np.ndarray | None = None
        self._work: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_pix(self) -> int:
        return self.flux_t.shape[0]

    def normal_equations(self, s2: np.ndarray, pixels: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For all pixels or the given pixel indices, at scatter s2 (n,): the normal matrices
        M (n, P, P), right-hand sides b (n, P), Σ_n w f² (n,) and Σ_n ln(1 + s² ivar_n) (n,)
        (= Σ_n ln(s² + σ²_n) up to a constant in s²).

        Works in two preallocated (n_pix, n_stars) buffers: at full APOGEE size these passes,
        not the small solves, are the cost of training.
        """
        ivar_t = self.ivar_t if pixels is None else self.ivar_t[pixels]
        flux_t = self.flux_t if pixels is None else self.flux_t[pixels]
        n = ivar_t.shape[0]
        w, work = (buf[:n] for buf in self._buffers())
        np.multiply(s2[:, None], ivar_t, out=work)
        work += 1.0
        np.divide(ivar_t, work, out=w)
        log_term = _sum_log(work, float(np.max(s2, initial=0.0) * ivar_t.max(initial=0.0)))
        n_terms = self.design.shape[1]
        flat = w @ self.products
        np.multiply(w, flux_t, out=work)
        b = work @ self.design
        wff = np.einsum("ln,ln->l", work, flux_t)
        m = np.empty((n, n_terms, n_terms))
        m[:, self.rows, self.cols] = flat
        m[:, self.cols, self.rows] = flat
        if self.term_mask is not None:
            keep = self.term_mask if pixels is None else self.term_mask[pixels]
            m *= keep[:, :, None] & keep[:, None, :]
            m[:, np.arange(n_terms), np.arange(n_terms)] += ~keep
            b *= keep
        return m, b, wff, log_term

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self._work is None:
            self._work = (np.empty_like(self.ivar_t), np.empty_like(self.ivar_t))
        return self._work

    def solve(self, s2: np.ndarray, pixels: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """θ (n, P) and the objective ln L - Λ|θ|₁ (n,) at scatter s2 (n,), for all pixels or the
        given pixel indices."""
        m, b, wff, log_term = self.normal_equations(s2, pixels)
        try:
            theta = np.linalg.solve(m, b[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError as exc:
            raise ModelError(
                "the weighted normal equations are singular at some pixel: the training labels "
                "or unmasked pixels do not constrain every polynomial term; use fewer terms "
                "(lower order / no cross terms) or more training stars") from exc
        penalty = 0.0
        if self.regularization is not None and np.any(self.regularization > 0):
            lam = self.regularization if pixels is None else self.regularization[pixels]
            start = theta
            if self._theta_start is not None:
                start = self._theta_start if pixels is None else self._theta_start[pixels]
            theta = lasso_coordinate_descent(m, b, lam, start, self.l1_max_sweeps,
                                             self.l1_tolerance)
            if pixels is None:
                self._theta_start = theta
            penalty = lam * np.abs(theta[:, 1:]).sum(axis=1)
        # Σ w (f - θ·ℓ)² expanded, so that no (n_pix, n_stars) residual array is needed.
        chi2 = wff - 2 * np.einsum("lp,lp->l", theta, b) + np.einsum(
            "lp,lpq,lq->l", theta, m, theta)
        loglike = -0.5 * (chi2 + log_term)
        return theta, loglike - penalty


def _sum_log(x: np.ndarray, largest: float) -> np.ndarray:
    """Σ_n ln x_n along axis 1 of x (n, n_stars), x ≥ 1, as logs of products of k factors.

    One logarithm per k elements instead of one per element (the logarithm costs as much as the
    big matrix product otherwise); k is chosen so that no product can overflow (x ≤ 1 + largest).
    x is overwritten.
    """
    n, n_stars = x.shape
    k = int(np.clip(280 / max(np.log10(1.0 + largest), 1e-3), 1, 64))
    k = min(k, n_stars)
    m = n_stars // k
    head = x[:, :m * k].reshape(n, k, m)
    total = np.log(np.multiply.reduce(head, axis=1)).sum(axis=1)
    if m * k < n_stars:
        total += np.log(x[:, m * k:]).sum(axis=1)
    return total


def lasso_coordinate_descent(m: np.ndarray, b: np.ndarray, lam: np.ndarray, start: np.ndarray,
                             max_sweeps: int = 2000, tolerance: float = 1e-10) -> np.ndarray:
    """Minimise ½θᵀMθ - bᵀθ + Λ Σ_{j≥1}|θ_j| for every pixel at once (cyclic coordinate descent).

    m: (n_pix, P, P) positive definite; b: (n_pix, P); lam: (n_pix,); start: (n_pix, P).
    Stops when no coefficient moves by more than ``tolerance`` × its diagonal scale in a sweep.
    """
    theta = start.copy()
    n_terms = m.shape[1]
    diag = m[:, np.arange(n_terms), np.arange(n_terms)]
    for _ in range(max_sweeps):
        largest = 0.0
        for j in range(n_terms):
            rho = b[:, j] - np.einsum("lp,lp->l", m[:, j, :], theta) + diag[:, j] * theta[:, j]
            if j == 0:
                new = rho / diag[:, j]
            else:
                new = np.sign(rho) * np.maximum(np.abs(rho) - lam, 0.0) / diag[:, j]
            change = np.abs(new - theta[:, j]) * np.sqrt(diag[:, j])
            largest = max(largest, float(change.max()))
            theta[:, j] = new
        if largest < tolerance:
            break
    return theta


def _parabola_vertex(a, b, c, fa, fb, fc):
    """Abscissa of the extremum of the parabola through three points (NaN if degenerate)."""
    p = (b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)
    q = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    with np.errstate(divide="ignore", invalid="ignore"):
        return b - 0.5 * p / q


def optimise_scatter(solver: PixelSolver, s2_grid: np.ndarray, tolerance_dex: float = 0.01,
                     progress: bool = False, max_refine: int = 40,
                     loglike_tolerance: float = 1e-4
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximise the profile likelihood over s² for every pixel: grid, then Brent-style search.

    s2_grid: increasing candidate values, the first may be 0 and the rest log-spaced. The best
    grid node and its neighbours bracket the maximum in t = log10 s²; successive parabolic
    interpolation with golden-section fallback (one likelihood evaluation per iteration, all
    pixels at once) shrinks the bracket below ``tolerance_dex`` (or until the bracket's ln L
    values agree within ``loglike_tolerance``). The best point ever evaluated
    is returned, so the result is never worse than the grid.
    Returns (theta (n_pix, P), s2 (n_pix,), loglike (n_pix,)).
    """
    grid = np.asarray(s2_grid, dtype=float)
    if grid.ndim != 1 or np.any(np.diff(grid) <= 0) or grid[0] < 0:
        raise ModelError(f"s2_grid must be increasing and >= 0, got {grid.tolist()}")
    positive = grid[grid > 0]
    if positive.size < 3:
        raise ModelError(f"s2_grid needs at least three positive values, got {grid.tolist()}")
    bar = tqdm(desc="Cannon training (s² search)", disable=not progress, leave=False)
    loglikes, best_theta, best_ll = _grid_search(solver, grid, bar)
    best = np.argmax(loglikes, axis=0)
    best_s2 = grid[best]
    interior, bracket = _grid_bracket(grid, loglikes, best)
    t_best = np.log10(np.where(best_s2 > 0, best_s2, 1.0))
    _refine_bracket(solver, bracket, interior.copy(), best_theta, best_ll, t_best,
                    tolerance_dex, max_refine, loglike_tolerance, bar)
    bar.close()
    s2 = np.where(interior, 10.0**t_best, best_s2)
    return best_theta, s2, best_ll


def _grid_search(solver: PixelSolver, grid: np.ndarray, bar
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The profile ln L of every pixel at every grid node s² (len(grid), n_pix), and the θ
    (n_pix, P) and ln L (n_pix,) of each pixel's best node."""
    n_pix = solver.n_pix
    loglikes = np.empty((len(grid), n_pix))
    best_theta = best_ll = None
    for g, value in enumerate(grid):
        theta, loglikes[g] = solver.solve(np.full(n_pix, value))
        if best_ll is None:
            best_theta, best_ll = theta, loglikes[g].copy()
        else:
            better = loglikes[g] > best_ll
            best_theta[better] = theta[better]
            best_ll[better] = loglikes[g][better]
        bar.update()
    return loglikes, best_theta, best_ll


def _grid_bracket(grid: np.ndarray, loglikes: np.ndarray, best: np.ndarray):
    """The bracket (a, b, c, fa, fb, fc) (n_pix,) each, in t = log10 s², of every pixel: its
    best grid node (index ``best``) and the two neighbours with their ln L; s² = 0 stands in
    as one grid step below the first node. Also returns where the best node is interior (a
    bracketed maximum to refine)."""
    n_pix = loglikes.shape[1]
    t_nodes = np.log10(np.where(grid > 0, grid, 1.0))
    if grid[0] == 0:
        t_nodes[0] = 2 * t_nodes[1] - t_nodes[2]
    pix = np.arange(n_pix)
    interior = (best > 0) & (best < len(grid) - 1) & (grid[np.maximum(best - 1, 0)] >= 0)
    if grid[0] == 0:
        interior &= best >= 1
    k = np.clip(best, 1, len(grid) - 2)
    a, b, c = t_nodes[k - 1], t_nodes[k], t_nodes[k + 1]
    fa, fb, fc = loglikes[k - 1, pix], loglikes[k, pix], loglikes[k + 1, pix]
    return interior, (a, b, c, fa, fb, fc)


def _refine_bracket(solver: PixelSolver, bracket, active: np.ndarray, best_theta: np.ndarray,
                    best_ll: np.ndarray, t_best: np.ndarray, tolerance_dex: float,
                    max_refine: int, loglike_tolerance: float, bar) -> None:
    """Shrink the brackets of the active pixels (n_pix,) bool by successive parabolic
    interpolation with golden-section fallback, one ln L evaluation per iteration for all of
    them; the best point ever evaluated updates best_theta (n_pix, P), best_ll and t_best
    (n_pix,) (t = log10 s²) in place."""
    a, b, c, fa, fb, fc = bracket
    n_pix = active.size
    # Brent's rule: a parabolic step is taken only if it is shorter than half the step taken two
    # iterations before; otherwise a golden-section step into the larger segment.
    step_before_last = c - a
    last_step = c - a
    for _ in range(max_refine):
        # done when the bracket is narrow, or when the whole bracket is within loglike_tolerance
        # of the best value (a flat profile: s² is not better determined than that)
        active &= ((c - a) > 2 * tolerance_dex) & (fb - np.minimum(fa, fc) > loglike_tolerance)
        if not active.any():
            break
        u, step_before_last = _trial_point(a, b, c, fa, fb, fc, step_before_last, last_step,
                                           tolerance_dex)
        last_step = u - b
        idx = np.flatnonzero(active)
        theta, f_act = solver.solve(10.0 ** u[idx], idx)
        fu = np.full(n_pix, -np.inf)
        fu[idx] = f_act
        bar.update()
        up = active & (fu > fb)
        right = u > b
        # fu better than fb: u becomes the centre, b the new edge on its side
        a, fa = np.where(up & right, b, a), np.where(up & right, fb, fa)
        c, fc = np.where(up & ~right, b, c), np.where(up & ~right, fb, fc)
        # fu worse: u becomes the edge on its side
        c, fc = np.where(active & ~up & right, u, c), np.where(active & ~up & right, fu, fc)
        a, fa = np.where(active & ~up & ~right, u, a), np.where(active & ~up & ~right, fu, fa)
        b, fb = np.where(up, u, b), np.where(up, fu, fb)
        take = up & (fu > best_ll)
        best_theta[take] = theta[take[idx]]
        best_ll[take] = fu[take]
        t_best[take] = u[take]


def _trial_point(a, b, c, fa, fb, fc, step_before_last, last_step, tolerance_dex):
    """The next t = log10 s² to evaluate in each bracket (a, b, c) with ln L (fa, fb, fc)
    (n_pix,) each, by Brent's rule: the parabola's vertex if it lies inside the bracket and
    is shorter than half the step taken two iterations before, else a golden-section step
    into the larger segment; never closer to b than tolerance_dex / 2. Returns it and the
    step that now counts as the one before last."""
    u = _parabola_vertex(a, b, c, fa, fb, fc)
    larger_right = (c - b) > (b - a)
    golden = np.where(larger_right, b + 0.381966 * (c - b), b - 0.381966 * (b - a))
    bad = (~np.isfinite(u) | (u <= a) | (u >= c)
           | (np.abs(u - b) >= 0.5 * np.abs(step_before_last)))
    u = np.where(bad, golden, u)
    small = np.abs(u - b) < tolerance_dex / 2
    u = np.where(small, b + np.where(larger_right, 1, -1) * tolerance_dex / 2, u)
    step_before_last = np.where(bad, np.where(larger_right, c - b, b - a), last_step)
    return u, step_before_last
