"""The observation setup, in one frozen object: how a model spectrum becomes the observed one.

:class:`ObservationSettings` holds what describes the instrument and the observation rather than
the star: the line-spread function (resolution), the telluric transmission, the continuum, the
broadening (rotation with limb darkening, macroturbulence) and the ranges RV and vsini may
explore. :func:`~photosphere.infer.optimize.fit`, :func:`~photosphere.infer.mcmc.sample`,
:func:`~photosphere.infer.mixture.fit_mixture` and the CLI pass it as ``settings=``; their
keyword arguments of the same names still work and override the object's fields.

>>> settings = ObservationSettings(resolution=115_000, macroturbulence="auto")
>>> result = fit(model, spectrum, settings=settings, fixed={"vsini": 1.9})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FitError

MACROTURBULENCE_MODES = ("fit", "auto")


def _pair(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FitError(f"{name}={value!r} must be a (low, high) pair in km/s") from None
    return low, high


@dataclass(frozen=True, eq=False)  # eq=False: resolution/telluric may be arrays
class ObservationSettings:
    """The instrument and observation setup of a fit (validated at creation).

    resolution: None (the model is already at the instrument's resolution), R, one R per order,
        or R(λ) arrays shaped like the observation's flux (the Gaussian LSF).
    telluric: None, a transmission shaped like the observation's flux (or one per exposure), or a
        transmission :class:`~photosphere.spectrum.Spectrum` resampled onto every segment (all
        multiplied on the observed pixels), or a fitted transmission multiplied before the LSF
        (a torch module such as :class:`~photosphere.models.lines.telluric.TelluricModel`; its
        parameters are learned by autograd, as in the line fit, not by least squares).
    continuum_degree: degree of the per-order Chebyshev continuum (None: no continuum).
    continuum_knot_spacing: Å; a cubic B-spline continuum with knots this far apart instead of
        one polynomial per order (needs a continuum: continuum_degree not None).
    rotation: fit vsini (rotational broadening with linear limb darkening ``epsilon``).
    macroturbulence: None, ζ_RT in km/s (fixed), ``"fit"`` (a free ``vmac`` within
        ``vmac_bounds``) or ``"auto"`` (Doyle et al. 2014 at the fitted Teff and log g).
    rv_bounds: (low, high) km/s, or None to find the RV by cross-correlation over ±300 km/s and
        fit within ±50 km/s of it; vsini_bounds, vmac_bounds: (low, high) km/s.
    """

    resolution: Any = None
    telluric: Any = None
    continuum_degree: int | None = 2
    continuum_knot_spacing: float | None = None
    rotation: bool = True
    epsilon: float = 0.6
    macroturbulence: float | str | None = None
    rv_bounds: tuple[float, float] | None = None
    vsini_bounds: tuple[float, float] = (0.0, 100.0)
    vmac_bounds: tuple[float, float] = (0.0, 15.0)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "rv_bounds", _pair(self.rv_bounds, "rv_bounds"))
        set_(self, "vsini_bounds", _pair(self.vsini_bounds, "vsini_bounds"))
        set_(self, "vmac_bounds", _pair(self.vmac_bounds, "vmac_bounds"))
        set_(self, "rotation", bool(self.rotation))
        set_(self, "epsilon", float(self.epsilon))
        zeta = self.macroturbulence
        if isinstance(zeta, str):
            if zeta not in MACROTURBULENCE_MODES:
                raise FitError(f"macroturbulence={zeta!r} is not understood; pass None, a value "
                               "in km/s, 'fit' or 'auto'")
        elif zeta is not None:
            set_(self, "macroturbulence", float(zeta))
            if not (math.isfinite(self.macroturbulence) and 0 <= self.macroturbulence <= 50):
                raise FitError(f"macroturbulence={zeta} km/s must be within 0..50")
        if not 0 <= self.vmac_bounds[0] < self.vmac_bounds[1] <= 50:
            raise FitError(f"vmac_bounds={self.vmac_bounds} must satisfy 0 <= low < high <= 50")
        if self.rv_bounds is not None and not self.rv_bounds[0] < self.rv_bounds[1]:
            raise FitError(f"rv_bounds={self.rv_bounds} must be (low, high) with low < high")
        if not 0 <= self.vsini_bounds[0] < self.vsini_bounds[1]:
            raise FitError(f"vsini_bounds={self.vsini_bounds} must satisfy 0 <= low < high")
        degree = self.continuum_degree
        if degree is not None and not 0 <= degree <= 20:
            raise FitError(f"continuum_degree={degree} must be None or 0..20")
        spacing = self.continuum_knot_spacing
        if spacing is not None and not (math.isfinite(spacing) and spacing > 0
                                        and degree is not None):
            raise FitError(f"continuum_knot_spacing={spacing} Å must be a positive number, "
                           "with a continuum (continuum_degree not None)")

    @classmethod
    def of(cls, settings: ObservationSettings | None = None, **overrides: Any
           ) -> ObservationSettings:
        """``settings`` (default: the defaults) with ``overrides`` applied; an unknown name
        raises :class:`FitError` listing the known ones."""
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise FitError(f"unknown observation setting(s) {unknown}; known: {list(cls.names())}")
        base = settings if settings is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, keywords: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``keywords`` parted into (observation settings, everything else)."""
        names = set(cls.names())
        return ({k: v for k, v in keywords.items() if k in names},
                {k: v for k, v in keywords.items() if k not in names})

    def replace(self, **changes: Any) -> ObservationSettings:
        return dataclasses.replace(self, **changes)

    def chain_kwargs(self) -> dict[str, Any]:
        """The keywords of :class:`~photosphere.infer.chain.ObservationChain` (``rv_bounds``
        included only when set; :func:`~photosphere.infer.optimize.build_chain` searches it)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["rv_bounds"] is None:
            out.pop("rv_bounds")
        return out
