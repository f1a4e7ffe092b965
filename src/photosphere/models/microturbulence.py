"""Microturbulence from an empirical relation of Teff and log g, instead of a free label.

vmic and [Fe/H] are nearly degenerate in a fit of weak and saturated lines together (both
change line strengths), and a free vmic lets line-list errors leak into [Fe/H]. Surveys fix vmic
from Teff and log g:

* dwarfs and subgiants (log g ≥ 3.5): Bruntt et al. (2010, MNRAS 405, 1907), from asteroseismic
  stars, ``vmic = 1.01 + 4.56e-4 (Teff - 5700) + 2.75e-7 (Teff - 5700)²`` km/s;
* giants (log g ≤ 3.0): Holtzman et al. (2015, AJ 150, 148; APOGEE DR12),
  ``vmic = 2.478 - 0.325 log g`` km/s;

blended linearly in log g between 3.0 and 3.5, and clamped to the model's vmic range. The
relations scatter by ≈ :data:`SCATTER` km/s around real stars; that part of the error is in the
systematic floor measured on the benchmark, not in the formal σ.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError

#: km/s, typical scatter of real stars around the relation
SCATTER = 0.3


def vmic_relation(teff, logg):
    """vmic (km/s) for ``teff`` (K) and ``logg`` (dex): arrays or tensors of one shape."""
    lib = torch if isinstance(teff, torch.Tensor) else np
    dt = teff - 5700.0
    dwarf = 1.01 + 4.56e-4 * dt + 2.75e-7 * dt * dt
    giant = 2.478 - 0.325 * logg
    w = lib.clip((logg - 3.0) / 0.5, 0.0, 1.0)
    return w * dwarf + (1.0 - w) * giant


class VmicFromRelation:
    """``base`` (a model with a ``vmic`` label) with vmic taken from :func:`vmic_relation`:
    the labels are the base model's less vmic."""

    def __init__(self, base) -> None:
        names = tuple(base.label_names)
        if "vmic" not in names or "teff" not in names or "logg" not in names:
            raise ModelError("VmicFromRelation needs a model with teff, logg and vmic labels; "
                             f"this one has {names}")
        self.base = base
        self._index = names.index("vmic")
        self._teff, self._logg = names.index("teff"), names.index("logg")
        self.label_names = tuple(n for n in names if n != "vmic")
        self.bounds = {n: tuple(base.bounds[n]) for n in self.label_names}
        self.vmic_bounds = tuple(base.bounds["vmic"])
        self.wavelength = base.wavelength
        self.medium = base.medium

    def full_labels(self, labels) -> torch.Tensor:
        """``(..., n_labels + 1)`` base-model labels with vmic inserted."""
        labels = torch.as_tensor(labels, dtype=torch.float64)
        names = self.label_names
        teff = labels[..., names.index("teff")]
        logg = labels[..., names.index("logg")]
        vmic = vmic_relation(teff, logg).clamp(*self.vmic_bounds)
        return torch.cat([labels[..., :self._index], vmic[..., None],
                          labels[..., self._index:]], dim=-1)

    def predict(self, labels) -> torch.Tensor:
        return self.base.predict(self.full_labels(labels))

    @property
    def model_mask(self):
        return getattr(self.base, "model_mask", None)

    def without(self, star: str) -> VmicFromRelation:
        """Leave-one-out of a calibrated base model (see CalibratedModel.without)."""
        return VmicFromRelation(self.base.without(star))
