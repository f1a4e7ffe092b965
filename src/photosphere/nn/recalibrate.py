"""Mean recalibration: undo the networks' shrinkage of μ towards the middle of the label box.

The NLL-trained networks come out *compressed*: regressing the true labels on the predicted μ
gives slopes of 1.04-1.11 for every label, on the validation and on the training stars alike
(an under-fitted mean, not a train/test shift), so μ is too close to the box centre at both
ends. A calibrated conditional-mean estimator has E[y | μ] = μ. :func:`fit_mean_map` fits
y ≈ a + b μ per label on the validation stars (least squares, scaled label units);
:func:`fold_mean_map` writes the map into the μ rows of every Gaussian head of the network
(μ = W h + c → b W h + a + b c), so the recalibrated model is an ordinary network that needs no
extra step at prediction time. The σ temperature is refitted after the map
(:func:`recalibrate`), because the residuals it scales have changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .checkpoint import LabelScaling
from .evaluate import Predictions, fit_temperature, predict_split
from .losses import GaussianHead


@dataclass(frozen=True)
class MeanMap:
    """μ_scaled → intercept + slope · μ_scaled per label (scaled label units, shape (k,))."""

    intercept: torch.Tensor
    slope: torch.Tensor

    def to_dict(self) -> dict[str, list[float]]:
        return {"intercept": self.intercept.tolist(), "slope": self.slope.tolist()}


def fit_mean_map(pred: Predictions, scaling: LabelScaling) -> MeanMap:
    """Least-squares y ≈ a + b μ per label over labelled predictions (physical units in ``pred``),
    returned in scaled units. Needs at least 3 stars with spread-out μ."""
    mu = np.asarray(scaling.scale_labels(torch.as_tensor(pred.mu, dtype=torch.float32)),
                    dtype=float)
    y = np.asarray(scaling.scale_labels(torch.as_tensor(pred.labels, dtype=torch.float32)),
                   dtype=float)
    if len(mu) < 3 or np.any(np.ptp(mu, axis=0) <= 0):
        raise ModelError(f"fit_mean_map needs >= 3 stars with distinct predictions per label, got "
                         f"{len(mu)}; use a larger validation split (--n-val)")
    coef = [np.polyfit(mu[:, k], y[:, k], 1) for k in range(mu.shape[1])]  # (slope, intercept)
    return MeanMap(torch.tensor([c[1] for c in coef], dtype=torch.float32),
                   torch.tensor([c[0] for c in coef], dtype=torch.float32))


@torch.no_grad()
def fold_mean_map(model: nn.Module, mean_map: MeanMap) -> nn.Module:
    """Write ``mean_map`` into the μ rows of every :class:`GaussianHead` of ``model`` (in place;
    returns it). The attention network averages its heads' μ, so folding into each head maps the
    average the same way."""
    heads = [m for m in model.modules() if isinstance(m, GaussianHead)]
    if not heads:
        raise ModelError(f"{type(model).__name__} has no Gaussian head to recalibrate")
    for head in heads:
        k = head.n_labels
        if mean_map.slope.shape != (k,):
            raise ModelError(f"mean map for {tuple(mean_map.slope.shape)} labels, head has {k}")
        w, c = head.linear.weight, head.linear.bias
        w[:k] *= mean_map.slope.unsqueeze(-1)
        c[:k] = mean_map.intercept + mean_map.slope * c[:k]
    return model


@dataclass
class Recalibrated:
    model: nn.Module  # a copy of the network with the map folded in (eval mode)
    mean_map: MeanMap
    temperature: torch.Tensor  # (k,) σ multipliers refitted after the map
    before: Predictions  # the original network's raw predictions on the fitting stars
    after: Predictions  # the recalibrated network's, σ temperature-scaled


def recalibrate(model: nn.Module, scaling: LabelScaling, dataset, batch_size: int = 64,
                temperature_method: str = "rms") -> Recalibrated:
    """Fit the mean map and then the σ temperature (:func:`~photosphere.nn.evaluate.
    fit_temperature` with ``temperature_method``) on ``dataset`` (the validation split) and
    return a recalibrated copy of ``model``; ``model`` itself is left unchanged."""
    before = predict_split(model, scaling, dataset, batch_size)
    mean_map = fit_mean_map(before, scaling)
    tuned = fold_mean_map(copy.deepcopy(model), mean_map).eval()
    raw = predict_split(tuned, scaling, dataset, batch_size)
    temperature = fit_temperature(raw.residual_z, temperature_method)
    return Recalibrated(tuned, mean_map, temperature, before, raw.scaled(temperature))
