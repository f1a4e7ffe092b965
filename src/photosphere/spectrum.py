"""Spectrum objects: immutable, validated at creation, units explicit.

* :class:`Spectrum`: one 1D spectrum, ``(n_pixels,)`` arrays.
* :class:`EchelleSpectrum`: ``(n_orders, n_pixels)`` arrays, each order its own wavelength row.

Conventions (see ARCHITECTURE.md): wavelengths in Å with an explicit ``medium`` (``"air"`` or
``"vacuum"``); uncertainties are 1σ in flux units (``sigma``), with ``ivar = 1/sigma²`` derived.
Masked pixels (``mask == True``) carry ``ivar = 0`` (``sigma = inf``) and finite flux (non-finite
values are replaced by 0 when the pixel is masked), so a masked pixel can never enter a χ².
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import InvalidSpectrumError, UnitsError

Medium = Literal["air", "vacuum"]
MEDIA = ("air", "vacuum")


@dataclass(frozen=True)
class SpectrumMeta:
    """What a spectrum is of and where it came from.

    barycentric_correction: km/s to *add* to observed velocities to reach the barycentric frame
    (the HARPS ``DRS BERV`` convention); ``snr``: median S/N per pixel as reported or estimated.
    """

    object_name: str | None = None
    instrument: str | None = None
    barycentric_correction: float | None = None
    snr: float | None = None
    source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SpectrumMeta:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("object_name", "instrument",
                                             "barycentric_correction", "snr", "source")}
        out.update(dict(self.extra))
        return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _check_medium(medium: str) -> Medium:
    if medium not in MEDIA:
        raise UnitsError(f"medium={medium!r} is not known; pass medium='air' or medium='vacuum' "
                         "(the frame of the wavelengths)")
    return medium  # type: ignore[return-value]


def _as_angstrom(wavelength: Any, name: str) -> np.ndarray:
    """Accept plain arrays (taken as Å) or astropy Quantities (converted to Å)."""
    try:
        from astropy import units as u
    except ImportError:  # pragma: no cover - astropy is a hard dependency
        u = None
    if u is not None and isinstance(wavelength, u.Quantity):
        if wavelength.unit.physical_type != "length":
            raise UnitsError(f"{name} has unit {wavelength.unit}, which is not a length; "
                             "pass wavelengths in Å (or any length unit as an astropy Quantity)")
        wavelength = wavelength.to_value(u.AA)
    try:
        arr = np.asarray(wavelength, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidSpectrumError(f"{name} is not numeric: {exc}") from None
    return arr


def _validate_arrays(wavelength: np.ndarray, flux: np.ndarray, sigma: np.ndarray | None,
                     ivar: np.ndarray | None, mask: np.ndarray | None,
                     what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared validation for 1D rows or 2D (orders x pixels) blocks. Returns frozen copies."""
    if flux.shape != wavelength.shape:
        raise InvalidSpectrumError(
            f"{what}: flux shape {flux.shape} does not match wavelength shape {wavelength.shape}; "
            "pass one flux value per wavelength")
    if wavelength.size == 0 or wavelength.shape[-1] < 2:
        raise InvalidSpectrumError(f"{what}: needs at least 2 pixels, got shape {wavelength.shape}")
    if not np.all(np.isfinite(wavelength)):
        bad = int(np.sum(~np.isfinite(wavelength)))
        raise InvalidSpectrumError(f"{what}: {bad} wavelength value(s) are NaN or inf; "
                                   "wavelengths must all be finite (mask bad pixels instead)")
    steps = np.diff(wavelength, axis=-1)
    if np.any(steps <= 0):
        idx = np.argwhere(steps <= 0)[0]
        raise InvalidSpectrumError(
            f"{what}: wavelengths must be strictly increasing (per order); first violation at "
            f"pixel index {tuple(int(i) for i in idx)}; sort the spectrum or reverse the order")
    if np.any(wavelength <= 0):
        raise InvalidSpectrumError(f"{what}: wavelengths must be positive (Å)")
    if sigma is not None and ivar is not None:
        raise InvalidSpectrumError(f"{what}: pass either sigma or ivar, not both")
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=float)
        if ivar.shape != flux.shape:
            raise InvalidSpectrumError(
                f"{what}: ivar shape {ivar.shape} != flux shape {flux.shape}")
        if np.any(ivar < 0):
            raise InvalidSpectrumError(f"{what}: inverse variance must be >= 0")
        with np.errstate(divide="ignore"):
            sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
    if sigma is None:
        sigma = np.zeros_like(flux)  # unknown: zero, reported via has_uncertainty
        known = False
    else:
        sigma = np.array(sigma, dtype=float)
        known = True
        if sigma.shape != flux.shape:
            raise InvalidSpectrumError(
                f"{what}: uncertainty shape {sigma.shape} does not match flux shape {flux.shape}")
        if np.any(np.isnan(sigma)):
            raise InvalidSpectrumError(f"{what}: uncertainty contains NaN; mask those pixels")
        if np.any(sigma < 0):
            raise InvalidSpectrumError(f"{what}: uncertainty must be non-negative")
    mask_arr = np.zeros(flux.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask_arr.shape != flux.shape:
        raise InvalidSpectrumError(
            f"{what}: mask shape {mask_arr.shape} != flux shape {flux.shape}")
    nonfinite = ~np.isfinite(flux)
    if np.any(nonfinite & ~mask_arr):
        n = int(np.sum(nonfinite & ~mask_arr))
        raise InvalidSpectrumError(
            f"{what}: {n} flux value(s) are NaN or inf in unmasked pixels; mask them "
            "(mask=...) or build with Spectrum.from_arrays(..., mask_nonfinite=True)")
    if known:
        mask_arr = mask_arr | ~np.isfinite(sigma)
    flux = np.where(mask_arr & nonfinite, 0.0, flux)
    if known:
        sigma = np.where(mask_arr, np.inf, sigma)
    return _frozen(wavelength), _frozen(flux), _frozen(sigma), _frozen(mask_arr)


class _SpectrumBase:
    """Behaviour shared by 1D and echelle spectra (both hold same-shaped arrays)."""

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    medium: Medium
    meta: SpectrumMeta
    flux_unit: str
    has_uncertainty: bool

    @property
    def ivar(self) -> np.ndarray:
        """Inverse variance 1/σ² (0 for masked pixels or unknown uncertainty)."""
        if not self.has_uncertainty:
            return np.zeros_like(self.flux)
        with np.errstate(divide="ignore"):
            out = np.where(np.isfinite(self.sigma) & (self.sigma > 0),
                           1.0 / np.where(self.sigma > 0, self.sigma, 1.0) ** 2, 0.0)
        return np.where(self.mask, 0.0, out)

    @classmethod
    def from_arrays(cls, wavelength, flux, sigma=None, *, mask=None, mask_nonfinite: bool = False,
                    **kwargs):
        """Build a spectrum, optionally masking non-finite flux/σ instead of refusing them.

        Keyword arguments are those of the class (medium, meta, flux_unit, ...).
        """
        flux = np.asarray(flux, dtype=float)
        mask = np.zeros(flux.shape, bool) if mask is None else np.asarray(mask, bool).copy()
        if mask_nonfinite:
            mask |= ~np.isfinite(flux)
            if sigma is not None:
                sigma = np.asarray(sigma, dtype=float)
                mask |= ~np.isfinite(sigma)
                sigma = np.where(np.isfinite(sigma), sigma, np.inf)
        return cls(wavelength, flux, sigma, mask=mask, **kwargs)

    @property
    def masked_fraction(self) -> float:
        return float(np.mean(self.mask))

    @property
    def wavelength_range(self) -> tuple[float, float]:
        return float(np.min(self.wavelength)), float(np.max(self.wavelength))

    def replace(self, **changes: Any):
        """A new spectrum with some fields replaced (validated again)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if "ivar" in changes:
            changes["sigma"] = None
        elif not self.has_uncertainty and "sigma" not in changes:
            fields["sigma"] = None
        fields.pop("has_uncertainty", None)
        fields.update(changes)
        return type(self)(**fields)

    def median_snr(self) -> float:
        """Median S/N per good pixel from flux/σ (NaN when no uncertainty is known)."""
        good = ~self.mask & (self.sigma > 0) & np.isfinite(self.sigma)
        if not self.has_uncertainty or not np.any(good):
            return float("nan")
        return float(np.median(self.flux[good] / self.sigma[good]))


@dataclass(frozen=True, eq=False)
class Spectrum(_SpectrumBase):
    """A 1D spectrum.

    wavelength: (n_pixels,) Å, strictly increasing, in ``medium`` ("air" or "vacuum").
    flux: (n_pixels,) in ``flux_unit`` (``"normalized"`` for continuum-normalised spectra).
    sigma: (n_pixels,) 1σ uncertainty, or None (unknown). Alternatively pass ``ivar``.
    mask: (n_pixels,) bool, True = bad pixel (never used in a fit).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray | None = None
    mask: np.ndarray | None = None
    medium: Medium = "air"
    meta: SpectrumMeta = field(default_factory=SpectrumMeta)
    flux_unit: str = "arbitrary"
    ivar: dataclasses.InitVar[np.ndarray | None] = None
    has_uncertainty: bool = field(init=False, default=False)

    def __post_init__(self, ivar: np.ndarray | None) -> None:
        wave = _as_angstrom(self.wavelength, "wavelength")
        flux = np.asarray(self.flux, dtype=float)
        if wave.ndim != 1:
            raise InvalidSpectrumError(
                f"Spectrum: wavelength must be 1D, got shape {wave.shape}; "
                "use EchelleSpectrum for (orders, pixels) data")
        known = self.sigma is not None or ivar is not None
        w, f, s, m = _validate_arrays(wave, flux, self.sigma, ivar, self.mask, "Spectrum")
        object.__setattr__(self, "wavelength", w)
        object.__setattr__(self, "flux", f)
        object.__setattr__(self, "sigma", s)
        object.__setattr__(self, "mask", m)
        object.__setattr__(self, "medium", _check_medium(self.medium))
        object.__setattr__(self, "has_uncertainty", known)
        if not isinstance(self.meta, SpectrumMeta):
            raise InvalidSpectrumError("meta must be a SpectrumMeta")

    # Spectrum.ivar is both an InitVar and a property; dataclass stores the InitVar default on the
    # class, so re-attach the property after class creation (below).

    def __len__(self) -> int:
        return self.flux.shape[0]

    def __repr__(self) -> str:
        lo, hi = self.wavelength_range
        name = self.meta.object_name or "?"
        return (f"Spectrum({name}, {len(self)} px, {lo:.2f}-{hi:.2f} Å {self.medium}, "
                f"masked {self.masked_fraction:.1%})")

    def slice(self, wavelength_min: float, wavelength_max: float) -> Spectrum:
        """Pixels with wavelength_min <= λ <= wavelength_max (Å)."""
        keep = (self.wavelength >= wavelength_min) & (self.wavelength <= wavelength_max)
        if keep.sum() < 2:
            lo, hi = self.wavelength_range
            raise InvalidSpectrumError(
                f"slice({wavelength_min}, {wavelength_max}) keeps {int(keep.sum())} pixel(s) of a "
                f"spectrum covering {lo:.2f}-{hi:.2f} Å; choose a range inside it")
        return self.replace(wavelength=self.wavelength[keep], flux=self.flux[keep],
                            sigma=self.sigma[keep] if self.has_uncertainty else None,
                            mask=self.mask[keep])

    def with_mask(self, bad: np.ndarray) -> Spectrum:
        """A copy with more pixels masked (``bad`` True = bad); masks only grow."""
        return self.replace(mask=self.mask | np.asarray(bad, bool))

    def to_table(self):
        """An astropy Table with columns wavelength [Å], flux, sigma, mask, metadata in ``meta``."""
        from astropy import units as u
        from astropy.table import Table

        t = Table()
        t["wavelength"] = self.wavelength * u.AA
        t["flux"] = self.flux
        t["sigma"] = self.sigma
        t["mask"] = self.mask
        t.meta.update({"medium": self.medium, "flux_unit": self.flux_unit,
                       **{k: v for k, v in self.meta.as_dict().items() if v is not None}})
        return t

    def to_specutils(self):
        """A ``specutils.Spectrum`` (specutils >= 2) with StdDevUncertainty and mask."""
        from astropy import units as u
        from astropy.nddata import StdDevUncertainty
        from specutils import Spectrum as SpecutilsSpectrum

        unit = u.dimensionless_unscaled if self.flux_unit in ("normalized", "arbitrary") \
            else u.Unit(self.flux_unit)
        unc = StdDevUncertainty(np.where(np.isfinite(self.sigma), self.sigma, 0.0)) \
            if self.has_uncertainty else None
        return SpecutilsSpectrum(flux=self.flux * unit, spectral_axis=self.wavelength * u.AA,
                                 uncertainty=unc, mask=self.mask.copy(),
                                 meta={"medium": self.medium, **self.meta.as_dict()})

    @classmethod
    def from_specutils(cls, spec, medium: Medium | None = None) -> Spectrum:
        """Build from a ``specutils.Spectrum``; ``medium`` defaults to its ``meta['medium']``."""
        from astropy import units as u

        wave = spec.spectral_axis.to_value(u.AA, equivalencies=u.spectral())
        flux = np.asarray(spec.flux.value, dtype=float)
        if flux.ndim != 1:
            raise InvalidSpectrumError(f"from_specutils: expected 1D flux, got shape {flux.shape}")
        sigma = None
        if spec.uncertainty is not None:
            sigma = np.asarray(spec.uncertainty.represent_as(
                __import__("astropy.nddata", fromlist=["StdDevUncertainty"]).StdDevUncertainty
            ).array, dtype=float)
        mask = None if spec.mask is None else np.asarray(spec.mask, bool)
        meta = dict(spec.meta or {})
        med = medium or meta.pop("medium", None)
        if med is None:
            raise UnitsError("from_specutils: the air/vacuum frame is unknown; pass medium='air' "
                             "or medium='vacuum'")
        unit = str(spec.flux.unit) if spec.flux.unit != u.dimensionless_unscaled else "arbitrary"
        if sigma is not None and np.any(sigma == 0):
            sigma = np.where(sigma == 0, np.inf, sigma)
        return cls.from_arrays(wave, flux, sigma, mask=mask, mask_nonfinite=True, medium=med,
                               flux_unit=unit, meta=SpectrumMeta(
                                   object_name=meta.get("object_name"),
                                   instrument=meta.get("instrument"),
                                   source=meta.get("source")))


@dataclass(frozen=True, eq=False)
class EchelleSpectrum(_SpectrumBase):
    """An echelle spectrum: ``(n_orders, n_pixels)`` arrays, one wavelength row per order.

    order_numbers: (n_orders,) physical echelle order numbers when known (else 0..n-1).
    Orders are kept in the order given; each row must increase in wavelength.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray | None = None
    mask: np.ndarray | None = None
    medium: Medium = "air"
    meta: SpectrumMeta = field(default_factory=SpectrumMeta)
    flux_unit: str = "arbitrary"
    order_numbers: np.ndarray | None = None
    ivar: dataclasses.InitVar[np.ndarray | None] = None
    has_uncertainty: bool = field(init=False, default=False)

    def __post_init__(self, ivar: np.ndarray | None) -> None:
        wave = _as_angstrom(self.wavelength, "wavelength")
        flux = np.asarray(self.flux, dtype=float)
        if wave.ndim != 2:
            raise InvalidSpectrumError(
                f"EchelleSpectrum: wavelength must be 2D (orders, pixels), got shape {wave.shape}")
        known = self.sigma is not None or ivar is not None
        w, f, s, m = _validate_arrays(wave, flux, self.sigma, ivar, self.mask, "EchelleSpectrum")
        n_orders = w.shape[0]
        orders = np.arange(n_orders) if self.order_numbers is None else \
            np.asarray(self.order_numbers, dtype=int)
        if orders.shape != (n_orders,):
            raise InvalidSpectrumError(
                f"order_numbers has shape {orders.shape}, expected ({n_orders},)")
        object.__setattr__(self, "wavelength", w)
        object.__setattr__(self, "flux", f)
        object.__setattr__(self, "sigma", s)
        object.__setattr__(self, "mask", m)
        object.__setattr__(self, "order_numbers", _frozen(orders))
        object.__setattr__(self, "medium", _check_medium(self.medium))
        object.__setattr__(self, "has_uncertainty", known)

    @property
    def n_orders(self) -> int:
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        return self.flux.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.flux.shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.n_orders

    def __repr__(self) -> str:
        lo, hi = self.wavelength_range
        name = self.meta.object_name or "?"
        return (f"EchelleSpectrum({name}, {self.n_orders} orders x {self.n_pixels} px, "
                f"{lo:.2f}-{hi:.2f} Å {self.medium})")

    def order(self, i: int) -> Spectrum:
        """Order ``i`` (row index) as a 1D :class:`Spectrum`."""
        if not -self.n_orders <= i < self.n_orders:
            raise IndexError(f"order index {i} out of range for {self.n_orders} orders")
        return Spectrum(self.wavelength[i], self.flux[i],
                        self.sigma[i] if self.has_uncertainty else None, mask=self.mask[i],
                        medium=self.medium, flux_unit=self.flux_unit,
                        meta=self.meta.replace(extra={**self.meta.extra,
                                                      "order": int(self.order_numbers[i])}))

    @property
    def orders(self) -> list[Spectrum]:
        return [self.order(i) for i in range(self.n_orders)]

    def select_orders(self, indices: Sequence[int] | np.ndarray) -> EchelleSpectrum:
        """Keep the given row indices (or a boolean mask over orders)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            raise InvalidSpectrumError("select_orders: no orders selected")
        if np.any(idx >= self.n_orders) or np.any(idx < -self.n_orders):
            raise InvalidSpectrumError(
                f"select_orders: indices {idx.tolist()} outside 0..{self.n_orders - 1}")
        return self.replace(wavelength=self.wavelength[idx], flux=self.flux[idx],
                            sigma=self.sigma[idx] if self.has_uncertainty else None,
                            mask=self.mask[idx], order_numbers=self.order_numbers[idx])

    def slice(self, wavelength_min: float, wavelength_max: float,
              *, whole_orders: bool = False) -> EchelleSpectrum:
        """Orders overlapping [wavelength_min, wavelength_max] Å.

        By default pixels outside the range are masked (shapes stay rectangular); with
        ``whole_orders=True`` only orders lying entirely inside the range are kept.
        """
        lo, hi = self.wavelength[:, 0], self.wavelength[:, -1]
        keep = (lo >= wavelength_min) & (hi <= wavelength_max) if whole_orders else \
            (hi >= wavelength_min) & (lo <= wavelength_max)
        if not np.any(keep):
            a, b = self.wavelength_range
            raise InvalidSpectrumError(
                f"slice({wavelength_min}, {wavelength_max}): no order "
                f"{'inside' if whole_orders else 'overlaps'} that range; the spectrum covers "
                f"{a:.2f}-{b:.2f} Å")
        sub = self.select_orders(keep)
        outside = (sub.wavelength < wavelength_min) | (sub.wavelength > wavelength_max)
        return sub if not outside.any() else sub.replace(mask=sub.mask | outside)

    def to_table(self):
        """An astropy Table with one row per order (array columns)."""
        from astropy import units as u
        from astropy.table import Table

        t = Table()
        t["order"] = self.order_numbers
        t["wavelength"] = self.wavelength * u.AA
        t["flux"] = self.flux
        t["sigma"] = self.sigma
        t["mask"] = self.mask
        t.meta.update({"medium": self.medium, "flux_unit": self.flux_unit,
                       **{k: v for k, v in self.meta.as_dict().items() if v is not None}})
        return t

    def to_specutils(self) -> list:
        """One ``specutils.Spectrum`` per order."""
        return [o.to_specutils() for o in self.orders]

    @classmethod
    def from_orders(cls, orders: Sequence[Spectrum], order_numbers=None) -> EchelleSpectrum:
        """Stack equal-length 1D spectra (same medium) into an echelle spectrum."""
        if not orders:
            raise InvalidSpectrumError("from_orders: no orders given")
        n = {len(o) for o in orders}
        if len(n) != 1:
            raise InvalidSpectrumError(f"from_orders: orders have different lengths {sorted(n)}")
        media = {o.medium for o in orders}
        if len(media) != 1:
            raise InvalidSpectrumError("from_orders: orders mix air and vacuum wavelengths")
        known = all(o.has_uncertainty for o in orders)
        return cls(np.stack([o.wavelength for o in orders]), np.stack([o.flux for o in orders]),
                   np.stack([o.sigma for o in orders]) if known else None,
                   mask=np.stack([o.mask for o in orders]), medium=orders[0].medium,
                   meta=orders[0].meta, flux_unit=orders[0].flux_unit,
                   order_numbers=order_numbers)


# The `ivar` InitVar default shadows the property on the class; put the property back.
Spectrum.ivar = _SpectrumBase.ivar  # type: ignore[assignment,misc]
EchelleSpectrum.ivar = _SpectrumBase.ivar  # type: ignore[assignment,misc]
