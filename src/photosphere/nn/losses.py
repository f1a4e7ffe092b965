"""Gaussian output heads and the Gaussian negative log-likelihood (Hüttel & Clemmensen eq. 2).

Every network predicts p(y | x) = N(μ(x), Σ(x)) over ``n_labels`` *scaled* labels. Σ is carried as
its lower Cholesky factor ``L`` (Σ = L Lᵀ) for both parametrisations:

* ``"diagonal"``: the head emits ``2 k`` numbers, μ and k raw scales;
  L = diag(softplus(raw) + floor).
* ``"full"``: the head emits ``k + k (k + 1) / 2`` numbers, μ and the lower triangle of L, whose
  diagonal goes through softplus (+ floor) so that L is a valid Cholesky factor (Σ pos. definite).

The NLL includes the constant ``k/2 log 2π``, so it equals ``-MultivariateNormal(μ, scale_tril=L)
.log_prob(y)`` exactly (a unit test checks this).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

Covariance = Literal["diagonal", "full"]
COVARIANCES = ("diagonal", "full")
SIGMA_FLOOR = 1e-3  # smallest σ in scaled label units; keeps the NLL bounded on easy samples


def check_covariance(covariance: str) -> Covariance:
    if covariance not in COVARIANCES:
        raise ModelError(f"covariance={covariance!r} is not known; use 'diagonal' or 'full'")
    return covariance  # type: ignore[return-value]


def head_size(n_labels: int, covariance: Covariance) -> int:
    """Number of raw outputs a Gaussian head needs for ``n_labels`` labels."""
    check_covariance(covariance)
    if covariance == "diagonal":
        return 2 * n_labels
    return n_labels + n_labels * (n_labels + 1) // 2


def raw_to_gaussian(raw: torch.Tensor, n_labels: int,
                    covariance: Covariance) -> tuple[torch.Tensor, torch.Tensor]:
    """Split raw head outputs (..., head_size) into μ (..., k) and Cholesky factor L (..., k, k)."""
    k = n_labels
    if raw.shape[-1] != head_size(k, covariance):
        raise ModelError(f"head output has {raw.shape[-1]} values; expected "
                         f"{head_size(k, covariance)} for {k} labels with {covariance} covariance")
    mu = raw[..., :k]
    if covariance == "diagonal":
        sigma = F.softplus(raw[..., k:]) + SIGMA_FLOOR
        return mu, torch.diag_embed(sigma)
    rows, cols = torch.tril_indices(k, k, device=raw.device)
    tril = raw.new_zeros(*raw.shape[:-1], k, k)
    tril[..., rows, cols] = raw[..., k:]
    diag = F.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + SIGMA_FLOOR
    off = torch.tril(tril, diagonal=-1)
    return mu, off + torch.diag_embed(diag)


class GaussianHead(nn.Module):
    """A linear layer from ``in_features`` to (μ, L): the output layer of every estimator."""

    def __init__(self, in_features: int, n_labels: int, covariance: Covariance):
        super().__init__()
        self.n_labels = n_labels
        self.covariance = check_covariance(covariance)
        self.linear = nn.Linear(in_features, head_size(n_labels, covariance))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # features: (B, in_features) -> mu (B, k), scale_tril (B, k, k)
        return raw_to_gaussian(self.linear(features), self.n_labels, self.covariance)


def gaussian_nll(mu: torch.Tensor, scale_tril: torch.Tensor, target: torch.Tensor,
                 reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """-log N(target | μ, L Lᵀ) per sample (``reduction="none"``, shape (B,)) or its batch mean.

    mu, target: (B, k) scaled labels; scale_tril: (B, k, k) lower-triangular, positive diagonal.
    """
    if mu.shape != target.shape:
        raise ModelError(f"gaussian_nll: mu shape {tuple(mu.shape)} != target shape "
                         f"{tuple(target.shape)}")
    k = mu.shape[-1]
    residual = (target - mu).unsqueeze(-1)  # (B, k, 1)
    whitened = torch.linalg.solve_triangular(scale_tril, residual, upper=False).squeeze(-1)
    log_det_half = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)
    nll = 0.5 * whitened.pow(2).sum(-1) + log_det_half + 0.5 * k * math.log(2 * math.pi)
    return nll.mean() if reduction == "mean" else nll


def covariance_from_tril(scale_tril: torch.Tensor) -> torch.Tensor:
    """Σ = L Lᵀ, (..., k, k)."""
    return scale_tril @ scale_tril.transpose(-1, -2)


def average_gaussians(mus: list[torch.Tensor],
                      trils: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average several Gaussian outputs: μ = mean μ_n, Σ = mean Σ_n; returns (μ, chol Σ).

    The attention network aggregates its blocks this way (the study averages the block outputs).
    """
    mu = torch.stack(mus).mean(0)
    cov = torch.stack([covariance_from_tril(t) for t in trils]).mean(0)
    return mu, torch.linalg.cholesky(cov)
