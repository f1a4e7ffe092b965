"""A tiny analytic spectrum source and order layout for the nn tests (never shown to users)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

C_KMS = 299_792.458
BOUNDS = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0), "feh": (-2.0, 0.5), "alpha": (0.0, 0.4)}
DATA_BOUNDS = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0), "feh": (-2.0, 0.5),
               "vsini": (0.0, 30.0)}
# a tiny ResNet and star set for the training tests (test_train, test_finetune)
TINY_RESNET = dict(stem_channels=4, stem_stride=2, channels=(4, 8), pooled_pixels=4,
                   hidden=(32, 16), dropout=0.1)
DATA = dict(bounds=DATA_BOUNDS, n_train=48, n_val=16, n_test=16, snr=50.0, seed=1)


class ToySource:
    """Absorption lines whose depths and widths depend smoothly on teff, logg, feh."""

    label_names = ("teff", "logg", "feh", "alpha")
    bounds = BOUNDS
    medium = "air"

    def __init__(self, velocity_step: float = 2.5, n_lines: int = 60, seed: int = 0):
        dln = velocity_step / C_KMS
        n = int(np.log(5420 / 4980) / dln)
        self.wavelength = 4980 * np.exp(np.arange(n) * dln)
        rng = np.random.default_rng(seed)
        self.centres = torch.as_tensor(rng.uniform(5000, 5400, n_lines))
        self.kind = torch.as_tensor(rng.integers(0, 3, n_lines))
        self.calls: list[torch.Tensor] = []

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.float64)
        self.calls.append(labels.detach().clone())
        t = (labels[..., 0:1] - 5500) / 1500
        g = (labels[..., 1:2] - 3) / 2
        z = labels[..., 2:3]
        depth = torch.where(self.kind == 0, 0.5 * torch.sigmoid(-2 * t + z),
                            torch.where(self.kind == 1, 0.4 * torch.sigmoid(2 * t + g),
                                        0.3 * torch.sigmoid(z - g)))
        width = 0.05 * (1 + 0.3 * g)
        wave = torch.as_tensor(self.wavelength)
        prof = torch.exp(-0.5 * ((wave - self.centres.unsqueeze(-1)) / width.unsqueeze(-1)) ** 2)
        return 1 - (depth.unsqueeze(-1) * prof).sum(-2).clamp(max=0.95)


@dataclass(frozen=True)
class ToyLayout:
    """8 overlapping orders × n_pixels spanning 5050-5350 Å."""

    n_pixels: int = 256
    medium: str = "air"

    @property
    def wavelength(self) -> np.ndarray:
        starts = np.linspace(5050, 5312, 8)
        return np.stack([np.linspace(s, s + 38, self.n_pixels) for s in starts])
