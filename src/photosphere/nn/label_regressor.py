"""A small neural-network label regressor: spectrum -> labels (a direct estimator to compare with
The Cannon on the same spectra, as the Astro 128 lab asks).

An MLP on the normalised flux (masked pixels set to 1), trained with Adam on standardised labels
(mean-squared error), with a held-out tenth of the training set for early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ModelError


@dataclass(frozen=True)
class RegressorConfig:
    hidden: tuple[int, ...] = (128, 64)
    epochs: int = 80
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 64
    patience: int = 15
    seed: int = 0
    threads: int = 1   # torch CPU threads while training (small nets: 1 is fastest)


class LabelRegressor:
    """``fit(flux, ivar, labels)`` then ``predict(flux, ivar) -> (n, k)`` labels."""

    def __init__(self, config: RegressorConfig | None = None, progress: bool = False):
        self.config = config or RegressorConfig()
        self.progress = progress

    @staticmethod
    def _inputs(flux: np.ndarray, ivar: np.ndarray) -> torch.Tensor:
        x = np.where((ivar > 0) & np.isfinite(flux), flux, 1.0) - 1.0
        return torch.as_tensor(x, dtype=torch.float32)

    def fit(self, flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray) -> LabelRegressor:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            return self._fit(flux, ivar, labels)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray) -> LabelRegressor:
        cfg = self.config
        labels = np.asarray(labels, dtype=float)
        if flux.shape[0] != labels.shape[0] or flux.shape[0] < 10:
            raise ModelError(f"need at least 10 spectra with one label row each, got flux "
                             f"{flux.shape} and labels {labels.shape}")
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.mean_, self.std_ = labels.mean(axis=0), labels.std(axis=0)
        x = self._inputs(flux, ivar)
        y = torch.as_tensor((labels - self.mean_) / self.std_, dtype=torch.float32)
        order = rng.permutation(len(x))
        n_val = max(1, len(x) // 10)
        val, train = order[:n_val], order[n_val:]
        layers: list[nn.Module] = []
        width = x.shape[1]
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, y.shape[1]))
        self.net_ = nn.Sequential(*layers)
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.learning_rate,
                               weight_decay=cfg.weight_decay)
        best, best_state, waited = np.inf, None, 0
        for _ in tqdm(range(cfg.epochs), desc="NN regressor", disable=not self.progress,
                      leave=False):
            self.net_.train()
            perm = train[rng.permutation(len(train))]
            for s in range(0, len(perm), cfg.batch_size):
                idx = perm[s:s + cfg.batch_size]
                opt.zero_grad()
                loss = torch.mean((self.net_(x[idx]) - y[idx]) ** 2)
                loss.backward()
                opt.step()
            self.net_.eval()
            with torch.no_grad():
                val_loss = float(torch.mean((self.net_(x[val]) - y[val]) ** 2))
            if val_loss < best:
                best, waited = val_loss, 0
                best_state = {k: v.clone() for k, v in self.net_.state_dict().items()}
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        self.net_.load_state_dict(best_state)
        self.validation_loss_ = best
        return self

    def predict(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        if not hasattr(self, "net_"):
            raise ModelError("LabelRegressor is not trained; call fit(...) first")
        with torch.no_grad():
            out = self.net_(self._inputs(np.atleast_2d(flux), np.atleast_2d(ivar))).numpy()
        return out * self.std_ + self.mean_
