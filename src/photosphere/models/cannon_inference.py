"""The Cannon's test step: labels of many spectra at once by batched Levenberg–Marquardt.

χ²(x) = Σ_λ w_λ (f_λ - θ_λ·ℓ(x))², w_λ = 1/(σ²_λ + s²_λ), minimised in scaled labels x with the
analytic Jacobian J = θ ∂ℓ/∂x. Several starts per spectrum (the training labels whose model
spectra match best, plus the fiducial) avoid local minima; steps are projected onto the bounds.
The loop is the project's one, :func:`photosphere.ops.levenberg_marquardt.minimise`, with every
start of a chunk as one row of a :class:`_LabelProblem`. The covariance is (Jᵀ W J)⁻¹ at the
optimum, converted to physical units with the label scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .._threads import single_threaded
from ..errors import ModelError
from ..ops.levenberg_marquardt import Damping, marquardt_steps, minimise
from ..result import Result, Segment
from . import polynomial

if TYPE_CHECKING:
    from .cannon import CannonModel

FLAG_NOT_CONVERGED = 1
FLAG_AT_BOUND = 2
FLAG_POOR_FIT = 4
FLAG_OUTSIDE_TRAINING = 8
FLAG_FEW_PIXELS = 16
FLAG_NAMES = {
    FLAG_NOT_CONVERGED: "not_converged",
    FLAG_AT_BOUND: "at_bound",
    FLAG_POOR_FIT: "poor_fit",
    FLAG_OUTSIDE_TRAINING: "outside_training_labels",
    FLAG_FEW_PIXELS: "few_pixels",
}


@dataclass(frozen=True)
class CannonLabelFit:
    """Result of :meth:`CannonModel.infer_labels` for n spectra and k labels.

    labels: (n, k) physical units; covariance: (n, k, k) physical units; chi2, chi2_reduced:
    (n,) with w = 1/(σ² + s²); n_pixels: (n,) pixels used; flags: (n,) bit mask (FLAG_* constants:
    1 not converged, 2 a label at a bound, 4 reduced χ² above the threshold, 8 labels outside the
    training range, 16 fewer unmasked pixels than 10 × labels; spectra with no more usable
    pixels than labels get NaN labels and flags 1 + 16); n_iter: (n,);
    model_flux: (n, n_pix) model at the best labels. formal_covariance: (n, k, k) the formal
    (JᵀWJ)⁻¹ when ``covariance`` was scaled by the model's uncertainty calibration, else None.
    """

    label_names: tuple[str, ...]
    labels: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    chi2_reduced: np.ndarray
    n_pixels: np.ndarray
    flags: np.ndarray
    n_iter: np.ndarray
    model_flux: np.ndarray
    formal_covariance: np.ndarray | None = None

    @property
    def sigma(self) -> np.ndarray:
        """(n, k) 1σ uncertainties, physical units (calibrated when the model is)."""
        return np.sqrt(np.clip(np.diagonal(self.covariance, axis1=1, axis2=2), 0, None))

    @property
    def sigma_formal(self) -> np.ndarray:
        """(n, k) formal 1σ from (JᵀWJ)⁻¹ alone, before any calibration, physical units."""
        cov = self.covariance if self.formal_covariance is None else self.formal_covariance
        return np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))

    def flag_names(self, i: int) -> list[str]:
        return [name for bit, name in FLAG_NAMES.items() if self.flags[i] & bit]

    def as_dict(self, i: int) -> dict[str, Any]:
        """One spectrum in the project's JSON shape (labels with value and sigma)."""
        return {
            "labels": {n: {"value": float(self.labels[i, k]), "sigma": float(self.sigma[i, k])}
                       for k, n in enumerate(self.label_names)},
            "covariance": self.covariance[i].tolist(),
            "chi2": float(self.chi2[i]),
            "chi2_reduced": float(self.chi2_reduced[i]),
            "n_pixels": int(self.n_pixels[i]),
            "flags": self.flag_names(i),
            "n_iter": int(self.n_iter[i]),
        }

    def to_result(self, i: int = 0, spectrum=None, source: str = "") -> Result:
        """Spectrum ``i`` as a :class:`~photosphere.result.Result` (``method="cannon"``): labels,
        σ, covariance, χ², the Cannon's bit flags by name (``flags["cannon"]``). With the fitted
        ``spectrum`` (a Spectrum on the model grid) the data and model spectrum are kept as its
        one segment."""
        names = tuple(self.label_names)
        segments = ()
        if spectrum is not None:
            ones = np.ones_like(self.model_flux[i])
            sigma = spectrum.sigma if spectrum.has_uncertainty else np.full_like(ones, np.nan)
            segments = (Segment(spectrum.wavelength, spectrum.flux, sigma, spectrum.mask,
                                self.model_flux[i], ones),)
        return Result(
            values={n: float(self.labels[i, k]) for k, n in enumerate(names)},
            sigma={n: float(self.sigma[i, k]) for k, n in enumerate(names)}, free=names,
            covariance=np.asarray(self.covariance[i]), chi2=float(self.chi2[i]),
            n_pixels=int(self.n_pixels[i]), n_parameters=len(names), segments=segments,
            flags={"converged": not self.flags[i] & FLAG_NOT_CONVERGED,
                   "cannon": self.flag_names(i), "n_iter": int(self.n_iter[i])},
            provenance={"source": source}, method="cannon")


class _SpectrumForms:
    """χ² of each spectrum as a quadratic form in its label vector ℓ (weights fixed per star):

    χ²_b(ℓ) = c_b - 2 ℓ·u_b + ℓᵀ T_b ℓ,
    T_b = θᵀ W_b θ (P, P), u_b = θᵀ W_b f_b, c_b = f_bᵀ W_b f_b.

    Building T for all spectra is one GEMM, (n, n_pix) @ (n_pix, P(P+1)/2); after that every LM
    iteration costs O(P²) per spectrum instead of O(n_pix · P).
    """

    def __init__(self, theta: np.ndarray, terms, flux: np.ndarray, weight: np.ndarray):
        self.terms = terms
        n_terms = theta.shape[1]
        rows, cols = np.triu_indices(n_terms)
        self.rows, self.cols = rows, cols
        self.flat = weight @ (theta[:, rows] * theta[:, cols])     # (n, P(P+1)/2)
        self.t = np.empty((flux.shape[0], n_terms, n_terms))
        self.t[:, rows, cols] = self.flat
        self.t[:, cols, rows] = self.flat
        wf = weight * flux
        self.u = wf @ theta                                          # (n, P)
        self.c = np.vecdot(wf, flux)                                 # (n,)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, u, c) of the spectra ``rows`` (one row per start point)."""
        return self.t[rows], self.u[rows], self.c[rows]

    def chi2(self, x: np.ndarray, t: np.ndarray, u: np.ndarray, c: np.ndarray) -> np.ndarray:
        """χ² (b,) at scaled labels x (b, k) of the spectra whose forms are (t, u, c)."""
        lv = polynomial.design_matrix(x, self.terms)
        tl = (t @ lv[:, :, None])[:, :, 0]
        return c - 2 * np.vecdot(lv, u) + np.vecdot(lv, tl)

    def chi2_candidates(self, candidates: np.ndarray) -> np.ndarray:
        """(n, c) χ² of every spectrum at every candidate (scaled) label vector."""
        lv = polynomial.design_matrix(candidates, self.terms)         # (c, P)
        # ℓᵀTℓ = Σ_{p≤q} T_pq ℓ_p ℓ_q (2 - δ_pq): one product with the triangle of T
        pairs = lv[:, self.rows] * lv[:, self.cols] * np.where(self.rows == self.cols, 1.0, 2.0)
        return self.c[:, None] - 2 * self.u @ lv.T + self.flat @ pairs.T

    def normal(self, x: np.ndarray, t: np.ndarray, u: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Gauss–Newton Hessian JᵀWJ (b, k, k) and gradient JᵀW r (b, k) at scaled labels x,
        for the spectra whose forms are (t, u)."""
        lv = polynomial.design_matrix(x, self.terms)                  # (b, P)
        dl = polynomial.design_jacobian(x, self.terms)                # (b, P, k)
        resid = u - (t @ lv[:, :, None])[:, :, 0]                     # θᵀW(f - θℓ)
        h = np.swapaxes(dl, 1, 2) @ (t @ dl)
        g = (resid[:, None, :] @ dl)[:, 0, :]
        return h, g


#: The test step's λ schedule (each trial one iteration; λ × 0.3 after an accepted step, × 10
#: after a rejected one) and tolerances: on the APOGEE benchmark a relative χ² tolerance of
#: 1e-12 took 43 instead of 19 iterations per spectrum, summed over 3 starts, for label changes
#: below 2 mK in Teff.
DAMPING = Damping(initial=1e-3, up=10.0, down=1 / 0.3, floor=1e-9, ceiling=1e12)
FTOL = XTOL = 1e-10


class _LabelProblem:
    """The starts of one chunk as a :func:`~photosphere.ops.levenberg_marquardt.minimise`
    problem: start i fits spectrum ``spectrum[i]`` through its quadratic form (``forms``); loss
    χ² (b,), dense normal equations JᵀWJ (b, k, k) and θᵀW(f − θℓ)·∂ℓ/∂x (b, k), batched
    Marquardt steps (:func:`~photosphere.ops.levenberg_marquardt.marquardt_steps`), clipping
    to the bounds ``lo``, ``hi`` (k,) in scaled labels."""

    def __init__(self, forms: _SpectrumForms, spectrum: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray):
        self.forms, self.lo, self.hi = forms, lo, hi
        self.t, self.u, self.c = forms.take(spectrum)         # one form per start
        self._rows = np.arange(self.c.size)                  # the starts of the last gather
        self._taken = self.t, self.u, self.c

    def _take(self, rows: np.ndarray, *, keep: bool) -> tuple[np.ndarray, ...]:
        """The forms (T, u, c) of the starts ``rows``. The loss asks for the same active starts
        at every iteration until one converges, so its gather is kept (``keep``)."""
        if np.array_equal(rows, self._rows):
            return self._taken
        taken = self.t[rows], self.u[rows], self.c[rows]
        if keep:
            self._rows, self._taken = rows, taken
        return taken

    def loss(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.forms.chi2(x, *self._take(rows, keep=True))

    def linearise(self, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, u, _ = self._take(rows, keep=False)
        return self.forms.normal(x, t, u)

    def step(self, system: tuple[np.ndarray, np.ndarray], lam: np.ndarray, x: np.ndarray
             ) -> np.ndarray:
        h, g = system
        return marquardt_steps(h, g, lam, ridge=1e-12)

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lo, self.hi)


def fit_labels(model: CannonModel, flux: np.ndarray, ivar: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, *, n_starts: int = 3, max_iter: int = 100, chunk_size: int = 1024,
               poor_fit_chi2_reduced: float = 3.0, progress: bool = False) -> CannonLabelFit:
    """Batched multi-start LM fit; see :meth:`CannonModel.infer_labels` for the arguments."""
    terms = model.term_indices
    flux, ivar, n_pixels, empty = _usable_pixels(flux, ivar, len(model.label_names))
    weight = model.s2_ * ivar
    weight += 1.0
    np.divide(ivar, weight, out=weight)                        # 0 where ivar = 0
    n_spec, k = flux.shape[0], len(model.label_names)

    train_x = model.scale_labels(model.training_labels_)
    pick = np.linspace(0, train_x.shape[0] - 1, min(256, train_x.shape[0])).astype(int)
    candidates = np.vstack([np.zeros((1, k)), train_x[pick]])
    n_starts = max(1, min(n_starts, candidates.shape[0]))

    best_x = np.empty((n_spec, k))
    best_chi2 = np.empty(n_spec)
    conv = np.empty(n_spec, dtype=bool)
    iters = np.empty(n_spec, dtype=int)
    covariance = np.empty((n_spec, k, k))
    for start in tqdm(range(0, n_spec, chunk_size), desc="Cannon test step",
                      disable=not progress, leave=False):
        sl = slice(start, min(start + chunk_size, n_spec))
        forms = _SpectrumForms(model.theta_, terms, flux[sl], weight[sl])
        with single_threaded():   # small products: one thread (threaded BLAS is slower)
            best_x[sl], best_chi2[sl], conv[sl], iters[sl], cov = _fit_chunk(
                forms, candidates, n_starts, lo, hi, max_iter)
            covariance[sl] = cov * np.outer(model.scales_, model.scales_)
    model_flux = polynomial.design_matrix(best_x, terms) @ model.theta_.T
    # best_chi2 is the quadratic form c - 2ℓ·u + ℓᵀTℓ: its cancellation (c ~ Σ w f² against
    # χ² ~ n_pix) costs ~4 of float64's 16 digits, so it stays exact to ~1e-12 of χ²

    dof = np.maximum(n_pixels - k, 1)
    chi2_reduced = best_chi2 / dof
    labels = model.unscale_labels(best_x)
    flags = _flags(model, best_x, labels, conv, chi2_reduced, n_pixels, lo, hi,
                   poor_fit_chi2_reduced)
    if empty.any():   # no information: no labels rather than the starting point with σ = 0
        labels[empty] = np.nan
        covariance[empty] = np.nan
        best_chi2[empty] = np.nan
        chi2_reduced[empty] = np.nan
        flags[empty] |= FLAG_NOT_CONVERGED | FLAG_FEW_PIXELS
    scale = getattr(model, "sigma_scale_", None)
    formal = None
    if scale is not None:
        formal, covariance = covariance, covariance * np.outer(scale, scale)
    return CannonLabelFit(model.label_names, labels, covariance, best_chi2, chi2_reduced,
                          n_pixels, flags.astype(int), iters, model_flux, formal)


def _usable_pixels(flux: np.ndarray, ivar: np.ndarray, n_labels: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Test flux and ivar (n, n_pix) with unusable pixels (non-finite flux or ivar, ivar ≤ 0)
    masked (flux 1, ivar 0), the usable pixels per spectrum (n,) and where they are no more
    than the labels (n,) bool; refused if that is every spectrum."""
    if np.isfinite(flux.sum()) and ivar.min() >= 0 and np.isfinite(ivar.max()):   # fewer passes
        n_pixels = np.count_nonzero(ivar, axis=1)            # ivar ≥ 0: nonzero = usable
    else:
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        flux = np.where(good, flux, 1.0)
        ivar = np.where(good, ivar, 0.0)
        n_pixels = np.count_nonzero(good, axis=1)
    empty = n_pixels <= n_labels
    if empty.all():
        raise ModelError(
            f"none of the {flux.shape[0]} test spectra has more usable pixels (finite flux, "
            f"ivar > 0) than the {n_labels} labels; they are all-masked: check "
            "the masks/ivar or the wavelength overlap with the model")
    return flux, ivar, n_pixels, empty


def _fit_chunk(forms: _SpectrumForms, candidates: np.ndarray, n_starts: int, lo: np.ndarray,
               hi: np.ndarray, max_iter: int):
    """The LM fit of a chunk of m spectra from the n_starts candidates (scaled labels) of
    lowest χ² each: the best start's scaled labels (m, k), χ², convergence (m,), the
    iterations of all starts (m,) and the inverse of JᵀWJ (m, k, k) in scaled units."""
    k = candidates.shape[1]
    m = forms.c.shape[0]
    order = np.argsort(forms.chi2_candidates(candidates), axis=1)[:, :n_starts]
    x0 = candidates[order].reshape(m * n_starts, k)
    rows = np.repeat(np.arange(m), n_starts)
    out = minimise(_LabelProblem(forms, rows, lo, hi), x0, max_iter=max_iter,
                   ftol=FTOL, xtol=XTOL, damping=DAMPING)
    x, c, it = out.u, out.converged, out.iterations
    chi2 = out.chi2.reshape(m, n_starts)
    best = np.argmin(chi2, axis=1)
    pick_rows = np.arange(m) * n_starts + best
    best_x = x[pick_rows]
    h, _ = forms.normal(best_x, forms.t, forms.u)
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(h)
    return (best_x, chi2[np.arange(m), best], c[pick_rows],
            it.reshape(m, n_starts).sum(axis=1), cov)


def _flags(model: CannonModel, best_x: np.ndarray, labels: np.ndarray, conv: np.ndarray,
           chi2_reduced: np.ndarray, n_pixels: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           poor_fit_chi2_reduced: float) -> np.ndarray:
    """The FLAG_* bit mask (n,) of fitted scaled labels best_x and physical labels (n, k):
    not converged, at a bound (within 1e-6 of the bounds' span), poor fit, outside the
    training range, few pixels (< 10 per label)."""
    k = labels.shape[1]
    tol = 1e-6 * (hi - lo)
    at_bound = np.any((best_x <= lo + tol) | (best_x >= hi - tol), axis=1)
    train = model.training_labels_
    outside = np.any((labels < train.min(axis=0)) | (labels > train.max(axis=0)), axis=1)
    return (np.where(conv, 0, FLAG_NOT_CONVERGED) | np.where(at_bound, FLAG_AT_BOUND, 0)
            | np.where(chi2_reduced > poor_fit_chi2_reduced, FLAG_POOR_FIT, 0)
            | np.where(outside, FLAG_OUTSIDE_TRAINING, 0)
            | np.where(n_pixels < 10 * k, FLAG_FEW_PIXELS, 0))
