"""Denoising autoencoder for low-S/N échelle images (Hüttel & Clemmensen §3.3; Vincent et al. 2008).

The encoder f maps a noisy image x' (B, 1, n_orders, n_pixels) to a latent code z with strided
(1×k) convolutions; the decoder g maps z back with transposed convolutions; the loss is
‖x − g(f(x'))‖² (mean over pixels). With ``residual=True`` (default) the decoder predicts the
correction to x', g(f(x')) = x' + d(z), which is easier to learn for a high-resolution spectrum
whose narrow lines a small bottleneck cannot reproduce from scratch.

``DenoisedEstimator`` puts a trained (frozen) DAE in front of a label estimator; it exposes the
same ``forward`` as the estimators.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DAEConfig:
    n_orders: int = 8
    n_pixels: int = 4096
    kernel: int = 7
    channels: tuple[int, ...] = (16, 32, 64)  # encoder widths, each layer halves the pixels
    residual: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        factor = 2 ** len(self.channels)
        if self.n_pixels % factor:
            raise ValueError(f"n_pixels={self.n_pixels} must be divisible by {factor} "
                             f"(2 ** number of encoder layers)")

    @classmethod
    def cpu(cls, **overrides) -> DAEConfig:
        return cls(**{**dict(channels=(8, 16, 16)), **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class DenoisingAutoencoder(nn.Module):
    def __init__(self, config: DAEConfig):
        super().__init__()
        self.config = config
        c = config
        pad = (0, c.kernel // 2)
        enc, c_in = [], 1
        for c_out in c.channels:
            enc += [nn.Conv2d(c_in, c_out, (1, c.kernel), stride=(1, 2), padding=pad), nn.GELU()]
            c_in = c_out
        self.encoder = nn.Sequential(*enc)
        dec = []
        for c_out in (*reversed(c.channels[:-1]), 1):
            dec += [nn.ConvTranspose2d(c_in, c_out, (1, 4), stride=(1, 2), padding=(0, 1)),
                    nn.GELU()]
            c_in = c_out
        self.decoder = nn.Sequential(*dec[:-1])  # no activation on the output
        if c.residual:
            self.skip = nn.Conv2d(1, 1, (1, c.kernel), padding=pad, bias=False)
            with torch.no_grad():
                self.skip.weight.zero_()
                self.skip.weight[0, 0, 0, c.kernel // 2] = 1.0

    def forward(self, noisy: torch.Tensor, clean: torch.Tensor | None = None):
        """noisy, clean: (B, 1, n_orders, n_pixels) -> (denoised same shape, MSE loss or None)."""
        z = self.encoder(noisy)  # (B, C_last, n_orders, n_pixels / 2^n_layers)
        out = self.decoder(z)  # (B, 1, n_orders, n_pixels)
        if self.config.residual:
            out = self.skip(noisy) + out
        loss = None if clean is None else F.mse_loss(out, clean)
        return out, loss


class DenoisedEstimator(nn.Module):
    """DAE (frozen, eval mode) followed by an estimator; same call signature as the estimator."""

    def __init__(self, dae: DenoisingAutoencoder, estimator: nn.Module):
        super().__init__()
        self.dae = dae
        self.estimator = estimator
        self.config = estimator.config
        for p in self.dae.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> DenoisedEstimator:
        super().train(mode)
        self.dae.eval()  # the DAE is trained separately and stays fixed
        return self

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, **kwargs):
        with torch.no_grad():
            denoised, _ = self.dae(x)
        return self.estimator(denoised, target, **kwargs)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            denoised, _ = self.dae(x)
        return self.estimator.attention_maps(denoised)
