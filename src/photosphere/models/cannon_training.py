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
ln L_λ(θ̂_λ(s²), s²): first on a log-spaced grid (global), then by golden-section search in
log s² between the grid neighbours of the best node, every pixel at once.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..errors import ModelError

GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


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

    def normal_equations(self, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(M (n_pix, P, P), b (n_pix, P), Σ_n w f² (n_pix,)) at scatter s2 (n_pix,).

        Works in two preallocated (n_pix, n_stars) buffers: at full APOGEE size these passes,
        not the small solves, are the cost of training.
        """
        w, wf = self._buffers()
        np.multiply(s2[:, None], self.ivar_t, out=w)
        w += 1.0
        np.divide(self.ivar_t, w, out=w)
        n_terms = self.design.shape[1]
        flat = w @ self.products
        np.multiply(w, self.flux_t, out=wf)
        b = wf @ self.design
        wff = np.einsum("ln,ln->l", wf, self.flux_t)
        m = np.empty((self.n_pix, n_terms, n_terms))
        m[:, self.rows, self.cols] = flat
        m[:, self.cols, self.rows] = flat
        if self.term_mask is not None:
            keep = self.term_mask
            m *= keep[:, :, None] & keep[:, None, :]
            m[:, np.arange(n_terms), np.arange(n_terms)] += ~keep
            b *= keep
        return m, b, wff

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self._work is None:
            self._work = (np.empty_like(self.ivar_t), np.empty_like(self.ivar_t))
        return self._work

    def log_variance_term(self, s2: np.ndarray) -> np.ndarray:
        """Σ_n ln(1 + s² ivar_n) per pixel = Σ_n ln(s² + σ²_n) up to a constant in s²."""
        buf = self._buffers()[0]
        np.multiply(s2[:, None], self.ivar_t, out=buf)
        np.log1p(buf, out=buf)
        return buf.sum(axis=1)

    def solve(self, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """θ (n_pix, P) and the per-pixel objective ln L - Λ|θ|₁ (n_pix,) at scatter s2."""
        m, b, wff = self.normal_equations(s2)
        try:
            theta = np.linalg.solve(m, b[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError as exc:
            raise ModelError(
                "the weighted normal equations are singular at some pixel: the training labels "
                "or unmasked pixels do not constrain every polynomial term; use fewer terms "
                "(lower order / no cross terms) or more training stars") from exc
        penalty = 0.0
        if self.regularization is not None and np.any(self.regularization > 0):
            start = theta if self._theta_start is None else self._theta_start
            theta = lasso_coordinate_descent(m, b, self.regularization, start,
                                             self.l1_max_sweeps, self.l1_tolerance)
            self._theta_start = theta
            penalty = self.regularization * np.abs(theta[:, 1:]).sum(axis=1)
        # Σ w (f - θ·ℓ)² expanded, so that no (n_pix, n_stars) residual array is needed.
        chi2 = wff - 2 * np.einsum("lp,lp->l", theta, b) + np.einsum(
            "lp,lpq,lq->l", theta, m, theta)
        loglike = -0.5 * (chi2 + self.log_variance_term(s2))
        return theta, loglike - penalty


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


def optimise_scatter(solver: PixelSolver, s2_grid: np.ndarray, tolerance_dex: float = 0.01,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximise the profile likelihood over s² for every pixel: grid, then golden section.

    s2_grid: increasing candidate values, the first may be 0 and the rest log-spaced.
    Returns (theta (n_pix, P), s2 (n_pix,), loglike (n_pix,)).
    """
    grid = np.asarray(s2_grid, dtype=float)
    positive = grid[grid > 0]
    if positive.size < 2:
        raise ModelError(f"s2_grid needs at least two positive values, got {grid.tolist()}")
    log_grid = np.log10(positive)
    step = float(np.max(np.diff(log_grid)))
    n_golden = int(np.ceil(np.log(2 * step / tolerance_dex) / np.log(1 / GOLDEN)))
    n_pix = solver.n_pix
    bar = tqdm(total=len(grid) + n_golden + 2, desc="Cannon training (s² search)",
               disable=not progress, leave=False)

    loglikes = np.empty((len(grid), n_pix))
    for g, value in enumerate(grid):
        loglikes[g] = solver.solve(np.full(n_pix, value))[1]
        bar.update()
    best = np.argmax(loglikes, axis=0)
    best_s2 = grid[best]
    best_ll = loglikes[best, np.arange(n_pix)]

    refine = best_s2 > 0
    t_best = np.log10(np.where(refine, best_s2, positive[0]))
    lo = t_best - step
    hi = np.minimum(t_best + step, log_grid[-1])
    c = hi - GOLDEN * (hi - lo)
    d = lo + GOLDEN * (hi - lo)
    fc = solver.solve(10.0**c)[1]
    fd = solver.solve(10.0**d)[1]
    bar.update(2)
    for _ in range(n_golden):
        left = fc > fd
        new_hi = np.where(left, d, hi)
        new_lo = np.where(left, lo, c)
        probe = np.where(left, new_hi - GOLDEN * (new_hi - new_lo),
                         new_lo + GOLDEN * (new_hi - new_lo))
        f_probe = solver.solve(10.0**probe)[1]
        c, fc, d, fd = (np.where(left, probe, d), np.where(left, f_probe, fd),
                        np.where(left, c, probe), np.where(left, fc, f_probe))
        lo, hi = new_lo, new_hi
        bar.update()
    bar.close()
    t_golden = np.where(fc > fd, c, d)
    f_golden = np.maximum(fc, fd)
    take = refine & (f_golden > best_ll)
    s2 = np.where(take, 10.0**t_golden, best_s2)
    theta, loglike = solver.solve(s2)
    return theta, s2, loglike
