"""The easy call: labels with uncertainties for a spectrum from a trained network.

``predict_spectrum(spectrum, model=None)`` formats the spectrum onto the model's layout
(:func:`~photosphere.nn.inputs.prepare_image`), runs the network and returns an
:class:`NNPrediction` in physical units, with σ temperature-scaled when the checkpoint holds a
calibration and, optionally, MC-dropout epistemic variance. ``model=None`` uses the default model
shipped in ``photosphere/data/nn/default.pt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..spectrum import EchelleSpectrum, Spectrum
from .checkpoint import Checkpoint, load_checkpoint
from .evaluate import predict_ensemble
from .inputs import prepare_image

TRAIN_COMMAND = "photosphere nn train --preset cpu --grid GRID --out MODEL.pt"


def default_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "nn" / "default.pt"


def shipped_models() -> dict[str, Path]:
    """The models shipped with photosphere, by name (file stem in ``photosphere/data/nn``):
    ``default`` (S/N 10-300, best on real spectra), ``resnet6k`` and ``resnet6k-s2`` (more stars
    and epochs; with ``default`` session 3's S/N-20 ensemble), and ``resnet6k-nodrop20``,
    ``resnet6k-s2-nodrop20``, ``resnet6k-s3-nodrop20``, ``resnet6k-s4-nodrop20`` (fine-tuned at
    S/N 20 without dropout, then mean-recalibrated: together the recommended S/N-20 deep
    ensemble, docs/nn.md)."""
    folder = default_model_path().parent
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def load_model(path: str | os.PathLike | None = None) -> Checkpoint:
    """The checkpoint at ``path``, a shipped model by name (:func:`shipped_models`; a file of
    that name in the working directory wins), or the default model when ``path`` is None."""
    if path is None:
        path = default_model_path()
        if not path.exists():
            raise ModelError(
                f"no default neural model is shipped in this installation ({path} is absent); "
                f"train one with `{TRAIN_COMMAND}` and pass it with --model MODEL.pt")
    elif not Path(path).exists() and str(path) in shipped_models():
        path = shipped_models()[str(path)]
    elif not Path(path).exists() and Path(path).suffix != ".pt":
        raise ModelError(f"--model {path}: no such file, and no shipped model has that name; "
                         f"shipped models: {', '.join(shipped_models()) or 'none'}")
    ck = load_checkpoint(path)
    if ck.kind == "dae" or ck.label_scaling is None:
        raise ModelError(f"{path} holds a {ck.kind} model without label scaling; pass a label "
                         "estimator (resnet or attention) checkpoint")
    return ck


@dataclass
class NNPrediction:
    """Labels {name: (value, sigma)} in physical units, their covariance and provenance."""

    labels: dict[str, tuple[float, float]]
    covariance: np.ndarray  # (4, 4)
    label_names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": {k: {"value": v, "sigma": s} for k, (v, s) in self.labels.items()},
                "covariance": self.covariance.tolist(), "label_names": list(self.label_names),
                "provenance": self.provenance}


def predict_spectrum(spectrum: Spectrum | EchelleSpectrum,
                     model: Checkpoint | str | list | None = None, *, rv: float = 0.0,
                     mc_samples: int = 0, calibrated: bool = True,
                     max_filled: float = 0.2) -> NNPrediction:
    """Labels with uncertainties for one spectrum (see module docstring).

    model: a checkpoint (path or loaded), None for the default model, or a list of them for a
    deep ensemble (equal-weight mixture; the spread of the members' means adds to Σ).
    """
    members = model if isinstance(model, list) else [model]
    cks = [m if isinstance(m, Checkpoint) else load_model(m) for m in members]
    ck = cks[0]
    for other in cks[1:]:
        same = (other.label_scaling.names == ck.label_scaling.names and np.array_equal(
            np.asarray(other.data.get("layout_wavelength")),
            np.asarray(ck.data.get("layout_wavelength"))))
        if not same:
            raise ModelError(f"ensemble members {ck.path} and {other.path} differ in labels or "
                             "order layout; combine only models trained on the same setup")
    layout = ck.data.get("layout_wavelength")
    if layout is None:
        raise ModelError(f"{ck.path} does not record the order layout it was trained on; "
                         "retrain it with this version of photosphere")
    prepared = prepare_image(spectrum, np.asarray(layout), ck.data.get("layout_medium", "air"),
                             rv=rv, max_filled=max_filled)
    temperature = ck.temperature if calibrated else None
    members_in = [(c.model, c.label_scaling, c.temperature if calibrated else None) for c in cks]
    mu, cov = predict_ensemble(members_in, torch.from_numpy(prepared.image),
                               mc_samples=mc_samples)
    temperature = ck.temperature if calibrated else None
    mu, cov = mu[0].double().numpy(), cov[0].double().numpy()
    sigma = np.sqrt(np.diag(cov))
    names = ck.label_scaling.names
    return NNPrediction(
        labels={n: (float(mu[i]), float(sigma[i])) for i, n in enumerate(names)},
        covariance=cov, label_names=names,
        provenance={"model": [str(c.path) for c in cks] if len(cks) > 1 else str(ck.path),
                    "kind": ck.kind,
                    "calibrated": temperature is not None, "mc_samples": mc_samples,
                    "rv_removed_kms": rv, "filled_fraction": prepared.filled_fraction,
                    "orders_used": list(prepared.orders_used),
                    "trained_snr": ck.data.get("snr")})
