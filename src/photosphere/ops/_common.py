"""Helpers shared by the operators: the speed of light, numpy/torch conversion, validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidSpectrumError

#: speed of light in vacuum, km/s (exact, SI definition)
C_KMS = 299_792.458


def as_float_tensor(x: Any, name: str = "value", dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a floating torch tensor: numpy/python values become float64, tensors keep theirs.

    Tensors are returned as they are (no copy) so that autograd graphs stay connected.
    """
    if isinstance(x, torch.Tensor):
        if not torch.is_floating_point(x):
            x = x.to(torch.float64)
        return x if dtype is None else x.to(dtype)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidSpectrumError(f"{name} is not numeric: {exc}") from None
    return torch.tensor(np.array(arr, order="C"), dtype=dtype or torch.float64)


def require_finite(x: torch.Tensor, name: str, fix: str) -> None:
    """Raise :class:`InvalidSpectrumError` naming ``name`` if ``x`` holds NaN or inf."""
    if not bool(torch.isfinite(x.detach()).all()):
        n = int((~torch.isfinite(x.detach())).sum())
        raise InvalidSpectrumError(f"{name} has {n} NaN/inf value(s); {fix}")


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
