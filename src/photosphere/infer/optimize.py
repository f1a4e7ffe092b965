"""Least-squares fitting: batched Levenberg–Marquardt with autodiff Jacobians.

:func:`fit` is the easy call: forward model + observation ->
:class:`~photosphere.result.Result`. It

1. builds the :class:`~photosphere.infer.chain.ObservationChain` (continuum profiled out);
2. initialises each RV by cross-correlation: χ² of the data against the model at the starting
   labels over an RV grid (the continuum re-fitted at every trial velocity);
3. screens a coarse grid of starting labels (``n_grid`` values per free label) by χ² and runs
   Levenberg–Marquardt from the best ``n_starts`` of them *at once* (batched over starts), so a
   local minimum of one start does not decide the answer;
4. with ``model_error="auto"`` and a model that has error templates, refines that solution with
   the model's own error marginalised (:mod:`photosphere.infer.model_error`);
5. reports the best solution with the covariance ``(JᵀWJ)⁻¹`` in physical units, where J is the
   Jacobian of the whitened residuals (the continuum coefficients are profiled, so this is the
   covariance marginalised over them). It is *not* scaled by χ²_red unless
   ``scale_covariance=True`` (use it when the noise is known to be mis-estimated by a constant).

:func:`levenberg_marquardt` is the reusable primitive: any residual function, batched over starts
(the unit-box problem of the project's one loop, :mod:`photosphere.ops.levenberg_marquardt`).
"""

from __future__ import annotations

import functools
import importlib
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..errors import FitError, OutOfGridError
from ..model import ForwardModel, check_labels_in_bounds
from ..ops.levenberg_marquardt import Damping, LMOutcome, box_step, minimise
from ..ops.macroturbulence import doyle_macroturbulence
from ..result import Result, Segment
from .chain import DTYPE, ObservationChain
from .likelihood import CorrelatedNoise, Likelihood
from .model_error import use_templates
from .parameters import Parameters
from .settings import ObservationSettings

# ------------------------------------------------------------------------- autodiff Jacobian
# torch's forward-mode dual level is process-wide: fits in threads of one process take turns
_FORWARD_AD_LOCK = threading.Lock()


@functools.cache
def _load_forward_ad() -> None:
    """Torch loads its forward-mode decompositions on first use through ``torch.jit.script``,
    which warns DeprecationWarning inside torch; load them once with that warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            importlib.import_module("torch._decomp.decompositions_for_jvp")
        except ImportError:  # pragma: no cover - older/newer torch without the module
            pass


#: How :func:`batched_jacobian` differentiates: ``"finite-difference"`` (forward differences
#: of step :data:`FD_STEP` in the unit box, all columns in one batched call) or
#: ``"forward-ad"`` (dual numbers). Finite differences are the default: torch 2.13 spends
#: 250-500 µs on every operation between a dual and a plain tensor (docs/fitting.md, "Speed").
JACOBIAN = "finite-difference"
#: step of the finite differences in the unit box of each free parameter (a fraction of its
#: range): ~sqrt(machine ε) of the model's precision, so rounding and truncation errors of the
#: differences stay ~1e-6 (float64) and ~1e-3 (float32, the grid interpolator) of the slope
FD_STEP = {torch.float64: 1e-6, torch.float32: 3e-4}


def batched_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     method: str | None = None, step: float = FD_STEP[torch.float64]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Value ``(B, N)`` and Jacobian ``(B, N, P)`` of a row-wise function ``fn: (B, P) -> (B, N)``
    of unit-box parameters ``x`` (each in [0, 1]).

    ``method`` (default :data:`JACOBIAN`): ``"finite-difference"``: one call of ``fn`` on the
    B rows and their P·B copies with one parameter moved by ``step`` (backwards where that
    would leave the box; :func:`fd_step` gives the step for a model's precision), so the cost
    is one pass of a (P + 1)-times larger batch of plain tensors; ``"forward-ad"``:
    forward-mode autodiff in one pass, copy p of the rows carrying the unit tangent of
    parameter p (falls back to the double-backward trick, P passes, when
    an operator lacks a forward-mode rule).
    """
    x = torch.as_tensor(x, dtype=DTYPE)
    method = method or JACOBIAN
    if method == "finite-difference":
        return _fd_jacobian(fn, x, step)
    if method != "forward-ad":
        raise FitError(f"jacobian method {method!r}: use 'finite-difference' or 'forward-ad'")
    _load_forward_ad()
    n_b, n_p = x.shape
    eye = torch.eye(n_p, dtype=DTYPE)
    x_rep = x.repeat(n_p, 1)                                   # (P*B, P), block p = copy p
    tangent = eye.repeat_interleave(n_b, dim=0)                # (P*B, P)
    try:
        with _FORWARD_AD_LOCK, fwAD.dual_level():
            out = fwAD.unpack_dual(fn(fwAD.make_dual(x_rep, tangent)))
            value, jvp = out.primal.detach(), out.tangent
        if jvp is None:
            jvp = torch.zeros_like(value)
        value = value[:n_b]
        jac = jvp.detach().reshape(n_p, n_b, -1).permute(1, 2, 0)
    except (NotImplementedError, RuntimeError):
        cols = []
        for p in range(n_p):
            value, col = torch.autograd.functional.jvp(fn, x, eye[p].expand_as(x))
            cols.append(col.detach())
        value, jac = value.detach(), torch.stack(cols, -1)
    return value, jac.contiguous()


def fd_step(model) -> float:
    """The finite-difference step (unit box) for ``model``: :data:`FD_STEP` of the precision of
    its predictions (float32 for the grid interpolator, float64 for emulators), read from one
    prediction at the centre of its box (float32's step when there is a hole there). A binary
    over several epochs predicts through ``predict_epochs``."""
    mid = torch.as_tensor([0.5 * (lo + hi) for lo, hi in
                           (model.bounds[n] for n in model.label_names)], dtype=DTYPE)
    try:
        with torch.no_grad():
            dtype = getattr(model, "predict_epochs", model.predict)(mid).dtype
    except OutOfGridError:
        dtype = torch.float32
    return FD_STEP.get(dtype, FD_STEP[torch.float32])


def _fd_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, h: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batched_jacobian` by forward differences of step ``h``, one batched call."""
    n_b, n_p = x.shape
    step = torch.where(x + h <= 1.0, h, -h)                     # (B, P): stay in the box
    moved = x.repeat(n_p, 1)                                    # (P*B, P), block p = copy p
    eye = torch.eye(n_p, dtype=DTYPE).repeat_interleave(n_b, dim=0)
    moved = moved + eye * step.repeat(n_p, 1)
    with torch.no_grad():
        out = fn(torch.cat([x, moved])).detach()
    value = out[:n_b]
    diff = (out[n_b:].reshape(n_p, n_b, -1) - value) / step.T[..., None]   # (P, B, N)
    return value, diff.permute(1, 2, 0).contiguous()


class _UnitBoxProblem:
    """A residual function of ``u ∈ [0, 1]^P`` as a :func:`~photosphere.ops.
    levenberg_marquardt.minimise` problem: loss Σ r², dense normal equations, bound-aware
    steps (:func:`~photosphere.ops.levenberg_marquardt.box_step`), clipping to the box."""

    def __init__(self, residual_and_jacobian, residual):
        self.residual_and_jacobian = residual_and_jacobian
        self.residual = residual

    def loss(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.sum(self.residual(u) ** 2, -1)

    def linearise(self, u: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """JᵀJ (b, P, P) and Jᵀr (b, P) at u (b, P); every start fits the same residuals."""
        r, jac = self.residual_and_jacobian(u)
        # BLAS products (np.einsum does not use BLAS here: 10x slower on 40 000 residuals)
        jac_t = np.swapaxes(jac, 1, 2)
        return jac_t @ jac, (jac_t @ r[..., None])[..., 0]

    def step(self, system: tuple[np.ndarray, np.ndarray], lam: np.ndarray, u: np.ndarray
             ) -> np.ndarray:
        return np.stack([box_step(jtj, grad, lam_b, u_b)
                         for jtj, grad, lam_b, u_b in zip(*system, lam, u, strict=True)])

    def project(self, u: np.ndarray) -> np.ndarray:
        return np.clip(u, 0.0, 1.0)


def levenberg_marquardt(residual_and_jacobian: Callable[[np.ndarray], tuple[np.ndarray,
                                                                             np.ndarray]],
                        residual: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, *,
                        max_iter: int = 100, ftol: float = 1e-7, xtol: float = 1e-7,
                        lam0: float = 1e-3) -> LMOutcome:
    """Box-constrained Levenberg–Marquardt on ``u ∈ [0, 1]^P``, batched over starts.

    residual_and_jacobian(u (B, P)) -> r (B, N), J (B, N, P); residual(u) -> r (B, N).
    Converged when an accepted step lowers χ² by less than ``ftol`` relatively, or moves every
    parameter by less than ``xtol``, or when no step can lower χ² (λ beyond 1e12). The loop is
    :func:`photosphere.ops.levenberg_marquardt.minimise` (λ ÷ 3 after an accepted step, × 4
    after a rejected one, each trial one iteration).
    """
    return minimise(_UnitBoxProblem(residual_and_jacobian, residual), u0, max_iter=max_iter,
                    ftol=ftol, xtol=xtol, damping=Damping(initial=lam0))


# ------------------------------------------------------------------------- the easy call
def _coarse_grid(params: Parameters, label_names: tuple[str, ...], start: np.ndarray,
                 n_grid: int, max_points: int = 64, seed: int = 0) -> np.ndarray:
    """Starting points ``(n, n_free)`` physical: ``n_grid`` values per free *model label*
    (centres of equal slices of the bounds), other parameters at ``start``. When the full grid
    would exceed ``max_points`` (e.g. 3⁵ = 243 for five labels), a Latin hypercube of
    ``max_points`` points of the same box is used instead (seeded, so fits are repeatable)."""
    free_labels = [j for j, n in enumerate(params.free) if n in label_names]
    if n_grid > 1 and n_grid ** len(free_labels) > max_points:
        rng = np.random.default_rng(seed)
        unit = np.stack([(rng.permutation(max_points) + 0.5) / max_points
                         for _ in free_labels], -1)
        points = np.tile(start, (max_points, 1))
        points[:, free_labels] = params.lower[free_labels] + unit * params.span[free_labels]
        return points
    axes = []
    for j, name in enumerate(params.free):
        if name in label_names and n_grid > 1:
            q = (np.arange(n_grid) + 0.5) / n_grid
            axes.append(params.lower[j] + q * params.span[j])
        else:
            axes.append(np.array([start[j]]))
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], -1)


def _multistart(residual_and_jacobian, residual, starts: np.ndarray, max_iter: int,
                race_iterations: int = 5) -> LMOutcome:
    """All starts race for ``race_iterations`` LM iterations (batched); only the leader is then
    iterated to convergence. The others keep their state, flagged as not pursued."""
    first = levenberg_marquardt(residual_and_jacobian, residual, starts,
                                max_iter=min(race_iterations, max_iter))
    if len(starts) == 1 or max_iter <= race_iterations:
        return first
    lead = int(np.argmin(np.where(np.isfinite(first.chi2), first.chi2, np.inf)))
    reason = [r if c else f"not pursued after {race_iterations} iterations (not the best start)"
              for r, c in zip(first.reason, first.converged, strict=True)]
    u, chi2 = first.u.copy(), first.chi2.copy()
    iterations, converged = first.iterations.copy(), first.converged.copy()
    if not first.converged[lead]:
        final = levenberg_marquardt(residual_and_jacobian, residual, first.u[lead:lead + 1],
                                    max_iter=max_iter - race_iterations)
        u[lead], chi2[lead] = final.u[0], final.chi2[0]
        iterations[lead] += final.iterations[0]
        converged[lead], reason[lead] = final.converged[0], final.reason[0]
    return LMOutcome(u=u, chi2=chi2, iterations=iterations, converged=converged, reason=reason)


def _chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 64) -> np.ndarray:
    return np.concatenate([fn(x[i:i + size]) for i in range(0, len(x), size)])


def rv_scan(chain: ObservationChain, theta: np.ndarray, rv_grid: np.ndarray,
            chunk: int = 64) -> np.ndarray:
    """χ² of the data against the model at ``theta`` (labels, vsini) for every RV in
    ``rv_grid`` (km/s), the same RV for all exposures, continuum re-fitted each time:
    ``(n_rv,)``. Its minimum is the cross-correlation RV."""
    theta_t = torch.as_tensor(theta, dtype=DTYPE)
    labels, vsini, _ = chain.split(theta_t[None])
    vmac = chain.vmac_of(theta_t[None])
    out = []
    with torch.no_grad():
        fixed = chain.transmission is None  # else the broadened flux depends on the RV
        broadened = chain.broadened(labels, vsini, vmac) if fixed else None
        for i in range(0, len(rv_grid), chunk):
            rv = torch.as_tensor(rv_grid[i:i + chunk], dtype=DTYPE)[:, None].expand(
                -1, len(chain.rv_names))
            if not fixed:
                broadened = chain.transmitted(labels, vsini, vmac, rv)
            stellar = chain.resampled(broadened, rv)
            cont = chain.continuum(stellar)
            chi2 = torch.zeros(len(rv), dtype=DTYPE)
            for seg, s, c in zip(chain.segments, stellar, cont, strict=True):
                chi2 = chi2 + ((seg.flux - s * c) ** 2 * seg.ivar).sum(-1)
            out.append(chi2.numpy())
    return np.concatenate(out)


def initial_rv(chain: ObservationChain, theta: np.ndarray, center: float | None = None,
               half_width: float | None = None, step: float | None = None) -> float:
    """RV (km/s) minimising :func:`rv_scan` over ``chain.rv_bounds`` (or ``center ±
    half_width``): a coarse scan (``step``, default 5 km/s over wide ranges), then a 1 km/s scan
    ±8 km/s around its minimum, refined by a parabola through the three best points."""
    lo, hi = chain.rv_bounds
    if center is not None and half_width is not None:
        lo, hi = max(lo, center - half_width), min(hi, center + half_width)
    if step is None and hi - lo > 40.0:
        coarse = np.arange(lo, hi + 2.5, 5.0)
        best = float(coarse[int(np.nanargmin(rv_scan(chain, theta, coarse)))])
        lo, hi = max(lo, best - 8.0), min(hi, best + 8.0)
    step = 1.0 if step is None else step
    grid = np.arange(lo, hi + 0.5 * step, step)
    chi2 = rv_scan(chain, theta, grid)
    return parabola_minimum(grid, chi2, int(np.nanargmin(chi2)))


def parabola_minimum(grid: np.ndarray, chi2: np.ndarray, k: int) -> float:
    """The minimum of the parabola through ``chi2[k-1:k+2]`` on the uniform ``grid`` (the scan
    refined below its step), or ``grid[k]`` at an edge or where the three do not curve up."""
    if 0 < k < len(grid) - 1:
        y0, y1, y2 = chi2[k - 1:k + 2]
        denom = y0 - 2 * y1 + y2
        if denom > 0:
            return float(grid[k] + 0.5 * (grid[k + 1] - grid[k]) * (y0 - y2) / denom)
    return float(grid[k])


def _segments(chain: ObservationChain, theta: np.ndarray) -> tuple[Segment, ...]:
    with torch.no_grad():
        model, cont = chain.predict(torch.as_tensor(theta, dtype=DTYPE))
    return tuple(Segment(wavelength=s.wavelength.numpy(), flux=s.flux.numpy(),
                         sigma=s.sigma, mask=s.mask, model=m.numpy(), continuum=c.numpy(),
                         name=s.name)
                 for s, m, c in zip(chain.segments, model, cont, strict=True))


#: Broadening widths: the spectrum is an even function of each (a kernel of width w and of
#: width −w are the same), so at w = 0 its derivative is exactly zero.
WIDTHS = ("vsini", "vmac")


def _is_width(name: str) -> bool:
    """Whether parameter ``name`` is a broadening width (``vsini``, ``vmac``, ``vsini_a`` ...)."""
    return name.split("_")[0] in WIDTHS


def central_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], u: np.ndarray, h: float,
                     zero: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Value ``(N,)`` and Jacobian ``(N, P)`` of ``fn: (B, P) -> (B, N)`` at one unit-box point
    ``u (P,)`` by central differences of step ``h`` (one-sided, second order, at a face of the
    box: (−3f(u) + 4f(u±h) − f(u±2h)) / 2h), all 2P + 1 rows in one batched call. Columns
    where ``zero (P,)`` is True are exactly 0."""
    n_p = u.size
    zero = np.zeros(n_p, bool) if zero is None else zero
    up = u + h <= 1.0
    down = u - h >= 0.0
    eye = np.eye(n_p)
    # row layout: u; then per parameter two points, u + a·h e_p and u + b·h e_p
    a = np.where(up, 1.0, -1.0)                   # the first point: forwards unless at the top
    b = np.where(up & down, -1.0, 2.0 * a)        # the second: backwards, or twice as far
    rows = np.concatenate([u[None], u + (a * h)[:, None] * eye, u + (b * h)[:, None] * eye])
    with torch.no_grad():
        out = fn(torch.as_tensor(rows, dtype=DTYPE)).detach().numpy()
    f0, fa, fb = out[0], out[1:n_p + 1], out[n_p + 1:]
    central = (fa - fb) / (2.0 * h)                                   # a = 1, b = −1
    one_sided = (4.0 * fa - fb - 3.0 * f0) / (2.0 * h * a[:, None])   # b = 2a
    jac = np.where((up & down)[:, None], central, one_sided)
    jac[zero] = 0.0
    return f0, jac.T.copy()


def covariance(likelihood: Likelihood, params: Parameters, u: np.ndarray
               ) -> tuple[np.ndarray, bool]:
    """``(JᵀJ)⁻¹`` of the whitened residuals at ``u`` (unit box), in physical units, and
    whether JᵀJ was invertible.

    J of a float64 model (the emulators) by central differences (:func:`central_jacobian`, the
    step of :func:`fd_step`; σ agree with forward-mode autodiff to ~10⁻⁷ relative on the HARPS
    Sun): one batched call, without forward mode's one-off set-up (torch's decompositions and
    dynamo, ≈ 2 s of the first fit of a process). A broadening width at exactly 0
    (:data:`WIDTHS`) carries no information there (the spectrum changes only quadratically):
    its column is exactly zero. J of a float32 model (the grid interpolator, and the mixtures
    made of it: their ``prediction_precision``), whose rounding would move σ by up to a few per
    cent through differences, by forward-mode autodiff (exact; a width's column at 0 comes out
    zero by itself). A zero column is left out of the
    inversion and gets NaN variance (and zero covariance), so the others keep their
    conditional σ; JᵀJ then counts as invertible when the rest is.
    """
    fn = _residual_fn(likelihood, params)
    model = likelihood.chain.model
    step = fd_step(model)
    if step == FD_STEP[torch.float64] and getattr(
            model, "prediction_precision", torch.float64) == torch.float64:
        theta = params.unscale(u)
        zero = np.array([_is_width(n) and theta[j] == 0.0 for j, n in enumerate(params.free)])
        r, jac = central_jacobian(fn, np.asarray(u, float), step, zero)
    else:  # float32 predictions: differences would carry ~1 % of σ in rounding
        r, jac = batched_jacobian(fn, torch.as_tensor(u[None], dtype=DTYPE), method="forward-ad")
        r, jac = r[0].numpy(), jac[0].numpy()
    if likelihood.noise is not None:
        r, jac = likelihood.whiten(r, jac, theta=params.theta(torch.as_tensor(u)).numpy())
    jac_phys = jac / params.span
    norms = np.linalg.norm(jac, axis=0)
    keep = norms > 1e-12 * max(float(norms.max()), 1e-300)
    fisher = jac_phys[:, keep].T @ jac_phys[:, keep]
    try:
        sub = np.linalg.inv(fisher)
        ok = bool(np.all(np.isfinite(sub)) and np.all(np.diag(sub) > 0))
    except np.linalg.LinAlgError:
        sub, ok = np.linalg.pinv(fisher), False
    cov = np.zeros((len(keep), len(keep)))
    cov[np.ix_(keep, keep)] = 0.5 * (sub + sub.T)
    cov[~keep, ~keep] = np.nan
    return cov, ok


def _residual_fn(likelihood: Likelihood, params: Parameters):
    return lambda u: likelihood.residuals(params.theta(u))


def _lm_functions(likelihood: Likelihood, params: Parameters):
    fn = _residual_fn(likelihood, params)

    def residual(u: np.ndarray) -> np.ndarray:
        """Whitened residuals ``(B, N)``; rows the model cannot predict (a hole in a grid
        raising OutOfGridError inside the bounds) are +inf, so LM rejects that step."""
        try:
            return _residual(u)
        except OutOfGridError:
            if len(u) == 1:
                return np.full((1, likelihood.n_residuals), np.inf)
            return np.concatenate([residual(u[i:i + 1]) for i in range(len(u))])

    def _residual(u: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            r = fn(torch.as_tensor(u, dtype=DTYPE)).numpy()
        if likelihood.noise is None:
            return r
        th = params.theta(torch.as_tensor(u)).numpy()
        return np.stack([likelihood.whiten(r[b], theta=th[b])[0] for b in range(len(r))])

    step = fd_step(likelihood.chain.model)

    def residual_and_jacobian(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, jac = batched_jacobian(fn, torch.as_tensor(u, dtype=DTYPE), step=step)
        r, jac = r.numpy(), jac.numpy()
        if likelihood.noise is None:
            return r, jac
        th = params.theta(torch.as_tensor(u)).numpy()
        pairs = [likelihood.whiten(r[b], jac[b], theta=th[b]) for b in range(len(r))]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    return residual, residual_and_jacobian


def build_chain(model: ForwardModel, observation,
                settings: ObservationSettings | None = None, *,
                initial: Mapping[str, float] | None = None,
                fixed: Mapping[str, float] | None = None,
                **observation_settings: Any) -> ObservationChain:
    """The chain for a fit (``settings`` and keyword overrides as in :func:`fit`). Without
    ``rv_bounds`` the RV is searched over ±300 km/s by cross-correlation first, then the chain is
    rebuilt for ±50 km/s around it (fewer pixels lost to the model's edges)."""
    settings = ObservationSettings.of(settings, **observation_settings)
    if settings.rv_bounds is not None:
        return ObservationChain.from_settings(model, observation, settings)
    known = {**(initial or {}), **(fixed or {})}
    rv_values = [v for k, v in known.items() if k == "rv" or k.startswith("rv_")]
    if rv_values:
        center = float(np.mean(rv_values))
    else:
        center = cross_correlation_rv(model, observation, settings, initial=initial,
                                      fixed=fixed)
    spread = max([abs(v - center) for v in rv_values], default=0.0)
    chain = ObservationChain.from_settings(model, observation, settings.replace(
        rv_bounds=(center - 50.0 - spread, center + 50.0 + spread)))
    if not rv_values:
        chain.rv_initial = center  # the cross-correlation RV, so fit() need not scan again
    return chain


def cross_correlation_rv(model: ForwardModel, observation, settings: ObservationSettings, *,
                         initial: Mapping[str, float] | None = None,
                         fixed: Mapping[str, float] | None = None) -> float:
    """The RV (km/s) of ``observation`` by cross-correlation over ±300 km/s
    (:func:`initial_rv` on the chain of ``settings`` with those RV bounds), the model at the
    start values of a fit (:func:`_start_values`: ``fixed`` > ``initial`` > the bounds'
    centre, vsini 5 km/s) and RV 0."""
    wide = ObservationChain.from_settings(model, observation,
                                          settings.replace(rv_bounds=(-300.0, 300.0)))
    start = _start_values(wide, initial, fixed)
    return initial_rv(wide, wide.theta_from({**start, "rv": 0.0}))


def _start_values(chain: ObservationChain, initial: Mapping[str, float] | None,
                  fixed: Mapping[str, float] | None) -> dict[str, float]:
    """Start: ``fixed`` > ``initial`` > centre of the bounds (vsini: 5 km/s, rv: 0)."""
    start: dict[str, float] = {}
    for n in chain.parameter_names:
        lo, hi = chain.bounds[n]
        start[n] = 0.5 * (lo + hi)
        if n == "vsini":
            start[n] = float(np.clip(5.0, lo, hi))
        if n == "vmac":
            start[n] = float(np.clip(3.0, lo, hi))
        if n.startswith("rv"):
            start[n] = float(np.clip(0.0, lo, hi))
    for source in (initial or {}, fixed or {}):
        for n, v in source.items():
            if n == "rv":
                start.update({k: float(v) for k in chain.rv_names})
            elif n in start:
                start[n] = float(v)
            else:
                raise FitError(f"{n!r} is not a parameter of this fit; choose from "
                               f"{list(chain.parameter_names)}")
    check_labels_in_bounds({n: start[n] for n in chain.label_names}, chain.bounds)
    return start


def _start_with_rv(chain: ObservationChain, params: Parameters,
                   initial: Mapping[str, float] | None,
                   fixed: Mapping[str, float] | None) -> dict[str, float]:
    """Starting values of every parameter; a free RV not given in ``initial`` starts at the
    chain's ``rv_initial`` or at the cross-correlation peak (:func:`initial_rv`)."""
    start = _start_values(chain, initial, fixed)
    explicit_rv = initial is not None and any(k.startswith("rv") for k in initial)
    if not explicit_rv and any(n.startswith("rv") for n in params.free):
        rv0 = chain.rv_initial
        if rv0 is None:
            rv0 = initial_rv(chain, chain.theta_from(start))
        start.update({n: rv0 for n in chain.rv_names if n in params.free})
    return start


def _best_of_starts(likelihood: Likelihood, params: Parameters, start_free: np.ndarray,
                    use_start: bool, n_grid: int, n_starts: int, max_iter: int
                    ) -> tuple[np.ndarray, LMOutcome, int]:
    """Levenberg–Marquardt from the ``n_starts`` best points (by χ²) of the coarse label grid,
    plus ``start_free`` when ``use_start``: the scaled starts, the outcome, the best index."""
    residual, residual_and_jacobian = _lm_functions(likelihood, params)
    grid = _coarse_grid(params, likelihood.chain.label_names, start_free, n_grid)
    grid_u = params.scale(grid)
    chi2_grid = _chunked(lambda u: np.sum(residual(u) ** 2, -1), grid_u)
    chi2_grid = np.where(np.isfinite(chi2_grid), chi2_grid, np.inf)
    order = np.argsort(chi2_grid)[:max(n_starts, 1)]
    starts = grid_u[order]
    if use_start:
        starts = np.vstack([params.scale(start_free)[None], starts])
    outcome = _multistart(residual_and_jacobian, residual, starts, max_iter)
    ok = np.isfinite(outcome.chi2)
    if not np.any(ok):
        raise FitError("every start gave a non-finite χ²; check the data (σ > 0, finite flux) "
                       "and that the model covers the spectrum")
    return starts, outcome, int(np.argmin(np.where(ok, outcome.chi2, np.inf)))


def fit(model: ForwardModel, observation, *, settings: ObservationSettings | None = None,
        initial: Mapping[str, float] | None = None, fixed: Mapping[str, float] | None = None,
        noise: CorrelatedNoise | str | None = None, model_variance: bool = True,
        model_error: str = "auto", n_grid: int = 3, n_starts: int = 4, max_iter: int = 100,
        scale_covariance: bool = False, chain: ObservationChain | None = None,
        source: str | None = None, clip: float | None = None, clip_iterations: int = 10,
        misfit: str | None = None, **observation_settings: Any) -> Result:
    """Least-squares labels of ``observation`` with ``model`` through the observation chain.

    observation: Spectrum, EchelleSpectrum (orders jointly) or a list of exposures (labels and
    vsini shared, one RV each: ``rv_0, rv_1, ...``).
    initial / fixed: ``{name: value}`` starting values / values held constant (physical units).
    settings: the observation setup, an :class:`~photosphere.infer.settings.ObservationSettings`
    (resolution, telluric, continuum_degree, continuum_knot_spacing, rotation, epsilon,
    macroturbulence, rv_bounds, vsini_bounds, vmac_bounds); any of its fields may be given as a
    keyword instead, and a keyword overrides the object's field
    (``fit(model, spectrum, resolution=60000)``).
    noise: None (independent pixels), a :class:`CorrelatedNoise`, or ``"auto"`` (estimate the
    kernel from the residuals of a first fit, then refit with it).
    model_variance: add the model's ``predict_variance`` to the data variance when it has one
    (and its error templates are not used).
    model_error: ``"auto"`` marginalises the model's own error when the model offers
    ``predict_error_templates`` (grid interpolation error, emulator error) and ``noise`` is
    None: ``C = N + B Bᵀ`` through the chain, solved jointly with the continuum
    (:mod:`photosphere.infer.model_error`), so σ include the model error. The fit is first
    made with the model as exact (screening, starts, clipping), then refined with B frozen at
    the solution and recomputed there, at most 3 times (``flags["model_error_rounds"]``);
    χ² is then the marginal one, ``[N^{-1/2} r; â]²``. ``"none"`` fits the model as exact (the
    fit before templates existed).
    n_grid: starting values per free label in the coarse grid; n_starts: how many of the best
    grid points (by χ²) are refined, plus ``initial`` when given.
    clip: when given (e.g. 3.0), pixels whose normalised residual ``(data - model)/σ`` is more
    than ``clip`` robust standard deviations (1.4826 × MAD) from the median are masked and the
    fit is repeated from the last solution, until no pixel is added or ``clip_iterations``
    refits. This removes features the model cannot make (lines missing from the line list,
    cosmic rays, telluric residuals) instead of letting them pull the labels and continuum;
    clipped pixels are masked in the result's segments and counted in ``flags["clipped"]``.
    macroturbulence: None (no macroturbulence), ζ_RT in km/s (fixed radial-tangential
    broadening), ``"fit"`` (a free parameter ``vmac``, km/s; degenerate with vsini unless one
    of them is fixed or R is high), or ``"auto"``: fit without it, take ζ from the Doyle et
    al. (2014) relation at the fitted Teff and log g
    (:func:`photosphere.ops.macroturbulence.doyle_macroturbulence`), and refit from there.
    A fixed ζ (km/s or None) is in ``provenance["macroturbulence"]``. vsini is then the
    rotation left over after macroturbulence (the two are largely degenerate at R ≲ 60 000).
    misfit: None, or ``"jitter"``: after the fit (and clipping), a misfit term ``s`` (a fraction
    of the flux) is added to every pixel's variance, ``σ² + (s·model)²``, with ``s`` such that
    χ²_red = 1 (0 when χ²_red ≤ 1 already), and the fit is refined once with those variances:
    σ of a model that cannot describe the data are inflated rather than formal
    (``flags["jitter"]``, the χ²_red before it in ``flags["chi2_reduced_before_jitter"]``).
    """
    t0 = time.perf_counter()
    settings = ObservationSettings.of(settings, **observation_settings)
    templates = use_templates(model, model_error, noise)
    if settings.macroturbulence == "auto":
        return _fit_auto_macroturbulence(
            model, observation, settings, t0, initial=initial, fixed=fixed,
            noise=noise, model_variance=model_variance, model_error=model_error, n_grid=n_grid,
            n_starts=n_starts, max_iter=max_iter, scale_covariance=scale_covariance,
            chain=chain, source=source, clip=clip, clip_iterations=clip_iterations,
            misfit=misfit)
    _check_options(misfit, noise)
    if chain is None:
        chain = build_chain(model, observation, settings, initial=initial, fixed=fixed)
    params = Parameters(chain.parameter_names, chain.bounds, fixed)
    start_free = params.free_from_mapping(_start_with_rv(chain, params, initial, fixed))
    noise_model = None if isinstance(noise, str) else noise
    likelihood = Likelihood(chain, noise_model, model_variance)
    starts, outcome, best = _best_of_starts(likelihood, params, start_free, initial is not None,
                                            n_grid, n_starts, max_iter)
    chain, likelihood, u_best, outcome, chi2_best, flags = _refine(
        chain, params, likelihood, outcome, best, clip=clip, clip_iterations=clip_iterations,
        misfit=misfit, templates=templates, noise=noise, model_variance=model_variance,
        max_iter=max_iter)
    return _result(chain, likelihood, params, u_best, chi2_best, outcome, best, starts,
                   scale_covariance, flags, source, time.perf_counter() - t0)


def _check_options(misfit: str | None, noise) -> None:
    if misfit not in (None, "jitter"):
        raise FitError(f"misfit={misfit!r} is not understood; pass None or 'jitter'")
    if isinstance(noise, str) and noise != "auto":
        raise FitError(f"noise={noise!r} is not understood; pass None, 'auto' or a "
                       "CorrelatedNoise")


def _refine(chain: ObservationChain, params: Parameters, likelihood: Likelihood,
            outcome: LMOutcome, best: int, *, clip: float | None, clip_iterations: int,
            misfit: str | None, templates: bool, noise, model_variance: bool, max_iter: int):
    """The refinements of :func:`fit` after its multi-start fit, in this order: outlier
    clipping (``clip``), the misfit jitter, the model's error templates, a correlated-noise
    kernel (``noise="auto"``). Returns the chain (clipped, inflated), the likelihood of the
    solution, the solution (unit box), the outcome with the best start updated, its χ² and
    the flags of what was done."""
    u_best = outcome.u[best]
    flags: dict = {}
    if clip is not None:
        chain, u_best, outcome, flags = _clipped_refit(chain, params, u_best, outcome, best,
                                                       float(clip), clip_iterations,
                                                       likelihood, max_iter)
        likelihood = _like(likelihood, chain)
    if misfit == "jitter":
        chain, u_best, outcome, jitter_flags = _jitter_refit(chain, params, u_best, outcome,
                                                             best, likelihood, max_iter)
        likelihood = _like(likelihood, chain)
        flags.update(jitter_flags)
    if templates:
        u_best, likelihood, outcome, template_flags = _refit_with_templates(
            chain, params, u_best, outcome, best, model_variance, max_iter)
        flags.update(template_flags)
    if noise == "auto":
        u_best, likelihood, noise_flags = _refit_correlated(chain, params, u_best,
                                                            model_variance, max_iter)
        flags.update(noise_flags)
        chi2_best = float(likelihood.chi2(params.theta(torch.as_tensor(u_best)).numpy()))
    else:
        chi2_best = float(outcome.chi2[best])
    return chain, likelihood, u_best, outcome, chi2_best, flags


def _fit_auto_macroturbulence(model, observation, settings: ObservationSettings, t0: float, *,
                              chain, **kw) -> Result:
    """``fit(..., macroturbulence="auto")``: a first fit without macroturbulence gives Teff and
    log g, the Doyle et al. (2014) relation gives ζ there, and a second fit starts from the first
    with ζ fixed."""
    if chain is not None:
        raise FitError("macroturbulence='auto' builds its own chains; do not pass chain=")
    labels = tuple(model.label_names)
    if "teff" not in labels or "logg" not in labels:
        raise FitError(f"macroturbulence='auto' needs teff and logg labels; this model has "
                       f"{list(labels)}: pass a value in km/s instead")
    first = fit(model, observation, settings=settings.replace(macroturbulence=None), chain=None,
                **kw)
    zeta = doyle_macroturbulence(first.values["teff"], first.values["logg"])
    initial = {**(kw.pop("initial") or {}), **{n: v for n, v in first.values.items()
                                               if n not in (kw.get("fixed") or {})}}
    result = fit(model, observation, settings=settings.replace(macroturbulence=zeta),
                 initial=initial, **kw)
    result.provenance["macroturbulence_source"] = ("Doyle et al. (2014) at the first fit's "
                                                   f"Teff {first.values['teff']:.0f} K, "
                                                   f"log g {first.values['logg']:.2f}")
    result.provenance["elapsed_s"] = time.perf_counter() - t0
    return result


def robust_outliers(chain: ObservationChain, theta: np.ndarray, clip: float
                    ) -> list[np.ndarray]:
    """Per segment, the usable pixels whose normalised residual ``(data - model)·√ivar`` lies
    more than ``clip`` robust standard deviations (1.4826 × median absolute deviation, pooled
    over segments) from the median: a list of bool arrays shaped like each segment."""
    with torch.no_grad():
        model, _ = chain.predict(torch.as_tensor(theta, dtype=DTYPE))
    norm = [((s.flux - m) * s.ivar.sqrt()).numpy() for s, m in zip(chain.segments, model,
                                                                      strict=True)]
    good = [s.ivar.numpy() > 0 for s in chain.segments]
    pooled = np.concatenate([r[g] for r, g in zip(norm, good, strict=True)])
    centre = float(np.median(pooled))
    scale = 1.4826 * float(np.median(np.abs(pooled - centre)))
    if not scale > 0:
        return [np.zeros_like(g) for g in good]
    return [g & (np.abs(r - centre) > clip * scale) for r, g in zip(norm, good, strict=True)]


def _clipped_refit(chain, params, u_best, outcome, best, clip, clip_iterations,
                   likelihood, max_iter):
    """Iterative outlier clipping (see :func:`fit`): the chain with the clipped pixels masked,
    the refitted solution, the outcome with the best start's entry updated, and flags."""
    if not clip > 0:
        raise FitError(f"clip={clip} must be > 0 (robust standard deviations), e.g. 3")
    n_clipped, refits = 0, 0
    for _ in range(max(int(clip_iterations), 0)):
        theta = params.theta(torch.as_tensor(u_best)).numpy()
        extra = robust_outliers(chain, theta, clip)
        n_new = int(sum(int(e.sum()) for e in extra))
        if n_new == 0:
            break
        chain = chain.masked(extra)
        n_clipped += n_new
        residual, residual_and_jacobian = _lm_functions(_like(likelihood, chain), params)
        out = levenberg_marquardt(residual_and_jacobian, residual, u_best[None],
                                  max_iter=max_iter)
        refits += 1
        u_best = out.u[0]
        outcome = _with_best(outcome, best, out)
    return chain, u_best, outcome, {"clipped": n_clipped, "clip_sigma": clip,
                                    "clip_refits": refits}


def misfit_jitter(chain: ObservationChain, theta: np.ndarray, n_parameters: int) -> float:
    """The misfit ``s`` (fraction of the flux) with ``Σ r² / (σ² + s² m²) = dof``: the pixel
    variance a model that cannot describe the data needs for χ²_red = 1 (0 if it already is).
    Solved by bisection in ``s`` (the sum falls monotonically)."""
    with torch.no_grad():
        model, _ = chain.predict(torch.as_tensor(theta, dtype=DTYPE))
    good = [s.ivar.numpy() > 0 for s in chain.segments]
    r2 = np.concatenate([((s.flux - m).numpy() ** 2)[g]
                         for s, m, g in zip(chain.segments, model, good, strict=True)])
    var = np.concatenate([s.sigma[g] ** 2 for s, g in zip(chain.segments, good, strict=True)])
    m2 = np.concatenate([(m.numpy() ** 2)[g] for m, g in zip(model, good, strict=True)])
    dof = r2.size - n_parameters
    if dof <= 0 or np.sum(r2 / var) <= dof:
        return 0.0
    lo, hi = 0.0, 1.0
    while np.sum(r2 / (var + hi**2 * m2)) > dof and hi < 1e3:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.sum(r2 / (var + mid**2 * m2)) > dof else (lo, mid)
    return 0.5 * (lo + hi)


def _jitter_refit(chain, params, u_best, outcome, best, likelihood, max_iter):
    """The misfit-jitter refinement of :func:`fit` (``misfit="jitter"``): the chain with the
    inflated variances, the refined solution, the outcome updated, and flags."""
    theta = params.theta(torch.as_tensor(u_best)).numpy()
    n_parameters = params.n_free + chain.n_continuum
    chi2_before = float(outcome.chi2[best]) / max(chain.n_pixels - n_parameters, 1)
    jitter = misfit_jitter(chain, theta, n_parameters)
    if jitter == 0.0:
        return chain, u_best, outcome, {"jitter": 0.0, "chi2_reduced_before_jitter": chi2_before}
    with torch.no_grad():
        model, _ = chain.predict(torch.as_tensor(theta, dtype=DTYPE))
    chain = chain.inflated(jitter, model)
    residual, residual_and_jacobian = _lm_functions(_like(likelihood, chain), params)
    out = levenberg_marquardt(residual_and_jacobian, residual, u_best[None], max_iter=max_iter)
    return chain, out.u[0], _with_best(outcome, best, out), {
        "jitter": jitter, "chi2_reduced_before_jitter": chi2_before}


def _with_best(outcome: LMOutcome, best: int, out: LMOutcome) -> LMOutcome:
    """``outcome`` with start ``best`` continued by the one-start refit ``out`` (its solution,
    χ², convergence; iterations added up)."""
    u, chi2, iters = outcome.u.copy(), outcome.chi2.copy(), outcome.iterations.copy()
    converged, reason = outcome.converged.copy(), list(outcome.reason)
    u[best], chi2[best], iters[best] = out.u[0], out.chi2[0], iters[best] + out.iterations[0]
    converged[best], reason[best] = out.converged[0], out.reason[0]
    return LMOutcome(u=u, chi2=chi2, iterations=iters, converged=converged, reason=reason)


def _like(likelihood: Likelihood, chain: ObservationChain) -> Likelihood:
    """A likelihood of the same kind as ``likelihood`` for another (e.g. clipped) chain."""
    return Likelihood(chain, likelihood.noise, likelihood.use_model_variance)


def _refit_with_templates(chain, params, u_best, outcome, best, model_variance, max_iter,
                          rounds: int = 3, tol: float = 1e-4):
    """Refine the model-as-exact solution with the model's error templates marginalised
    (:mod:`photosphere.infer.model_error`): B frozen at the current solution, Levenberg–
    Marquardt from it, B recomputed at the new solution, until the solution moves by less
    than ``tol`` of the bounds (at most ``rounds`` times). Returns the solution, the likelihood
    with B frozen there (for the covariance), the outcome with the best start updated, flags."""
    n_round = 0
    while n_round < rounds:
        n_round += 1
        likelihood = Likelihood(chain, None, model_variance, "auto",
                                templates_at=params.theta(torch.as_tensor(u_best)).numpy())
        residual, residual_and_jacobian = _lm_functions(likelihood, params)
        out = levenberg_marquardt(residual_and_jacobian, residual, u_best[None],
                                  max_iter=max_iter)
        moved = float(np.max(np.abs(out.u[0] - u_best)))
        u_best = out.u[0]
        outcome = _with_best(outcome, best, out)
        if moved < tol:
            break
    likelihood = Likelihood(chain, None, model_variance, "auto",
                            templates_at=params.theta(torch.as_tensor(u_best)).numpy())
    outcome.chi2[best] = float(likelihood.chi2(params.theta(torch.as_tensor(u_best)).numpy()))
    return u_best, likelihood, outcome, {"model_error_rounds": n_round,
                                         "model_error_templates": likelihood.n_residuals
                                         - likelihood.n_pixels}


def _refit_correlated(chain, params, u_best, model_variance, max_iter):
    """Refit with a correlated-noise kernel estimated from the residuals (``noise="auto"``);
    the error templates are not combined with it (see :func:`use_templates`)."""
    theta = params.theta(torch.as_tensor(u_best)).numpy()
    with torch.no_grad():
        model, _ = chain.predict(torch.as_tensor(theta, dtype=DTYPE))
    good = [s.ivar.numpy() > 0 for s in chain.segments]
    kernel = CorrelatedNoise.from_residuals(
        [s.wavelength.numpy()[g] for s, g in zip(chain.segments, good, strict=True)],
        [(s.flux - m).numpy()[g] for s, m, g in zip(chain.segments, model, good, strict=True)],
        [s.sigma[g] for s, g in zip(chain.segments, good, strict=True)])
    if kernel is None:
        return u_best, Likelihood(chain, None, model_variance), {
            "noise": "independent (no residual correlation found)"}
    likelihood = Likelihood(chain, kernel, model_variance)
    residual, residual_and_jacobian = _lm_functions(likelihood, params)
    out = levenberg_marquardt(residual_and_jacobian, residual, u_best[None], max_iter=max_iter)
    return out.u[0], likelihood, {"noise": {"kernel": "matern32*wendland",
                                            "amplitude": kernel.amplitude,
                                            "length_scale_kms": kernel.length_scale,
                                            "taper": kernel.taper},
                                  "correlated_refit_converged": bool(out.converged[0])}


def _result(chain, likelihood, params, u_best, chi2_best, outcome, best, starts,
            scale_covariance, flags, source, elapsed) -> Result:
    theta_best = params.theta(torch.as_tensor(u_best)).numpy()
    cov, invertible = covariance(likelihood, params, u_best)
    n_parameters = params.n_free + chain.n_continuum
    dof = chain.n_pixels - n_parameters
    if scale_covariance and dof > 0:
        cov = cov * chi2_best / dof
    sig = np.sqrt(np.clip(np.diag(cov), 0, None))   # NaN stays NaN: no information
    values = {n: float(v) for n, v in zip(chain.parameter_names, theta_best, strict=True)}
    sigma = {n: float("nan") for n in chain.parameter_names}
    sigma.update({n: float(s) for n, s in zip(params.free, sig, strict=True)})
    # a broadening width at 0 is a physical answer (no rotation / macroturbulence), not a bound
    at_bound = [n for j, n in enumerate(params.free) if u_best[j] > 1 - 1e-3
                or (u_best[j] < 1e-3 and n not in WIDTHS)]
    final_free = params.unscale(outcome.u)
    flags = {"converged": bool(outcome.converged[best]) and invertible,
             "reason": outcome.reason[best], "iterations": int(outcome.iterations[best]),
             "covariance_invertible": invertible, "at_bound": at_bound,
             "no_information": [n for n, v in zip(params.free, sig, strict=True)
                                if not np.isfinite(v)],
             "n_starts": len(starts),
             "starts": [{"chi2": float(c), **{n: float(v) for n, v in zip(params.free, f,
                                                                          strict=True)}}
                        for c, f in zip(outcome.chi2, final_free, strict=True)],
             "covariance_scaled_by_chi2_reduced": bool(scale_covariance), **flags}
    provenance = {"model": type(chain.model).__name__, "source": source or "",
                  "resolution": None if chain.segments[0].resolution is None
                  else [float(np.median(np.atleast_1d(np.asarray(s.resolution))))
                        for s in chain.segments],
                  "continuum_degree": chain.continuum_degree,
                  "continuum_knot_spacing": chain.continuum_knot_spacing,
                  "rotation": chain.rotation,
                  "epsilon": chain.epsilon, "macroturbulence": chain.macroturbulence,
                  "rv_bounds": list(chain.rv_bounds),
                  "n_segments": len(chain.segments), "elapsed_s": elapsed,
                  "model_variance": likelihood.use_model_variance,
                  "model_error": "templates" if likelihood.use_templates else "none"}
    return Result(values=values, sigma=sigma, free=params.free, covariance=cov,
                  chi2=float(chi2_best), n_pixels=chain.n_pixels, n_parameters=n_parameters,
                  segments=_segments(chain, theta_best), flags=flags, provenance=provenance,
                  method="least_squares")


def sigma_floor(result: Result, floor: Mapping[str, float]) -> Result:
    """A copy of ``result`` whose σ are at least the systematic ``floor`` ``{name: σ}``
    (added in quadrature: σ_total = σ_stat ⊕ σ_sys), recorded in the flags: the floor as
    ``systematic_floor`` and the σ before it as ``sigma_stat`` (the JSON document then gives
    ``sigma_stat``, ``sigma_sys`` and ``sigma`` = σ_total per label)."""
    sigma = dict(result.sigma)
    applied = {}
    for n, f in floor.items():
        if n in sigma and math.isfinite(sigma[n]):
            sigma[n] = math.hypot(sigma[n], float(f))
            applied[n] = float(f)
    stat = {n: result.sigma[n] for n in applied}
    return Result(**{**result.__dict__, "sigma": sigma,
                     "flags": {**result.flags, "systematic_floor": dict(floor),
                               "sigma_stat": stat}})
