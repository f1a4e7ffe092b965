"""Free and fixed parameters: validation, scaling to the unit box and back.

Fits run in scaled units ``u = (θ - low) / (high - low)`` in [0, 1] for every free parameter (so
Teff in K and log g in dex have comparable steps) and report physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import FitError, OutOfGridError
from ..model import label_range_text
from .chain import DTYPE


class Parameters:
    """The split of ``names`` into free and fixed, with bounds.

    names: every parameter of the chain, in order; bounds: ``{name: (low, high)}``;
    fixed: ``{name: value}`` held constant (``rv`` fixes every exposure's RV).
    """

    def __init__(self, names: Sequence[str], bounds: Mapping[str, tuple[float, float]],
                 fixed: Mapping[str, float] | None = None) -> None:
        self.names = tuple(names)
        fixed = dict(fixed or {})
        if "rv" in fixed and "rv" not in self.names:
            value = fixed.pop("rv")
            fixed.update({n: value for n in self.names if n.startswith("rv_")})
        unknown = [n for n in fixed if n not in self.names]
        if unknown:
            raise FitError(f"fixed names {unknown} are not parameters of this fit; choose from "
                           f"{list(self.names)}")
        for name, value in fixed.items():
            lo, hi = bounds[name]
            if not lo <= float(value) <= hi:
                raise OutOfGridError(
                    f"{name}={value} is outside the grid ({label_range_text(name, (lo, hi))}); "
                    f"pass a grid that covers it or fix {name} inside that range")
        self.fixed = {n: float(v) for n, v in fixed.items()}
        self.free = tuple(n for n in self.names if n not in self.fixed)
        if not self.free:
            raise FitError("every parameter is fixed; leave at least one free")
        self.lower = np.array([bounds[n][0] for n in self.free], float)
        self.upper = np.array([bounds[n][1] for n in self.free], float)
        self.span = self.upper - self.lower
        self._free_index = np.array([self.names.index(n) for n in self.free])
        self._template = np.array([self.fixed.get(n, np.nan) for n in self.names])

    @property
    def n_free(self) -> int:
        return len(self.free)

    def scale(self, physical: np.ndarray) -> np.ndarray:
        """Free values ``(..., n_free)`` physical -> unit box."""
        return (np.asarray(physical, float) - self.lower) / self.span

    def unscale(self, u: np.ndarray) -> np.ndarray:
        return self.lower + np.asarray(u, float) * self.span

    def theta(self, u: torch.Tensor) -> torch.Tensor:
        """Full parameter vector ``(..., n_params)`` physical from scaled free ``u (..., n_free)``;
        differentiable in ``u``; rounding past a bound is pulled back inside."""
        u = torch.as_tensor(u, dtype=DTYPE)
        lo = torch.as_tensor(self.lower, dtype=DTYPE)
        hi = torch.as_tensor(self.upper, dtype=DTYPE)
        free = lo + u * (hi - lo)
        free = torch.where(free > hi, hi, torch.where(free < lo, lo, free))
        out = torch.as_tensor(self._template, dtype=DTYPE).expand(*u.shape[:-1],
                                                                   len(self.names)).clone()
        out[..., self._free_index] = free
        return out

    def theta_from_free(self, free: np.ndarray) -> np.ndarray:
        """Full physical vector(s) from physical free values ``(..., n_free)``."""
        free = np.asarray(free, float)
        out = np.broadcast_to(self._template, (*free.shape[:-1], len(self.names))).copy()
        out[..., self._free_index] = free
        return out

    def free_from_mapping(self, values: Mapping[str, float]) -> np.ndarray:
        return np.array([values[n] for n in self.free], float)

    def in_bounds(self, free: np.ndarray) -> np.ndarray:
        """``(...)`` bool: every free value inside its bounds."""
        free = np.asarray(free, float)
        return np.all((free >= self.lower) & (free <= self.upper), axis=-1)
