"""Real spectra in the networks' input format: the (n_orders, n_pixels) image of the layout the
model was trained on (8 × 4096 for HARPS-N 5050–5350 Å).

* a 1D spectrum (e.g. the UVES Sun) is shifted to the rest frame and rebinned (flux-conserving,
  ``ops.resample``) onto the layout's orders;
* an échelle spectrum in the model's own layout is used as it is;
* any other échelle spectrum (e.g. a HARPS e2ds frame, deblazed) contributes the orders that
  overlap the layout: each is normalised to its upper envelope, the orders are merged on a
  log-uniform grid (averaged where they overlap) and then rebinned like a 1D spectrum.

Masked pixels and layout pixels the spectrum does not cover (e.g. the HARPS CCD gap at
5304–5337 Å) are filled by linear interpolation or with the continuum (1); more than
``max_filled`` of them is an error. Finally every order goes through the same
:func:`~photosphere.nn.data.normalise_orders` as the training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CoverageError, InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum
from .data import C_KMS, normalise_orders


@dataclass(frozen=True)
class PreparedImage:
    image: np.ndarray  # (n_orders, n_pixels) normalised flux, the network input
    filled_fraction: float  # fraction of layout pixels filled (masked or not covered)
    orders_used: tuple[int, ...]  # input orders that contributed (échelle input)
    windows_used: tuple[int, ...] = ()  # layout windows read (by_window); the rest is continuum


def _t(values) -> torch.Tensor:
    """A float64 tensor owning a copy (inputs may be read-only frozen arrays)."""
    return torch.from_numpy(np.array(values, dtype=float))


def _rest_wavelength(wavelength: np.ndarray, rv: float) -> np.ndarray:
    beta = rv / C_KMS
    return wavelength / np.sqrt((1 + beta) / (1 - beta))


def _to_medium(wavelength: np.ndarray, medium: str, target: str) -> np.ndarray:
    if medium == target:
        return wavelength
    from ..ops.airvac import air_to_vacuum, vacuum_to_air

    return np.asarray(air_to_vacuum(wavelength) if target == "vacuum"
                      else vacuum_to_air(wavelength), dtype=float)


def _fill_masked(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Linear interpolation across masked pixels of one row (edges: nearest good value)."""
    if not mask.any():
        return flux
    good = ~mask
    if good.sum() < 2:
        raise InvalidSpectrumError("a spectrum order has fewer than 2 unmasked pixels")
    x = np.arange(len(flux))
    return np.where(mask, np.interp(x, x[good], flux[good]), flux)


def _rebin_row(wave: np.ndarray, flux: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    from ..ops.resample import rebin

    return rebin(_t(wave), _t(flux),
                 _t(wave_out)).numpy()


def _merge_orders(spectrum: EchelleSpectrum, lo: float, hi: float, rv: float,
                  target_medium: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Normalised, merged 1D spectrum (wavelength, flux with NaN where uncovered) of the orders
    overlapping [lo, hi] Å."""
    used = []
    rows = []
    for i in range(spectrum.n_orders if hasattr(spectrum, "n_orders") else len(spectrum.flux)):
        w = _to_medium(_rest_wavelength(spectrum.wavelength[i], rv), spectrum.medium,
                       target_medium)
        if w[-1] < lo or w[0] > hi:
            continue
        mask = spectrum.mask[i] | ~np.isfinite(spectrum.flux[i]) | (spectrum.flux[i] <= 0)
        flux = _fill_masked(np.array(spectrum.flux[i], dtype=float), mask)
        norm = normalise_orders(_t(flux)[None]).numpy()[0]
        rows.append((w, norm, mask))
        used.append(int(spectrum.order_numbers[i]))
    if not rows:
        raise CoverageError(
            f"no order of the échelle spectrum overlaps {lo:.0f}-{hi:.0f} Å (it covers "
            f"{spectrum.wavelength.min():.0f}-{spectrum.wavelength.max():.0f} Å); the model "
            "needs that range")
    step = np.min([np.median(np.diff(np.log(w))) for w, _, _ in rows])
    grid = np.exp(np.arange(np.log(lo), np.log(hi), step))
    stack = np.full((len(rows), len(grid)), np.nan)
    for k, (w, f, m) in enumerate(rows):
        f = np.where(m, np.nan, f)
        inside = (grid > w[0]) & (grid < w[-1])
        stack[k, inside] = np.interp(grid[inside], w, f)
    with np.errstate(all="ignore"):
        count = np.sum(np.isfinite(stack), axis=0)
        merged = np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)
    return grid, merged, tuple(used)


def prepare_image(spectrum: Spectrum | EchelleSpectrum, layout_wavelength: np.ndarray,
                  layout_medium: str = "air", *, rv: float = 0.0,
                  max_filled: float = 0.2, by_window: bool = False) -> PreparedImage:
    """The network input for ``spectrum`` on the layout ``layout_wavelength`` (n_orders, n_pix) Å.

    rv: km/s of the star in the frame of the spectrum's wavelengths (removed before rebinning);
    max_filled: largest tolerated fraction of layout pixels that have to be filled;
    by_window: for a model trained to read some of its windows (``window_dropout``): a window
    (:func:`~photosphere.nn.layouts.layout_groups`) with more than ``max_filled`` of its pixels
    filled is set to the continuum as a whole and not read; at least
    :data:`~photosphere.nn.data.MIN_WINDOWS_KEPT` windows must be read; pixels of zero or
    negative flux (the CCD gap of HARPS s1d files) are then masked too. (A model without
    windows reads them as they are: the HARPS-N default, trained without gaps, filled with the
    continuum there reads the HARPS Sun's log g 0.22 dex high and Procyon's 0.56, against
    +0.02 and +0.14 unmasked, and is flagged out of distribution either way; docs/nn.md.)
    """
    layout = np.asarray(layout_wavelength, dtype=float)
    if layout.ndim != 2:
        raise InvalidSpectrumError(f"layout wavelength must be (n_orders, n_pixels), got "
                                   f"shape {layout.shape}")
    margin = 1 + 60.0 / C_KMS
    lo, hi = layout.min() / margin, layout.max() * margin
    used: tuple[int, ...] = ()
    if isinstance(spectrum, EchelleSpectrum):
        if (spectrum.flux.shape == layout.shape and rv == 0
                and np.allclose(spectrum.wavelength, layout, atol=0.02)):
            flux = np.stack([_fill_masked(np.array(f, dtype=float), m)
                             for f, m in zip(spectrum.flux, spectrum.mask, strict=True)])
            image = normalise_orders(_t(flux)).numpy()
            return PreparedImage(image.astype(np.float32), float(spectrum.mask.mean()),
                                 tuple(int(o) for o in spectrum.order_numbers))
        wave, flux, used = _merge_orders(spectrum, lo, hi, rv, layout_medium)
        bad = ~np.isfinite(flux)
    elif isinstance(spectrum, Spectrum):
        wave = _to_medium(_rest_wavelength(spectrum.wavelength, rv), spectrum.medium,
                          layout_medium)
        flux = np.array(spectrum.flux, dtype=float)
        bad = spectrum.mask | ~np.isfinite(flux)
        if by_window:  # e.g. the HARPS s1d CCD gap, read as continuum by such a model
            bad = bad | (flux <= 0)
    else:
        raise InvalidSpectrumError(f"expected a Spectrum or EchelleSpectrum, got "
                                   f"{type(spectrum).__name__}")
    covered = _sampled(wave, layout)
    good_flux = _fill_masked(np.where(bad, 0.0, flux), bad)
    image = np.stack([_rebin_row(wave, good_flux, row) for row in layout])  # (n_orders, n_pix)
    # layout pixels near masked/uncovered input pixels are filled with the continuum
    bad_frac = np.stack([_rebin_row(wave, bad.astype(float), row) for row in layout])
    filled = ~covered | ~np.isfinite(image) | (np.nan_to_num(bad_frac, nan=1.0) > 0.5)
    windows: tuple[int, ...] = ()
    if by_window:
        filled, windows = _unread_windows(filled, layout, max_filled, wave)
    fraction = float(filled.mean())
    if not by_window and fraction > max_filled:
        raise CoverageError(
            f"{fraction:.1%} of the model's layout pixels ({layout.min():.1f}-"
            f"{layout.max():.1f} Å) are masked or not covered by the spectrum "
            f"({wave[0]:.1f}-{wave[-1]:.1f} Å); at most {max_filled:.0%} can be filled. "
            "Pass a spectrum covering the layout (or raise max_filled)")
    for o in range(len(image)):  # placeholders at the order's median keep the fit unbiased
        keep = ~filled[o]
        image[o] = np.where(keep, image[o], np.median(image[o, keep]) if keep.any() else 1.0)
    image = np.where(filled, 1.0, normalise_orders(_t(image)).numpy())
    return PreparedImage(image.astype(np.float32), fraction, used, windows)


#: a step between two input pixels this many times the median step is a gap in the coverage
#: (finer than ``grids.default_model.GAP_STEPS``, which counts the windows a spectrum covers:
#: a layout pixel is interpolated only between input pixels this close)
GAP_STEPS = 10.0


def _sampled(wave: np.ndarray, layout: np.ndarray) -> np.ndarray:
    """(n_orders, n_pix) True where a layout pixel lies between two input pixels (``wave``,
    increasing, Å) no more than :data:`GAP_STEPS` median steps apart: inside the spectrum's
    range and not in a gap of its sampling (e.g. a spectrum cut into pieces around lines)."""
    wave = np.asarray(wave, dtype=float)
    inside = (layout >= wave[0]) & (layout <= wave[-1])
    if len(wave) < 2:
        return inside
    step = np.diff(wave)
    right = np.clip(np.searchsorted(wave, layout), 1, len(wave) - 1)
    return inside & (step[right - 1] <= GAP_STEPS * np.median(step))


def _unread_windows(filled: np.ndarray, layout: np.ndarray, max_filled: float,
                    wave: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``filled`` with every window that is more than ``max_filled`` filled filled as a whole;
    the windows read. Raises when fewer than MIN_WINDOWS_KEPT are left."""
    from .data import MIN_WINDOWS_KEPT
    from .layouts import layout_groups

    groups = layout_groups(layout)
    read = []
    filled = filled.copy()
    for g in range(int(groups.max()) + 1):
        rows = groups == g
        if filled[rows].mean() > max_filled:
            filled[rows] = True
        else:
            read.append(g)
    if len(read) < min(MIN_WINDOWS_KEPT, int(groups.max()) + 1):
        spans = ", ".join(f"{layout[groups == g].min():.0f}-{layout[groups == g].max():.0f}"
                          for g in range(int(groups.max()) + 1))
        raise CoverageError(
            f"the spectrum ({wave[0]:.1f}-{wave[-1]:.1f} Å) covers {len(read)} of the model's "
            f"windows ({spans} Å) with at most {max_filled:.0%} of their pixels masked or "
            f"missing; the model needs {MIN_WINDOWS_KEPT}")
    return filled, tuple(read)
