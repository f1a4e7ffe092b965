"""One star or two? Δχ², BIC and a Laplace evidence ratio; derived posteriors; corner plots.

BIC = χ² + k ln N with k every fitted number (labels, vsini, RVs and the profiled continuum
coefficients) and N the unmasked pixels; ΔBIC = BIC_single − BIC_mixture (positive favours two
components; > 10 is "very strong" on Kass & Raftery's scale).

Laplace evidence: with a uniform prior on the fit box, ``ln Z ≈ ln L_max + (k/2) ln 2π +
½ ln det Σ − Σ ln(high − low)`` over the k free parameters (Σ: their covariance at the best
fit). The data's normalisation and the continuum marginalisation are common to both models and
cancel in the ratio (up to the small difference of the continuum terms). It is a Gaussian
approximation: unreliable when a parameter sits on a bound (a filling factor at 0, a radius
ratio at 1) or the covariance is singular (a spot temperature undetermined when c → 0); the
comparison says so in ``laplace_reliable``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FitError
from ..models.mixture.model import BinaryModel, SpotModel
from ..result import Result


@dataclass(frozen=True)
class ModelComparison:
    """Single star vs two components on the same data (positive numbers favour two)."""

    delta_chi2: float
    delta_bic: float
    log_evidence_ratio: float
    laplace_reliable: bool
    n_pixels: int
    k_single: int
    k_mixture: int

    def to_dict(self) -> dict[str, float | int | bool]:
        return dict(self.__dict__)

    def verdict(self) -> str:
        if self.delta_bic > 10:
            return "two components (ΔBIC > 10)"
        if self.delta_bic < -10:
            return "one star (ΔBIC < -10)"
        return "undecided (|ΔBIC| <= 10)"


def bic(result: Result) -> float:
    """χ² + k ln N (k = ``result.n_parameters``, N = ``result.n_pixels``)."""
    return float(result.chi2 + result.n_parameters * math.log(result.n_pixels))


def laplace_log_evidence(result: Result, bounds: Mapping[str, tuple[float, float]]
                         ) -> tuple[float, bool]:
    """``ln Z`` up to the model-independent constant, and whether the approximation holds
    (covariance positive definite, no free parameter within 1 % of a bound or 2σ of it)."""
    cov = np.asarray(result.covariance, float)
    k = len(result.free)
    # a parameter without information (NaN variance, see infer.optimize.covariance) makes the
    # Gaussian approximation degenerate, as a singular covariance does
    usable = cov.shape == (k, k) and bool(np.all(np.isfinite(cov)))
    sign, logdet = np.linalg.slogdet(cov) if usable else (0.0, -np.inf)
    spans = np.array([bounds[n][1] - bounds[n][0] for n in result.free], float)
    reliable = bool(usable and sign > 0 and np.isfinite(logdet)
                    and np.all(np.linalg.eigvalsh(cov) > 0))
    for n in result.free:
        lo, hi = bounds[n]
        v, s = result.values[n], result.sigma[n]
        margin = min(v - lo, hi - v)
        if margin < 0.01 * (hi - lo) or (math.isfinite(s) and margin < 2 * s):
            reliable = False
    if not np.isfinite(logdet):
        logdet = -np.inf if sign <= 0 else logdet
    log_z = (-0.5 * result.chi2 + 0.5 * k * math.log(2 * math.pi) + 0.5 * logdet
             - float(np.sum(np.log(spans))))
    return float(log_z), reliable


def compare_models(single: Result, mixture: Result,
                   single_bounds: Mapping[str, tuple[float, float]],
                   mixture_bounds: Mapping[str, tuple[float, float]]) -> ModelComparison:
    """Compare a single-star fit with a two-component fit of the same pixels."""
    if single.n_pixels != mixture.n_pixels:
        raise FitError(f"the fits used different pixels ({single.n_pixels} vs "
                       f"{mixture.n_pixels}); compare fits of the same data and masks")
    z1, ok1 = laplace_log_evidence(single, single_bounds)
    z2, ok2 = laplace_log_evidence(mixture, mixture_bounds)
    return ModelComparison(delta_chi2=float(single.chi2 - mixture.chi2),
                           delta_bic=bic(single) - bic(mixture),
                           log_evidence_ratio=z2 - z1, laplace_reliable=ok1 and ok2,
                           n_pixels=mixture.n_pixels, k_single=single.n_parameters,
                           k_mixture=mixture.n_parameters)


def parameter_draws(result: Result, bounds: Mapping[str, tuple[float, float]],
                    n: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n, n_free)`` draws: the MCMC samples (thinned), or the Gaussian covariance
    approximation of a least-squares result clipped to the bounds."""
    rng = np.random.default_rng(seed)
    if result.samples is not None:
        s = np.asarray(result.samples)
        return s[rng.choice(len(s), size=min(n, len(s)), replace=False)]
    mean = np.array([result.values[k] for k in result.free])
    # a parameter without information (NaN variance) stays at its value
    cov = np.nan_to_num(np.asarray(result.covariance, float), nan=0.0)
    draws = rng.multivariate_normal(mean, cov, size=n, method="eigh")
    lo = np.array([bounds[k][0] for k in result.free])
    hi = np.array([bounds[k][1] for k in result.free])
    return np.clip(draws, lo, hi)


def derived(model: SpotModel | BinaryModel, result: Result,
            bounds: Mapping[str, tuple[float, float]], n: int = 2000, seed: int = 0,
            batch: int = 200) -> dict[str, np.ndarray]:
    """Draws ``(n,)`` of derived quantities: spots: ``spot_light_fraction`` (window mean of the
    fraction of continuum light from the spots); binary: ``light_fraction_b`` and ``rv_b``
    (``rv_b_e`` per epoch; km/s). Uses the MCMC samples or the covariance approximation."""
    draws = parameter_draws(result, bounds, n, seed)
    full = np.tile([result.values[k] for k in model.label_names], (len(draws), 1))
    for j, name in enumerate(result.free):
        if name in model.label_names:
            full[:, model.label_names.index(name)] = draws[:, j]
    if isinstance(model, SpotModel):
        # keep draws inside the model's domain (teff_spot < teff); they are all kept otherwise
        t, ts = full[:, 0], full[:, 1]
        full[:, 1] = np.minimum(ts, t - 1.0)
        fn, name = model.spot_light_fraction, "spot_light_fraction"
    else:
        fn, name = model.light_fraction_b, "light_fraction_b"
    fractions = np.concatenate([
        fn(torch.as_tensor(full[i:i + batch])).mean(-1).numpy()
        for i in range(0, len(full), batch)])
    out = {name: fractions}
    if isinstance(model, BinaryModel):
        values = dict(zip(result.free, draws.T, strict=True))
        for e, dv in enumerate(model.rv_names):
            rv = "rv" if model.n_epochs == 1 else f"rv_{e}"
            suffix = "" if model.n_epochs == 1 else f"_{e}"
            out[f"rv_b{suffix}"] = (values.get(rv, result.values.get(rv, 0.0))
                                    + values.get(dv, result.values.get(dv, 0.0)))
    return out


def corner_plot(model: SpotModel | BinaryModel, result: Result,
                bounds: Mapping[str, tuple[float, float]], path=None,
                truths: Mapping[str, float] | None = None, names=None, n: int = 4000,
                seed: int = 0):
    """Corner plot of ``names`` (default: every free parameter) plus the derived light
    fraction; MCMC samples, or the covariance approximation (said in the title)."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import corner

    names = list(result.free) if names is None else list(names)
    draws = parameter_draws(result, bounds, n, seed)
    extra = derived(model, result, bounds, n, seed)
    light = next(k for k in extra if "light_fraction" in k)
    columns = [draws[:, result.free.index(k)] for k in names] + [extra[light]]
    data = np.column_stack(columns)
    truth_list = None if truths is None else [truths.get(k) for k in [*names, light]]
    fig = corner.corner(data, labels=[*names, light], truths=truth_list,
                        quantiles=[0.16, 0.5, 0.84], show_titles=True, title_fmt=".3g")
    fig.suptitle("posterior samples" if result.samples is not None
                 else "Gaussian approximation (covariance)", fontsize=9)
    if path is not None:
        from .._files import atomic_path

        with atomic_path(path, suffix=Path(path).suffix) as tmp:
            fig.savefig(tmp, dpi=90)
    return fig


__all__ = ["ModelComparison", "bic", "compare_models", "corner_plot", "derived",
           "laplace_log_evidence", "parameter_draws"]
