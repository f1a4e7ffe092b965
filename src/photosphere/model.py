"""The forward-model protocol: ``labels -> normalised flux`` on the model's own wavelength grid.

Every model the inference layer fits (the interpolated grid, the emulator, The Cannon, the line
model, mixtures) satisfies :class:`ForwardModel`; nothing else about it is assumed. A model never
knows about the telescope: Doppler shift, broadening, resampling and continuum belong to the
observation chain (:mod:`photosphere.infer.chain`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .errors import ModelError, OutOfGridError

#: Physical units of the shared label vocabulary, used in messages and tables.
LABEL_UNITS: dict[str, str] = {
    "teff": "K", "logg": "dex", "feh": "dex", "mh": "dex", "alpha": "dex", "vmic": "km/s",
    "vmac": "km/s", "vsini": "km/s", "rv": "km/s",
}


@runtime_checkable
class ForwardModel(Protocol):
    """What the inference layer needs from a model.

    label_names: names of the label axes, in the order of the last dimension of ``predict``'s input.
    bounds: ``{name: (low, high)}`` in physical units; ``predict`` is valid inside.
    wavelength: ``(n_pix,)`` Å, the model's own grid (log-uniform for grid models), in ``medium``.
    predict(labels): ``labels`` ``(..., n_labels)`` physical units -> ``(..., n_pix)`` normalised
    flux, differentiable in ``labels``.

    Optional, the model's own error (used by :func:`photosphere.infer.fit` and ``sample``):

    * ``predict_error_templates(labels)`` -> ``(..., K, n_pix)``: the model error is
      ``ε = Σ_k a_k T_k`` with independent ``a_k ~ N(0, 1)``, so the templates carry their own
      size (normalised-flux units on ``wavelength``; differentiable in ``labels``). A low-rank
      covariance ``T Tᵀ``, coherent over the spectrum, marginalised analytically with
      ``model_error="auto"`` (:mod:`photosphere.infer.model_error`). GridInterpolator: the
      interpolation error; PCAGPEmulator: the GP error of its weights.
    * ``predict_variance(labels)`` -> ``(..., n_pix)``: a per-pixel (diagonal) model variance,
      added to the data variance when the templates are not used (never both).
    """

    label_names: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    wavelength: np.ndarray
    medium: Literal["air", "vacuum"]

    def predict(self, labels: torch.Tensor) -> torch.Tensor: ...


def check_model(model: object) -> ForwardModel:
    """Return ``model`` if it satisfies :class:`ForwardModel`, else raise :class:`ModelError`."""
    missing = [name for name in ("label_names", "bounds", "wavelength", "medium", "predict")
               if not hasattr(model, name)]
    if missing:
        raise ModelError(f"{type(model).__name__} is not a forward model: it lacks "
                         f"{', '.join(missing)}; implement label_names, bounds, wavelength, medium "
                         "and predict(labels) (see photosphere.model.ForwardModel)")
    unbounded = [n for n in model.label_names if n not in model.bounds]  # type: ignore[attr-defined]
    if unbounded:
        raise ModelError(f"{type(model).__name__}.bounds has no entry for {unbounded}; "
                         "give (low, high) for every label")
    return model  # type: ignore[return-value]


def _format_value(name: str, value: float) -> str:
    return f"{value:.0f}" if name == "teff" else f"{value:.3g}"


def label_range_text(name: str, bounds: tuple[float, float]) -> str:
    """``'3500-9750 K'`` style text for messages."""
    lo, hi = bounds
    unit = LABEL_UNITS.get(name, "")
    return f"{_format_value(name, lo)}-{_format_value(name, hi)}{' ' + unit if unit else ''}"


def labels_tensor(label_names: Sequence[str], labels: Mapping[str, float],
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A ``(n_labels,)`` tensor of keyword ``labels`` in ``label_names`` order; every name must
    be given and no other (a :class:`ModelError` names the unknown and absent ones)."""
    names = tuple(label_names)
    unknown = set(labels) - set(names)
    absent = [n for n in names if n not in labels]
    if unknown or absent:
        raise ModelError(f"labels_tensor needs exactly {names}; unknown {sorted(unknown)}, "
                         f"absent {absent}")
    return torch.tensor([float(labels[n]) for n in names], dtype=dtype)


def check_labels_in_bounds(labels: Mapping[str, float] | Sequence[float] | np.ndarray,
                           bounds: Mapping[str, tuple[float, float]],
                           label_names: Sequence[str] | None = None) -> None:
    """Raise :class:`OutOfGridError` naming the first label outside ``bounds``.

    labels: a ``{name: value}`` mapping, or values ordered as ``label_names``; rows of a 2D array
    are all checked. Message example: "teff=2500 is outside the grid (3500-9750 K); pass a grid
    that covers it or fix teff".
    """
    if isinstance(labels, Mapping):
        items = [(str(k), np.asarray(v, float)) for k, v in labels.items()]
    else:
        if label_names is None:
            raise ModelError("check_labels_in_bounds: pass label_names with an array of labels")
        arr = np.asarray(labels, float)
        if arr.shape[-1] != len(label_names):
            raise ModelError(f"labels have {arr.shape[-1]} columns but {len(label_names)} label "
                             f"names {tuple(label_names)} were given")
        items = [(n, arr[..., i]) for i, n in enumerate(label_names)]
    for name, value in items:
        if name not in bounds:
            continue
        lo, hi = bounds[name]
        bad = ~((value >= lo) & (value <= hi))
        if np.any(bad):
            v = float(np.ravel(value)[np.flatnonzero(np.ravel(bad))[0]])
            raise OutOfGridError(
                f"{name}={_format_value(name, v)} is outside the grid "
                f"({label_range_text(name, bounds[name])}); pass a grid that covers it or fix "
                f"{name}")
