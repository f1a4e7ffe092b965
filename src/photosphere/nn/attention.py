"""Soft-attention network on 2D échelle images (Hüttel & Clemmensen §3.2; Jetley et al. 2018;
Oktay et al. 2018).

A backbone of 11 (1×k) convolutions in four stages (3 + 3 + 3 + 2). The outputs of the first three
stages are the intermediate feature maps x_n; each feeds an attention block and is then 2×2
max-pooled before the next stage (so 8 orders → 4 → 2 → 1 and the later blocks see coarser, more
local features). The last stage, averaged over all positions, is the global feature g. Each
attention block computes

    α_n = softmax_{positions}( ψᵀ relu(W_x x_n + W_g g + b_xg) + b_ψ )

(W_x, W_g, ψ: 1×1 convolutions), so α_n sums to one over the spatial positions; the attended
feature Σ_positions α_n · x_n goes through its own Gaussian head. The network output averages the
block outputs: μ = mean μ_n, Σ = mean Σ_n.

``forward(x, target=None, return_attention=False) -> (mu, scale_tril, loss[, maps])``; ``maps`` is
a list of (B, H_n, W_n) attention maps, ``attention_maps(x)`` upsamples them to the input grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .losses import Covariance, GaussianHead, average_gaussians, check_covariance, gaussian_nll

N_CONV_PER_STAGE = (3, 3, 3, 2)  # 11 convolution layers


@dataclass(frozen=True)
class AttentionConfig:
    """Hyper-parameters; the default is the full (GPU) size, ``cpu()`` a small one."""

    n_orders: int = 8
    n_pixels: int = 4096
    n_labels: int = 4
    covariance: Covariance = "diagonal"
    kernel: int = 7
    stem_stride: int = 2  # pixel-axis stride of the first convolution
    channels: tuple[int, int, int, int] = (32, 64, 128, 128)  # per backbone stage
    intermediate: int = 64  # F_int of the attention blocks
    dropout: float = 0.1  # on the attended features, before each head

    def __post_init__(self) -> None:
        check_covariance(self.covariance)
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != len(N_CONV_PER_STAGE):
            raise ValueError(f"channels needs {len(N_CONV_PER_STAGE)} entries (one per stage), "
                             f"got {self.channels}")

    @classmethod
    def cpu(cls, **overrides) -> AttentionConfig:
        base = dict(stem_stride=4, channels=(8, 16, 16, 32), intermediate=16)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, (1, kernel), stride=(1, stride), padding=(0, kernel // 2),
                  bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU())


class AttentionBlock(nn.Module):
    """Attention gate: map α over the positions of x_n given the global feature g."""

    def __init__(self, f_x: int, f_g: int, f_int: int):
        super().__init__()
        self.w_x = nn.Conv2d(f_x, f_int, 1, bias=False)
        self.w_g = nn.Conv2d(f_g, f_int, 1, bias=True)  # its bias is b_xg
        self.psi = nn.Conv2d(f_int, 1, 1, bias=True)  # its bias is b_ψ

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, F_x, H, W), g: (B, F_g, 1, 1) -> attended (B, F_x), alpha (B, H, W)
        b, _, h, w = x.shape
        q = self.psi(F.relu(self.w_x(x) + self.w_g(g)))  # (B, 1, H, W)
        alpha = torch.softmax(q.view(b, h * w), dim=-1).view(b, 1, h, w)
        attended = (alpha * x).sum(dim=(2, 3))  # (B, F_x)
        return attended, alpha.view(b, h, w)


class AttentionNet(nn.Module):
    def __init__(self, config: AttentionConfig):
        super().__init__()
        self.config = config
        c = config
        stages = []
        c_in = 1
        for i, (n_conv, c_out) in enumerate(zip(N_CONV_PER_STAGE, c.channels, strict=True)):
            layers = [_conv(c_in, c_out, c.kernel, c.stem_stride if i == 0 else 1)]
            layers += [_conv(c_out, c_out, c.kernel) for _ in range(n_conv - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        f_g = c.channels[-1]
        self.attention = nn.ModuleList(
            [AttentionBlock(f_x, f_g, c.intermediate) for f_x in c.channels[:3]])
        self.dropout = nn.Dropout(c.dropout)
        self.heads = nn.ModuleList(
            [GaussianHead(f_x, c.n_labels, c.covariance) for f_x in c.channels[:3]])

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None,
                return_attention: bool = False):
        # x: (B, 1, n_orders, n_pixels)
        features = []
        h = x
        for i, stage in enumerate(self.stages):
            h = stage(h)  # stage n: (B, C_n, n_orders / 2^n, n_pixels / stem_stride / 2^n)
            if i < 3:
                features.append(h)  # x_n
                h = F.max_pool2d(h, 2, ceil_mode=True)
        g = h.mean(dim=(2, 3), keepdim=True)  # (B, F_g, 1, 1) global feature
        mus, trils, maps = [], [], []
        for x_n, block, head in zip(features, self.attention, self.heads, strict=True):
            attended, alpha = block(x_n, g)  # (B, F_x), (B, H_n, W_n)
            mu_n, tril_n = head(self.dropout(attended))
            mus.append(mu_n)
            trils.append(tril_n)
            maps.append(alpha)
        mu, scale_tril = average_gaussians(mus, trils)  # (B, k), (B, k, k)
        loss = None if target is None else gaussian_nll(mu, scale_tril, target)
        if return_attention:
            return mu, scale_tril, loss, maps
        return mu, scale_tril, loss

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The three attention maps upsampled (nearest) to the input: (B, 3, n_orders, n_pixels).

        Each map is rescaled by its number of positions, so 1 means 'uniform attention'.
        """
        *_, maps = self.forward(x, return_attention=True)
        out = []
        for alpha in maps:
            n_pos = alpha.shape[1] * alpha.shape[2]
            up = F.interpolate(alpha.unsqueeze(1) * n_pos, size=x.shape[-2:], mode="nearest")
            out.append(up[:, 0])
        return torch.stack(out, dim=1)
