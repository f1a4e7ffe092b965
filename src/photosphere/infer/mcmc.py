"""Posterior sampling with emcee (or any sampler driving :class:`LogProbability`).

:func:`sample` starts from a least-squares fit (:func:`~photosphere.infer.optimize.fit`), puts the
walkers in a small Gaussian ball drawn from its covariance, runs emcee's affine-invariant
ensemble sampler with all walkers of a half-step evaluated in one batched call, and reports the
posterior median and 16-84 % half-width per parameter, the sample covariance, the acceptance
fraction, the integrated autocorrelation time τ and the effective sample size
``n_walkers × n_kept_steps / τ``. ``flags["chain_too_short"]`` is set when the kept chain is
shorter than 50 τ (emcee's rule of thumb); the numbers are then indicative only.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import FitError, OutOfGridError
from ..model import ForwardModel
from ..ops.macroturbulence import doyle_macroturbulence
from ..result import Result
from .chain import DTYPE, ObservationChain
from .likelihood import CorrelatedNoise, Likelihood
from .optimize import _segments, build_chain, fit
from .parameters import Parameters
from .priors import Prior, Uniform, log_prior_sum
from .settings import ObservationSettings


class LogProbability:
    """``log p(θ | data)`` up to a constant, a plain function of the free parameters.

    Call with ``theta (n_free,)`` -> float or ``(n, n_free)`` -> ``(n,)``; physical units in
    the order of ``names``. Outside the bounds (e.g. a walker leaving the grid) it returns -inf
    without calling the model; a non-finite likelihood also gives -inf, never NaN.
    """

    def __init__(self, likelihood: Likelihood, params: Parameters,
                 priors: Sequence[Prior] = ()) -> None:
        self.likelihood = likelihood
        self.params = params
        self.priors = list(priors)
        self.names = params.free
        for prior in self.priors:
            unknown = [n for n in prior.names if n not in params.names]
            if unknown:
                raise FitError(f"{type(prior).__name__} prior on {unknown}: the fit has no such "
                               f"label(s); its labels are {list(params.names)}")
        bounds = {n: (float(lo), float(hi)) for n, lo, hi in
                  zip(params.free, params.lower, params.upper, strict=True)}
        if not any(isinstance(p, Uniform) for p in self.priors):
            self.priors.insert(0, Uniform(bounds))
        self.n_calls = 0

    def __call__(self, theta) -> np.ndarray | float:
        theta = np.asarray(theta, float)
        single = theta.ndim == 1
        free = np.atleast_2d(theta)
        self.n_calls += len(free)
        out = np.full(len(free), -np.inf)
        inside = self.params.in_bounds(free) & np.all(np.isfinite(free), axis=-1)
        if np.any(inside):
            full = self.params.theta_from_free(free[inside])
            values = dict(zip(self.params.names, full.T, strict=True))
            lp = log_prior_sum(self.priors, values)
            ll = self._log_likelihood(full)
            total = lp + ll
            out[inside] = np.where(np.isfinite(total), total, -np.inf)
        return float(out[0]) if single else out


    def _log_likelihood(self, full: np.ndarray) -> np.ndarray:
        """Batched log-likelihood; rows the model refuses (OutOfGridError inside the bounds, a
        hole in a grid) get -inf, one by one, without failing the batch."""
        try:
            return self.likelihood.log_likelihood(full)
        except OutOfGridError:
            if len(full) == 1:
                return np.array([-np.inf])
            return np.concatenate([self._log_likelihood(full[i:i + 1])
                                   for i in range(len(full))])


def _autocorrelation(sampler, discard: int) -> tuple[np.ndarray, bool]:
    import emcee

    try:
        tau = np.asarray(sampler.get_autocorr_time(discard=discard, tol=0), float)
    except emcee.autocorr.AutocorrError:  # pragma: no cover - tol=0 never raises
        tau = np.full(sampler.ndim, np.nan)
    n_kept = sampler.iteration - discard
    too_short = bool(not np.all(np.isfinite(tau)) or n_kept < 50 * np.nanmax(tau))
    return tau, too_short


class _Stop:
    requested = False


@contextlib.contextmanager
def _interruptible() -> Iterator[_Stop]:
    """A first Ctrl-C asks the sampling loop to stop after the current step (a clean
    KeyboardInterrupt from our code, not from inside emcee); a second one interrupts at once.
    Only in the main thread, where Python delivers signals."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _at_bound(median: np.ndarray, params: Parameters) -> list[str]:
    """Free parameters whose posterior median lies within 1 % of the span of a bound (the
    posterior piles up against the edge of the model); a broadening width at 0 is physical."""
    u = (np.asarray(median, float) - params.lower) / params.span
    return [n for j, n in enumerate(params.free)
            if u[j] > 0.99 or (u[j] < 0.01 and n not in ("vsini", "vmac"))]


def _check_setup(params: Parameters, priors: Sequence[Prior], n_walkers: int) -> None:
    """Walkers and priors that fit the parameters, checked before any slow work."""
    if n_walkers < 2 * params.n_free:
        raise FitError(f"n_walkers={n_walkers} is too few for {params.n_free} free parameters; "
                       f"emcee needs at least {2 * params.n_free} (--walkers "
                       f"{2 * params.n_free} or more)")
    for prior in priors:
        unknown = [n for n in prior.names if n not in params.names]
        if unknown:
            raise FitError(f"{type(prior).__name__} prior on {unknown}: the fit has no such "
                           f"label(s); its labels are {list(params.names)}")


def sample(model: ForwardModel, observation, *, settings: ObservationSettings | None = None,
           n_walkers: int = 32, n_steps: int = 2000, burn: int | None = None,
           priors: Sequence[Prior] = (), initial: Mapping[str, float] | Result | None = None,
           fixed: Mapping[str, float] | None = None, noise: CorrelatedNoise | None = None,
           model_variance: bool = True, model_error: str = "auto", seed: int | None = 0,
           progress: bool = True, pool=None, chain: ObservationChain | None = None,
           source: str | None = None, **observation_settings: Any) -> Result:
    """Posterior samples of the labels.

    n_walkers, n_steps, burn: emcee settings (burn defaults to n_steps // 4, discarded).
    priors: extra priors (:class:`~photosphere.infer.priors.Gaussian`,
    :class:`~photosphere.infer.priors.IsochronePrior`, ...); uniform within the bounds always.
    initial: a least-squares :class:`Result` to start from, or starting values (a fit is run).
    settings (or its fields as keywords) and the other arguments as in
    :func:`~photosphere.infer.optimize.fit` (``model_error="auto"``: the
    log-likelihood marginalises the model's error templates, Woodbury log-determinant included,
    with their covariance frozen at the least-squares solution); ``macroturbulence="auto"``
    takes ζ from the least-squares start (fitted with ``"auto"`` when ``initial`` is not a
    Result, else from the Result's own ζ or Doyle et al. 2014 at its Teff and log g).
    Returns a :class:`Result` with ``samples (n_walkers × kept steps, n_free)`` and
    ``flags``: acceptance_fraction, autocorr_time, effective_sample_size, chain_too_short.
    """
    import emcee

    t0 = time.perf_counter()
    if n_walkers < 2 or n_steps < 2:
        raise FitError(f"n_walkers={n_walkers} and n_steps={n_steps} must both be >= 2")
    burn = n_steps // 4 if burn is None else int(burn)
    if not 0 <= burn < n_steps:
        raise FitError(f"burn={burn} must be in 0..n_steps-1 ({n_steps - 1})")
    settings = ObservationSettings.of(settings, **observation_settings)
    chain, start = _least_squares_start(model, observation, initial, fixed, chain, settings,
                                        dict(noise=noise, model_variance=model_variance,
                                             model_error=model_error), priors, n_walkers)
    params = Parameters(chain.parameter_names, chain.bounds, fixed)
    _check_setup(params, priors, n_walkers)
    # the model-error covariance is frozen at the least-squares solution, as in fit
    likelihood = Likelihood(chain, noise, model_variance, model_error,
                            templates_at=chain.theta_from(start.values))
    log_prob = LogProbability(likelihood, params, priors)

    walkers = _initial_walkers(start, params, n_walkers, np.random.default_rng(seed))
    sampler = emcee.EnsembleSampler(n_walkers, params.n_free, log_prob, vectorize=True,
                                    pool=pool)
    if seed is not None:
        sampler.random_state = np.random.RandomState(seed).get_state()
    with torch.no_grad(), _interruptible() as stop, contextlib.redirect_stdout(sys.stderr):
        # emcee prints the walkers' parameters on stdout when the log-probability raises;
        # stdout must stay one JSON document
        for _ in sampler.sample(walkers, iterations=n_steps, progress=progress):
            if stop.requested:
                break
    if stop.requested:
        raise KeyboardInterrupt

    return _posterior_result(sampler, burn, chain, params, likelihood, log_prob, start,
                             source, time.perf_counter() - t0)


def _least_squares_start(model, observation, initial, fixed, chain,
                         settings: ObservationSettings, fit_kw: dict, priors: Sequence[Prior],
                         n_walkers: int) -> tuple[ObservationChain, Result]:
    """The chain and the least-squares Result the walkers start from (fitted here unless
    ``initial`` is one); ``macroturbulence="auto"`` is resolved to a fixed ζ first. The walkers
    and priors are checked before the least-squares start, not after it."""
    if settings.macroturbulence == "auto":
        if not isinstance(initial, Result):
            probe = chain or build_chain(model, observation,
                                         settings.replace(macroturbulence=None),
                                         initial=initial, fixed=fixed)
            _check_setup(Parameters(probe.parameter_names, probe.bounds, fixed), priors,
                         n_walkers)
            initial = fit(model, observation, settings=settings, initial=initial, fixed=fixed,
                          **fit_kw)
        zeta = initial.provenance.get("macroturbulence")
        if zeta is None:
            zeta = doyle_macroturbulence(initial.values["teff"], initial.values["logg"])
        settings = settings.replace(macroturbulence=zeta)
    if isinstance(initial, Result):
        if chain is None:
            chain = build_chain(model, observation, settings, initial=initial.values,
                                fixed=fixed)
        return chain, initial
    if chain is None:
        chain = build_chain(model, observation, settings, initial=initial, fixed=fixed)
    _check_setup(Parameters(chain.parameter_names, chain.bounds, fixed), priors, n_walkers)
    return chain, fit(model, observation, initial=initial, fixed=fixed, chain=chain, **fit_kw)


def _initial_walkers(start: Result, params: Parameters, n_walkers: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``(n_walkers, n_free)`` starting points: a tight Gaussian ball (1 % of the least-squares
    covariance) around ``start``, inside the bounds."""
    center = np.array([start.values[n] for n in params.free])
    center = np.clip(center, params.lower + 1e-6 * params.span, params.upper - 1e-6 * params.span)
    cov = np.asarray(start.covariance, float)
    if cov.shape != (params.n_free, params.n_free) or not np.all(np.isfinite(cov)):
        cov = np.diag((1e-3 * params.span) ** 2)
    walkers = []
    while len(walkers) < n_walkers:
        draw = rng.multivariate_normal(center, 0.01 * cov + np.diag((1e-6 * params.span) ** 2),
                                       method="eigh")
        if params.in_bounds(draw):
            walkers.append(draw)
    return np.array(walkers)


def _posterior_result(sampler, burn: int, chain: ObservationChain, params: Parameters,
                      likelihood: Likelihood, log_prob: LogProbability, start: Result,
                      source: str | None, elapsed: float) -> Result:
    """The Result of a finished emcee run: median and 68 % interval, the draws, diagnostics."""
    import emcee

    n_walkers, n_steps = sampler.nwalkers, sampler.iteration
    samples = sampler.get_chain(discard=burn, flat=True)
    log_probs = sampler.get_log_prob(discard=burn, flat=True)
    tau, too_short = _autocorrelation(sampler, burn)
    n_kept = n_steps - burn
    ess = n_walkers * n_kept / tau
    median = np.median(samples, axis=0)
    lo, hi = np.percentile(samples, [15.865, 84.135], axis=0)
    values = {n: float(v) for n, v in zip(chain.parameter_names,
                                          params.theta_from_free(median), strict=True)}
    sigma = {n: float("nan") for n in chain.parameter_names}
    sigma.update({n: float(s) for n, s in zip(params.free, 0.5 * (hi - lo), strict=True)})
    best = params.theta_from_free(samples[int(np.argmax(log_probs))])
    chi2 = float(likelihood.chi2(best))
    flags = {"converged": bool(not too_short and np.all(sampler.acceptance_fraction > 0.05)),
             "acceptance_fraction": float(np.mean(sampler.acceptance_fraction)),
             "autocorr_time": {n: float(t) for n, t in zip(params.free, tau, strict=True)},
             "effective_sample_size": {n: float(e) for n, e in zip(params.free, ess,
                                                                   strict=True)},
             "chain_too_short": too_short, "n_walkers": n_walkers, "n_steps": n_steps,
             "burn": burn, "at_bound": _at_bound(median, params),
             "least_squares": start.to_dict()["labels"],
             "max_posterior": {n: float(v) for n, v in zip(chain.parameter_names, best,
                                                           strict=True)},
             "priors": [type(p).__name__ for p in log_prob.priors]}
    provenance = {**start.provenance, "source": source or start.provenance.get("source", ""),
                  "sampler": f"emcee {emcee.__version__}", "elapsed_s": elapsed}
    return Result(values=values, sigma=sigma, free=params.free,
                  covariance=np.atleast_2d(np.cov(samples, rowvar=False)), chi2=chi2,
                  n_pixels=chain.n_pixels, n_parameters=params.n_free + chain.n_continuum,
                  segments=_segments(chain, torch.as_tensor(best, dtype=DTYPE).numpy()),
                  flags=flags, provenance=provenance, samples=samples, method="mcmc")
