"""The Cannon on a synthetic grid (photosphere.grids.store.GridStore): train on grid spectra with
their node labels, test on held-out nodes with noise added.

A random ``holdout_fraction`` of the present nodes is held out. Training spectra are the
noise-free grid spectra with a nominal ``train_snr`` (their ivar; a Cannon needs finite
variances); held-out spectra get Gaussian noise at a per-star S/N uniform in ``snr``. Only axes
with more than one node become Cannon labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.apogee_emulated import SpectraSet
from ..errors import ModelError
from ..models.cannon import CannonModel


@dataclass(frozen=True)
class GridDatasetSpec:
    path: str
    holdout_fraction: float = 0.2
    snr: tuple[float, float] = (50.0, 200.0)
    train_snr: float = 1000.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "grid", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridDatasetSpec:
        return cls(str(d["path"]), float(d["holdout_fraction"]), tuple(d["snr"]),
                   float(d["train_snr"]), int(d["seed"]))

    def build(self) -> tuple[SpectraSet, SpectraSet]:
        """(training set, held-out noisy set) from the grid file."""
        from ..grids.store import GridStore

        with GridStore.open(self.path) as store:
            names = tuple(n for n in store.label_names if store.axes[n].size > 1)
            present = np.flatnonzero(store.present.ravel())
            flux = store.flux_all()[present].astype(float)
            labels = np.array([[store.node_labels(int(i))[n] for n in names] for i in present])
            wavelength = store.wavelength
        if not 0 < self.holdout_fraction < 1:
            raise ModelError(f"holdout_fraction={self.holdout_fraction} must lie in (0, 1)")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(present))
        n_test = max(1, round(self.holdout_fraction * len(present)))
        test, train = order[:n_test], order[n_test:]
        ivar_train = np.full(flux[train].shape, self.train_snr**2)
        snr = rng.uniform(self.snr[0], self.snr[1], n_test)
        sigma = np.sqrt(np.clip(flux[test], 0.05, None)) / snr[:, None]
        noisy = flux[test] + sigma * rng.normal(size=sigma.shape)
        no_mask = np.zeros_like(flux, dtype=bool)
        return (SpectraSet(names, labels[train], flux[train], ivar_train, no_mask[train],
                           np.full(len(train), self.train_snr), wavelength),
                SpectraSet(names, labels[test], noisy, 1 / sigma**2, no_mask[test], snr,
                           wavelength))


def train_on_grid(spec: GridDatasetSpec, *, order: int = 2, regularization: float = 0.0,
                  progress: bool = False) -> CannonModel:
    train, _ = spec.build()
    model = CannonModel(train.label_names, order=order, regularization=regularization,
                        progress=progress).fit(train.labels, train.flux, train.ivar,
                                               train.wavelength)
    model.provenance_["training_set"] = {**spec.to_dict(), "path": str(Path(spec.path))}
    return model
