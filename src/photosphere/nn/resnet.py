"""Residual network on 2D échelle images (Hüttel & Clemmensen §3.2).

Input: (B, 1, n_orders, n_pixels) images (8 × 4096 for the HARPS-N 5050–5350 Å layout). A (1×k)
stem convolution, then ``len(channels)`` residual blocks (the study uses 5) of two (1×k)
convolutions with zero padding, so features never mix orders before the fully connected part;
each block halves the pixel axis. Three fully connected layers with dropout end in a Gaussian head
that predicts μ and the Cholesky factor of Σ (diagonal or full) over the scaled labels.

``forward(x, target=None) -> (mu, scale_tril, loss)``; ``loss`` is the Gaussian NLL when
``target`` is given, else None.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .losses import Covariance, GaussianHead, check_covariance, gaussian_nll


@dataclass(frozen=True)
class ResNetConfig:
    """Hyper-parameters; the default is the full (GPU) size, ``cpu()`` a small one."""

    n_orders: int = 8
    n_pixels: int = 4096
    n_labels: int = 4
    covariance: Covariance = "diagonal"
    kernel: int = 7  # (1 × kernel) convolutions, as in the study
    stem_channels: int = 32
    stem_kernel: int = 7
    stem_stride: int = 2  # pixel-axis stride of the stem
    channels: tuple[int, ...] = (32, 64, 64, 128, 128)  # one residual block per entry
    pooled_pixels: int = 8  # pixel positions kept per order before the FC layers
    hidden: tuple[int, int] = (512, 256)  # 3 FC layers: two hidden + the Gaussian head
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_covariance(self.covariance)
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "hidden", tuple(self.hidden))

    @classmethod
    def cpu(cls, **overrides) -> ResNetConfig:
        """A small network that trains in minutes and infers > 500 spectra/s on one CPU core."""
        # the stem cuts the image into 8-pixel patches (kernel = stride = 8, a lossless linear
        # map when stem_channels >= 8), which keeps the residual blocks cheap on a CPU
        base = dict(stem_channels=8, stem_kernel=8, stem_stride=8, channels=(8, 8, 16, 16, 32),
                    pooled_pixels=4, hidden=(128, 64), dropout=0.1)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["hidden"] = list(self.hidden)
        return d


class PatchConv(nn.Conv2d):
    """A (1×k) convolution with stride k and no padding (cuts each order into k-pixel patches),
    computed as one matrix product: the same parameters and result as ``nn.Conv2d``, but several
    times faster on a CPU (mostly in the backward pass)."""

    def __init__(self, c_in: int, c_out: int, patch: int):
        super().__init__(c_in, c_out, (1, patch), stride=(1, patch), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, c_in, H, W) -> (B, c_out, H, W // patch)
        b, c, h, w = x.shape
        k = self.kernel_size[1]
        patches = x[..., : w - w % k].reshape(b, c, h, w // k, k)
        return torch.einsum("bchwk,ock->bohw", patches, self.weight[:, :, 0, :])


class ResidualBlock(nn.Module):
    """Two (1×k) conv + batch-norm layers with a skip connection; stride 2 along the pixels."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        pad = (0, kernel // 2)
        self.conv1 = nn.Conv2d(c_in, c_out, (1, kernel), stride=(1, 2), padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, (1, kernel), padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=(1, 2), bias=False),
                                  nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, c_in, H, W) -> (B, c_out, H, ceil(W / 2))
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        c = config
        if c.stem_kernel == c.stem_stride:
            stem_conv: nn.Module = PatchConv(1, c.stem_channels, c.stem_kernel)
        else:
            stem_conv = nn.Conv2d(1, c.stem_channels, (1, c.stem_kernel),
                                  stride=(1, c.stem_stride), padding=(0, (c.stem_kernel - 1) // 2),
                                  bias=False)
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(c.stem_channels), nn.ReLU())
        widths = (c.stem_channels, *c.channels)
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, c.kernel)
                                      for a, b in itertools.pairwise(widths)])
        self.pool = nn.AdaptiveAvgPool2d((c.n_orders, c.pooled_pixels))
        n_flat = widths[-1] * c.n_orders * c.pooled_pixels
        self.fc = nn.Sequential(
            nn.Linear(n_flat, c.hidden[0]), nn.ReLU(), nn.Dropout(c.dropout),
            nn.Linear(c.hidden[0], c.hidden[1]), nn.ReLU(), nn.Dropout(c.dropout))
        self.head = GaussianHead(c.hidden[1], c.n_labels, c.covariance)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        # x: (B, 1, n_orders, n_pixels)
        h = self.stem(x)  # (B, C0, n_orders, n_pixels / stem_stride)
        h = self.blocks(h)  # (B, C_last, n_orders, n_pixels / stem_stride / 2^n_blocks)
        h = self.pool(h).flatten(1)  # (B, C_last * n_orders * pooled_pixels)
        mu, scale_tril = self.head(self.fc(h))  # (B, k), (B, k, k)
        loss = None if target is None else gaussian_nll(mu, scale_tril, target)
        return mu, scale_tril, loss
