"""Echelle formatting: cut a 1D spectrum into orders × pixels following an order layout.

An :class:`OrderLayout` holds the wavelength of every pixel of every order, read from a real
wavelength file (e.g. a HARPS ``*_wave_A.fits``, (72, 4096) air wavelengths) or built from an
instrument description (constant velocity step, given range, number of orders and overlap).
:func:`format_echelle` resamples a 1D spectrum onto it (flux-conserving), then multiplies each
order by an optional blaze function and an optional linear slant, as in the synthetic HARPS-N
images of Hüttel & Clemmensen (8 orders × 4096 px over 5050-5350 Å, with a linear slant added
across each order).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidSpectrumError, MissingFileError
from ..spectrum import MEDIA, EchelleSpectrum, Spectrum
from ._common import C_KMS
from .airvac import air_to_vacuum, vacuum_to_air
from .resample import rebin_with_uncertainty


@dataclass(frozen=True, eq=False)
class OrderLayout:
    """Wavelengths of an echelle format.

    wavelength: (n_orders, n_pixels) Å, each row strictly increasing; medium: "air"/"vacuum";
    order_numbers: (n_orders,) physical order numbers (0..n-1 when unknown); name: a label;
    resolving_power: nominal R when known (informative).
    """

    wavelength: np.ndarray
    medium: str = "air"
    order_numbers: np.ndarray | None = None
    name: str = "layout"
    resolving_power: float | None = None

    def __post_init__(self) -> None:
        wave = np.array(self.wavelength, dtype=np.float64)
        if wave.ndim != 2 or wave.shape[1] < 2:
            raise InvalidSpectrumError(
                f"OrderLayout: wavelength must be (n_orders, n_pixels >= 2), got {wave.shape}")
        if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
            raise InvalidSpectrumError("OrderLayout: wavelengths must be finite and positive (Å)")
        if np.any(np.diff(wave, axis=1) <= 0):
            bad = int(np.argwhere(np.diff(wave, axis=1) <= 0)[0, 0])
            raise InvalidSpectrumError(
                f"OrderLayout: order row {bad} is not strictly increasing in wavelength")
        if self.medium not in MEDIA:
            raise InvalidSpectrumError(
                f"OrderLayout: medium={self.medium!r}; use 'air' or 'vacuum'")
        orders = np.arange(wave.shape[0]) if self.order_numbers is None else np.array(
            self.order_numbers, dtype=int)
        if orders.shape != (wave.shape[0],):
            raise InvalidSpectrumError(
                f"OrderLayout: order_numbers shape {orders.shape}, expected ({wave.shape[0]},)")
        wave.setflags(write=False)
        orders.setflags(write=False)
        object.__setattr__(self, "wavelength", wave)
        object.__setattr__(self, "order_numbers", orders)

    @property
    def n_orders(self) -> int:
        return self.wavelength.shape[0]

    @property
    def n_pixels(self) -> int:
        return self.wavelength.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.wavelength.shape  # type: ignore[return-value]

    @property
    def wavelength_range(self) -> tuple[float, float]:
        return float(self.wavelength.min()), float(self.wavelength.max())

    @classmethod
    def from_wavelength_file(cls, path, medium: str = "air", name: str | None = None,
                             order_numbers=None, hdu: int | str = 0) -> OrderLayout:
        """Layout from a 2D wavelength image (FITS ``hdu``, or ``.npy``), Å.

        HARPS/HARPS-N DRS ``*_wave_A.fits`` files hold (n_orders, 4096) air wavelengths in the
        primary HDU. Orders are sorted by wavelength.
        """
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"wavelength file {path} does not exist")
        try:
            if path.suffix == ".npy":
                data = np.load(path)
            else:
                from astropy.io import fits
                from astropy.utils.exceptions import AstropyWarning

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", AstropyWarning)
                    with fits.open(path, memmap=False) as hdul:
                        data = None if hdul[hdu].data is None else np.array(hdul[hdu].data)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            raise FileFormatError(f"cannot read a wavelength image from {path}: {exc}") from None
        if data is None or data.ndim != 2:
            raise FileFormatError(
                f"{path} HDU {hdu} holds {None if data is None else data.shape}, not a 2D "
                "(n_orders, n_pixels) wavelength image; pass hdu=... or the right file")
        data = data.astype(np.float64)
        order = np.argsort(data[:, data.shape[1] // 2])
        numbers = None if order_numbers is None else np.asarray(order_numbers)[order]
        return cls(data[order], medium=medium, order_numbers=numbers, name=name or path.name)

    @classmethod
    def from_instrument(cls, wavelength_min: float, wavelength_max: float, n_orders: int,
                        n_pixels: int | None = None, overlap: float = 0.0,
                        resolving_power: float | None = None, sampling: float = 3.0,
                        medium: str = "air", name: str = "instrument",
                        order_numbers=None) -> OrderLayout:
        """Layout of ``n_orders`` orders with one constant velocity step covering the range.

        wavelength_min/max: Å, the first pixel of the first order and the last of the last;
        overlap: fraction of an order's span shared with the next (free spectral range =
        (1 − overlap) × order span); n_pixels per order, or None to derive it from
        ``resolving_power`` R and ``sampling`` pixels per resolution element (step c/R/sampling).
        """
        if not 0 < wavelength_min < wavelength_max:
            raise InvalidSpectrumError(
                f"from_instrument: need 0 < wavelength_min < wavelength_max, got "
                f"{wavelength_min}, {wavelength_max}")
        if int(n_orders) != n_orders or n_orders < 1:
            raise InvalidSpectrumError(f"from_instrument: n_orders={n_orders} must be >= 1")
        if not 0 <= overlap < 1:
            raise InvalidSpectrumError(f"from_instrument: overlap={overlap} must be in [0, 1)")
        span = math.log(wavelength_max / wavelength_min) / (n_orders - (n_orders - 1) * overlap)
        if n_pixels is None:
            if resolving_power is None or not resolving_power > 0 or not sampling > 0:
                raise InvalidSpectrumError(
                    "from_instrument: pass n_pixels, or resolving_power (> 0) and sampling")
            n_pixels = round(span * resolving_power * sampling) + 1
        if int(n_pixels) != n_pixels or n_pixels < 2:
            raise InvalidSpectrumError(f"from_instrument: n_pixels={n_pixels} must be >= 2")
        starts = math.log(wavelength_min) + np.arange(n_orders) * span * (1 - overlap)
        steps = np.arange(n_pixels) * span / (n_pixels - 1)
        wave = np.exp(starts[:, None] + steps[None, :])
        return cls(wave, medium=medium, order_numbers=order_numbers, name=name,
                   resolving_power=resolving_power)

    def velocity_step(self) -> np.ndarray:
        """Mean velocity step per pixel of each order, (n_orders,) km/s."""
        return np.mean(np.diff(np.log(self.wavelength), axis=1), axis=1) * C_KMS


def HARPSN_5050_5350(n_pixels: int = 4096, overlap: float = 0.0) -> OrderLayout:
    """HARPS-N-like layout: 8 orders × 4096 px covering 5050-5350 Å (air), R = 115 000.

    The 8-order, 4096-pixel window of Hüttel & Clemmensen; orders are contiguous (``overlap=0``)
    with one constant velocity step (≈ 0.53 km/s, ≈ 4.9 px per resolution element).
    """
    return OrderLayout.from_instrument(5050.0, 5350.0, 8, n_pixels, overlap=overlap,
                                       resolving_power=115_000.0, medium="air",
                                       name="HARPS-N 5050-5350 Å (8 orders)")


def random_slant(n_orders: int, rng=None, max_slope: float = 0.1) -> np.ndarray:
    """Random slant parameters (n_orders, 2): offset 1, slope uniform in ±``max_slope``."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return np.stack([np.ones(n_orders), gen.uniform(-max_slope, max_slope, n_orders)], axis=1)


def _order_factor(layout: OrderLayout, slant, blaze) -> np.ndarray:
    factor = np.ones(layout.shape)
    if blaze is not None:
        b = np.asarray(blaze, dtype=np.float64)
        if b.shape != layout.shape or not np.all(np.isfinite(b)):
            raise InvalidSpectrumError(
                f"blaze must be finite with shape {layout.shape} (orders, pixels), got {b.shape}")
        factor = factor * b
    if slant is not None:
        s = np.asarray(slant, dtype=np.float64)
        if s.shape != (layout.n_orders, 2) or not np.all(np.isfinite(s)):
            raise InvalidSpectrumError(
                f"slant must be finite with shape ({layout.n_orders}, 2): per order (value at "
                f"the order centre, slope per half order), got {s.shape}")
        x = np.linspace(-1.0, 1.0, layout.n_pixels)
        factor = factor * (s[:, :1] + s[:, 1:] * x[None, :])
    return factor


def format_echelle(spectrum: Spectrum, layout: OrderLayout, slant=None,
                   blaze=None) -> EchelleSpectrum:
    """Cut ``spectrum`` into the orders of ``layout`` (flux-conserving resampling).

    Wavelengths are converted to the layout's medium when they differ. Each order is then
    multiplied by ``blaze`` (n_orders, n_pixels), if given, and by the linear slant
    ``slant[k, 0] + slant[k, 1] · x`` with x from −1 (first pixel) to +1 (last pixel), if given
    ((1, 0) leaves an order unchanged). σ is propagated and scaled alike; layout pixels outside
    the spectrum are masked.
    """
    if not isinstance(spectrum, Spectrum):
        raise InvalidSpectrumError("format_echelle: pass a 1D Spectrum")
    if not isinstance(layout, OrderLayout):
        raise InvalidSpectrumError("format_echelle: layout must be an OrderLayout")
    wave = spectrum.wavelength
    if spectrum.medium != layout.medium:
        wave = air_to_vacuum(wave) if layout.medium == "vacuum" else vacuum_to_air(wave)
    lo, hi = layout.wavelength_range
    if wave[-1] < lo or wave[0] > hi:
        raise InvalidSpectrumError(
            f"format_echelle: the spectrum ({wave[0]:.1f}-{wave[-1]:.1f} Å {layout.medium}) does "
            f"not overlap the layout {layout.name!r} ({lo:.1f}-{hi:.1f} Å)")
    factor = _order_factor(layout, slant, blaze)
    sigma = spectrum.sigma if spectrum.has_uncertainty else np.zeros_like(spectrum.flux)
    flux, sig, mask = rebin_with_uncertainty(wave, spectrum.flux, sigma, spectrum.mask,
                                             layout.wavelength)
    flux_np = flux.numpy() * factor
    sig_np = sig.numpy() * np.abs(factor) if spectrum.has_uncertainty else None
    meta = spectrum.meta.replace(extra={**spectrum.meta.extra, "layout": layout.name})
    return EchelleSpectrum(layout.wavelength, flux_np, sig_np, mask=mask.numpy(),
                           medium=layout.medium, meta=meta, flux_unit=spectrum.flux_unit,
                           order_numbers=layout.order_numbers)
