"""A deep ensemble kept and used as one network (Lakshminarayanan, Pritzel & Blundell 2017).

Several networks trained by one recipe with different seeds disagree on a real spectrum by about
as much as each misses it; their equal-weight mixture is both closer and more honest (the StarNet
ensemble of the study's comparison is one). :class:`DeepEnsemble` holds the members and answers
like a single network: for an image batch, in the members' common scaled labels,

    μ = mean_m μ_m,   Σ = mean_m D_m Σ_m D_m + cov_m(μ_m),   returned as (μ, chol Σ),

with D_m = diag(temperature of member m) (each member's own σ calibration on its validation
split) and cov_m the sample covariance of the members' means (denominator M − 1, as
:func:`photosphere.nn.evaluate.predict_ensemble`). A checkpoint of kind ``"ensemble"`` stores all
members' weights and temperatures in one file (:func:`combine`), so every command that takes a
model (``nn predict``, ``nn calibrate-stars``, ``benchmark --engine nn``) takes an ensemble.
Members are never trained as an ensemble: ``photosphere nn ensemble A.pt B.pt ... --out E.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .attention import AttentionConfig, AttentionNet
from .losses import covariance_from_tril, gaussian_nll
from .resnet import ResNet, ResNetConfig

MEMBERS = {"resnet": (ResNet, ResNetConfig), "attention": (AttentionNet, AttentionConfig)}
#: data entries measured on one network (σ on real stars, the mismatch limit) that do not hold
#: for the mixture: dropped from the ensemble's data, to be measured again with
#: ``nn calibrate-stars``
PER_NETWORK = ("systematic_floor", "systematic_floor_snr", "real_star_calibration",
               "mismatch_limit")


@dataclass(frozen=True)
class EnsembleConfig:
    """member_kind: ``"resnet"`` or ``"attention"``; member: the members' common config (a
    plain dict); n_members ≥ 2."""

    member_kind: str
    member: dict[str, Any] = field(default_factory=dict)
    n_members: int = 2

    def __post_init__(self) -> None:
        if self.member_kind not in MEMBERS:
            raise ValueError(f"member_kind {self.member_kind!r} is not one of {tuple(MEMBERS)}")
        if not (isinstance(self.n_members, int) and 2 <= self.n_members <= 64):
            raise ValueError(f"n_members={self.n_members!r} must be a whole number in 2..64")

    @property
    def member_config(self):
        return MEMBERS[self.member_kind][1](**self.member)

    # what the code around a network reads from its config: the members'
    n_orders = property(lambda self: self.member_config.n_orders)
    n_pixels = property(lambda self: self.member_config.n_pixels)
    n_labels = property(lambda self: self.member_config.n_labels)
    covariance = property(lambda self: self.member_config.covariance)

    def to_dict(self) -> dict[str, Any]:
        return {"member_kind": self.member_kind, "member": dict(self.member),
                "n_members": self.n_members}


class DeepEnsemble(nn.Module):
    """The members' equal-weight Gaussian mixture as one network (module docstring); forward
    returns (μ (B, k), chol Σ (B, k, k), NLL or None) like a member."""

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config
        net_cls = MEMBERS[config.member_kind][0]
        self.members = nn.ModuleList(net_cls(config.member_config)
                                     for _ in range(config.n_members))
        self.register_buffer("temperatures", torch.ones(config.n_members, config.n_labels))

    def uncalibrated(self) -> DeepEnsemble:
        """The same members (weights shared, not copied) without their σ temperatures: the
        mixture of their raw Gaussians, what ``nn eval`` reports as raw σ."""
        raw = DeepEnsemble.__new__(DeepEnsemble)
        nn.Module.__init__(raw)
        raw.config = self.config
        raw.members = self.members
        raw.register_buffer("temperatures", torch.ones_like(self.temperatures))
        return raw.train(self.training)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        # x: (B, 1, n_orders, n_pixels)
        mus, covs = [], []
        for member, t in zip(self.members, self.temperatures, strict=True):
            mu, tril = member(x)[:2]
            mus.append(mu)
            covs.append(covariance_from_tril(tril) * t.unsqueeze(-1) * t.unsqueeze(-2))
        mu_m = torch.stack(mus)  # (M, B, k)
        dev = mu_m - mu_m.mean(0)
        cov = torch.stack(covs).mean(0) + torch.einsum("mbi,mbj->bij", dev, dev) / (
            len(mus) - 1)
        tril = torch.linalg.cholesky(cov)
        mu = mu_m.mean(0)
        loss = None if target is None else gaussian_nll(mu, tril, target)
        return mu, tril, loss


def combine(checkpoints: list) -> tuple[DeepEnsemble, dict[str, Any]]:
    """The ensemble of loaded checkpoints (:class:`~photosphere.nn.checkpoint.Checkpoint`) and
    the data dict to save it with; ModelError unless all were trained on one setup (kind,
    network config, label scaling, order layout, data configuration but the seed) and none has
    a denoising autoencoder in front."""
    from .dae import DenoisedEstimator

    if len(checkpoints) < 2:
        raise ModelError(f"an ensemble needs at least 2 models, got {len(checkpoints)}")
    first = checkpoints[0]
    for ck in checkpoints:
        if ck.kind not in MEMBERS or isinstance(ck.model, DenoisedEstimator):
            what = "a model with a DAE" if ck.kind in MEMBERS else f"a model of kind {ck.kind}"
            raise ModelError(f"{ck.path}: {what} cannot be an ensemble member; combine "
                             f"{' or '.join(MEMBERS)} label estimators")
    for ck in checkpoints[1:]:
        different = _difference(first, ck)
        if different:
            raise ModelError(f"{ck.path} and {first.path} differ in {different}; an ensemble "
                             "combines networks trained by one recipe (only the seed may "
                             "differ)")
    config = EnsembleConfig(first.kind, first.model.config.to_dict(), len(checkpoints))
    ensemble = DeepEnsemble(config)
    k = config.n_labels
    for i, ck in enumerate(checkpoints):
        ensemble.members[i].load_state_dict(ck.model.state_dict())
        if ck.temperature is not None:
            ensemble.temperatures[i] = ck.temperature.float().reshape(k)
    data = {key: v for key, v in first.data.items() if key not in PER_NETWORK}
    data["ensemble"] = [_member_record(ck) for ck in checkpoints]
    return ensemble.eval(), data


def _member_record(ck) -> dict[str, Any]:
    """File name, training seed and last validation NLL of a member (what was combined)."""
    training = ck.training or {}
    history = training.get("history") or [{}]
    return {"file": None if ck.path is None else ck.path.name,
            "seed": (training.get("config") or {}).get("seed"),
            "val_nll": history[-1].get("val_loss")}


def _difference(a, b) -> str:
    """What differs between two checkpoints' setups ('' when nothing but the seed)."""
    if a.kind != b.kind or a.model.config.to_dict() != b.model.config.to_dict():
        return "network kind or size"
    sa, sb = a.label_scaling, b.label_scaling
    if sa.names != sb.names or not (torch.equal(sa.offset, sb.offset)
                                    and torch.equal(sa.scale, sb.scale)):
        return "labels or label scaling"
    ignore = {"seed", *PER_NETWORK}
    keys = (set(a.data) | set(b.data)) - ignore
    for key in sorted(keys):
        if not _same(a.data.get(key), b.data.get(key)):
            return f"training data setting {key!r}"
    return ""


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                and x.shape == y.shape and bool(torch.equal(x, y)))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x), np.asarray(y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    return x == y
