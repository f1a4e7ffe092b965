"""Labels tied to others by empirical relations, instead of free: vmic from Teff and log g,
[α/Fe] from [Fe/H].

vmic and [Fe/H] are nearly degenerate in a fit of weak and saturated lines together (both
change line strengths), and so are [α/Fe] and [Fe/H] where the α elements' lines and electron
donors change the same features; a free vmic or [α/Fe] lets line-list errors leak into [Fe/H].
Surveys tie them:

* **vmic**, dwarfs and subgiants (log g ≥ 3.5): Bruntt et al. (2010, MNRAS 405, 1907), from
  asteroseismic stars, ``vmic = 1.01 + 4.56e-4 (Teff - 5700) + 2.75e-7 (Teff - 5700)²`` km/s;
  giants (log g ≤ 3.0): Holtzman et al. (2015, AJ 150, 148; APOGEE DR12),
  ``vmic = 2.478 - 0.325 log g`` km/s; blended linearly in log g between 3.0 and 3.5. Real
  stars scatter by ≈ :data:`VMIC_SCATTER` km/s around it.
* **[α/Fe]**: the Galactic trend of the MARCS "standard" composition (Gustafsson et al. 2008,
  A&A 486, 951): +0.4 at [Fe/H] ≤ −1, 0 at [Fe/H] ≥ 0, linear between. Thick-disc and halo
  stars scatter by ≈ :data:`ALPHA_SCATTER` dex around it (low-α halo stars lie below).

Values are clamped to the base model's range. The relations' scatter is not in the formal σ;
it is part of the systematic floor measured on the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import ModelError

#: km/s, typical scatter of real stars around :func:`vmic_relation`
VMIC_SCATTER = 0.3
#: dex, typical scatter of real stars around :func:`alpha_trend`
ALPHA_SCATTER = 0.1


def vmic_relation(teff, logg):
    """vmic (km/s) for ``teff`` (K) and ``logg`` (dex): arrays or tensors of one shape."""
    lib = torch if isinstance(teff, torch.Tensor) else np
    dt = teff - 5700.0
    dwarf = 1.01 + 4.56e-4 * dt + 2.75e-7 * dt * dt
    giant = 2.478 - 0.325 * logg
    w = lib.clip((logg - 3.0) / 0.5, 0.0, 1.0)
    return w * dwarf + (1.0 - w) * giant


def alpha_trend(feh):
    """[α/Fe] (dex) of the MARCS standard composition at ``feh`` ([Fe/H], dex): array or
    tensor."""
    lib = torch if isinstance(feh, torch.Tensor) else np
    return lib.clip(-0.4 * feh, 0.0, 0.4)


#: label -> (the labels it depends on, the relation)
RELATIONS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "vmic": (("teff", "logg"), vmic_relation),
    "alpha": (("feh",), alpha_trend),
}


class TiedLabels:
    """``base`` with the labels ``tied`` (names of :data:`RELATIONS`) computed from the others:
    its labels are the base model's less the tied ones, in the base model's order."""

    def __init__(self, base, tied: Sequence[str] = ("vmic",)) -> None:
        names = tuple(base.label_names)
        tied = tuple(dict.fromkeys(tied))
        for label in tied:
            if label not in RELATIONS:
                raise ModelError(f"no relation for {label!r}; labels that can be tied: "
                                 f"{', '.join(RELATIONS)}")
            needs = (label, *RELATIONS[label][0])
            if not set(needs) <= set(names) or set(RELATIONS[label][0]) & set(tied):
                raise ModelError(f"tying {label} needs a model with the labels {list(needs)} "
                                 f"free; this one has {list(names)} (tied: {list(tied)})")
        self.base = base
        self.tied = tied
        self.base_names = names
        self.label_names = tuple(n for n in names if n not in tied)
        self.bounds = {n: tuple(base.bounds[n]) for n in self.label_names}
        self.tied_bounds = {n: tuple(base.bounds[n]) for n in tied}
        self.wavelength = base.wavelength
        self.medium = base.medium

    def tied_values(self, labels) -> dict[str, torch.Tensor]:
        """``{tied label: (...) values}`` at ``labels`` (..., n_labels)."""
        labels = torch.as_tensor(labels, dtype=torch.float64)
        free = {n: labels[..., i] for i, n in enumerate(self.label_names)}
        out = {}
        for name in self.tied:
            depends, relation = RELATIONS[name]
            out[name] = relation(*(free[d] for d in depends)).clamp(*self.tied_bounds[name])
        return out

    def full_labels(self, labels) -> torch.Tensor:
        """``(..., n_base_labels)`` base-model labels with the tied ones inserted."""
        labels = torch.as_tensor(labels, dtype=torch.float64)
        tied = self.tied_values(labels)
        free = {n: labels[..., i] for i, n in enumerate(self.label_names)}
        return torch.stack([free[n] if n in free else tied[n] for n in self.base_names], dim=-1)

    def predict(self, labels) -> torch.Tensor:
        return self.base.predict(self.full_labels(labels))

    @property
    def model_mask(self):
        return getattr(self.base, "model_mask", None)

    def without(self, star: str) -> TiedLabels:
        """Leave-one-out of a calibrated base model (see CalibratedModel.without)."""
        return TiedLabels(self.base.without(star), self.tied)

    def __getattr__(self, name: str):
        # calibration, summary, velocity_step ... of the base model; not its error terms, which
        # are functions of the base model's labels
        if name in ("predict_error_templates", "predict_variance") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)
