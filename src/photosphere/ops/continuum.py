"""Continuum normalisation.

(a) Pseudo-continuum from a list of continuum pixels (Ness et al. 2015, ApJ 808, 16, §2.3): a
    low-order function fitted, weighted by the inverse variance, only through pixels known to
    sit on the continuum, separately on each detector chip (APOGEE: three chips, a second-order
    Chebyshev polynomial each) or echelle order. Pixels outside every chip get NaN.
(b) Upper envelope for spectra without such a list: iterative asymmetric σ-clipping, rejecting
    pixels more than ``k_low``·σ below the fit (absorption lines) or ``k_high``·σ above it
    (cosmic rays), σ being the robust (MAD) scatter of the kept residuals.

Both accept a Chebyshev polynomial (``kind="chebyshev"``, the default) or a least-squares
B-spline (``kind="spline"``, ``n_knots`` interior knots per chip, spline ``degree``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.polynomial import chebyshev
from scipy.interpolate import make_lsq_spline

from ..errors import FitError, InvalidSpectrumError
from ..spectrum import EchelleSpectrum, Spectrum

#: APOGEE detector chips (blue, green, red), Å in vacuum
APOGEE_CHIPS = ((15140.0, 15810.0), (15850.0, 16440.0), (16470.0, 16960.0))
_KINDS = ("chebyshev", "spline")


def _chip_slices(wavelength: np.ndarray, chips) -> list[tuple[np.ndarray, float, float]]:
    if chips is None:
        return [(np.ones(wavelength.size, bool), float(wavelength[0]), float(wavelength[-1]))]
    out = []
    for chip in chips:
        lo, hi = (float(c) for c in chip)
        if not lo < hi:
            raise InvalidSpectrumError(f"chip ({lo}, {hi}) must have λmin < λmax (Å)")
        inside = (wavelength >= lo) & (wavelength <= hi)
        if inside.any():
            out.append((inside, lo, hi))
    if not out:
        raise InvalidSpectrumError(
            f"no pixel of the spectrum ({wavelength[0]:.1f}-{wavelength[-1]:.1f} Å) falls in the "
            f"chips {list(chips)}; pass chips=None or chips covering the spectrum")
    return out


def _weighted_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_eval: np.ndarray, kind: str,
                  degree: int, n_knots: int) -> np.ndarray:
    """Weighted least-squares fit of y(x) (x in [-1, 1]), evaluated at ``x_eval``. 1D."""
    use = w > 0
    if kind == "chebyshev":
        if use.sum() < degree + 1:
            raise FitError(f"{int(use.sum())} usable pixel(s) for a degree-{degree} fit")
        a = chebyshev.chebvander(x[use], degree) * np.sqrt(w[use])[:, None]
        coef = np.linalg.lstsq(a, y[use] * np.sqrt(w[use]), rcond=None)[0]
        return chebyshev.chebval(x_eval, coef)
    inner = np.linspace(-1, 1, n_knots + 2)[1:-1]
    knots = np.concatenate([[-1.0] * (degree + 1), inner, [1.0] * (degree + 1)])
    try:
        spline = make_lsq_spline(x[use], y[use], knots, k=degree, w=np.sqrt(w[use]))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise FitError(f"spline fit failed ({exc}); use fewer knots or kind='chebyshev'") from None
    return spline(x_eval)


def _check_kind(kind: str, degree: int, n_knots: int) -> None:
    if kind not in _KINDS:
        raise InvalidSpectrumError(f"kind={kind!r}; use one of {_KINDS}")
    if int(degree) != degree or degree < 0 or (kind == "spline" and not 1 <= degree <= 5):
        raise InvalidSpectrumError(f"degree={degree} must be an integer >= 0 (1-5 for splines)")
    if kind == "spline" and n_knots < 0:
        raise InvalidSpectrumError(f"n_knots={n_knots} must be >= 0")


def _rows(wavelength, flux, ivar):
    wave = np.asarray(wavelength, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    if wave.ndim != 1 or f.shape[-1] != wave.size:
        raise InvalidSpectrumError(
            f"wavelength must be (n_pix,) and flux (..., n_pix); got {wave.shape} and {f.shape}")
    iv = np.ones_like(f) if ivar is None else np.broadcast_to(
        np.asarray(ivar, dtype=np.float64), f.shape)
    iv = np.where(np.isfinite(f) & np.isfinite(iv) & (iv > 0), iv, 0.0)
    return wave, f.reshape(-1, wave.size), iv.reshape(-1, wave.size), f.shape


def _continuum_mask(continuum_pixels, n_pix: int) -> np.ndarray:
    cp = np.asarray(continuum_pixels)
    if cp.dtype == bool:
        if cp.shape != (n_pix,):
            raise InvalidSpectrumError(
                f"continuum_pixels mask has shape {cp.shape}, expected ({n_pix},)")
        return cp
    if cp.ndim != 1 or not np.issubdtype(cp.dtype, np.integer):
        raise InvalidSpectrumError(
            "continuum_pixels must be a boolean mask (n_pix,) or an array of pixel indices")
    if cp.size and (cp.min() < -n_pix or cp.max() >= n_pix):
        raise InvalidSpectrumError(f"continuum_pixels indices outside 0..{n_pix - 1}")
    out = np.zeros(n_pix, bool)
    out[cp] = True
    return out


def fit_pseudo_continuum(wavelength, flux, ivar, continuum_pixels, chips=None,
                         kind: str = "chebyshev", degree: int = 2, n_knots: int = 3,
                         on_failure: str = "raise") -> np.ndarray:
    """Pseudo-continuum through the continuum pixels, fitted chip by chip (Ness+2015 §2.3).

    wavelength: (n_pix,) Å; flux, ivar: (..., n_pix) (ivar may be None = equal weights;
    ivar = 0 or non-finite flux excludes a pixel); continuum_pixels: bool mask (n_pix,) or pixel
    indices; chips: sequence of (λmin, λmax) Å, e.g. :data:`APOGEE_CHIPS`, or None (one piece).
    Returns the continuum (..., n_pix), NaN outside the chips. A chip with too few usable
    continuum pixels raises :class:`FitError`, or gives NaN there with ``on_failure="nan"``.
    """
    _check_kind(kind, degree, n_knots)
    if on_failure not in ("raise", "nan"):
        raise InvalidSpectrumError(f"on_failure={on_failure!r}; use 'raise' or 'nan'")
    wave, rows, iv, shape = _rows(wavelength, flux, ivar)
    cont_mask = _continuum_mask(continuum_pixels, wave.size)
    out = np.full(rows.shape, np.nan)
    for inside, lo, hi in _chip_slices(wave, chips):
        x = 2 * (wave[inside] - lo) / (hi - lo) - 1
        weights = iv[:, inside] * cont_mask[inside]
        for r in range(rows.shape[0]):
            try:
                out[r, inside] = _weighted_fit(x, rows[r, inside], weights[r], x, kind, degree,
                                               n_knots)
            except FitError as exc:
                if on_failure == "raise":
                    raise FitError(f"fit_pseudo_continuum: spectrum {r}, chip {lo:.0f}-{hi:.0f} "
                                   f"Å: {exc}; pass more continuum pixels, a lower degree, or "
                                   "on_failure='nan'") from None
    return out.reshape(shape)


def _noise_scale(y: np.ndarray) -> float:
    """White-noise σ of a row from second differences (DER_SNR noise, Stoehr et al. 2008)."""
    y = y[np.isfinite(y)]
    if y.size < 5:
        return 0.0
    return float(1.482602 / np.sqrt(6.0) * np.median(np.abs(2 * y[2:-2] - y[:-4] - y[4:])))


def fit_upper_envelope(wavelength, flux, ivar=None, chips=None, kind: str = "chebyshev",
                       degree: int = 3, n_knots: int = 3, k_low: float = 1.0,
                       k_high: float = 3.0, max_iter: int = 30) -> np.ndarray:
    """Continuum as the iteratively σ-clipped upper envelope of ``flux``.

    wavelength: (n_pix,) Å; flux, ivar: (..., n_pix). Each chip (or the whole row when chips is
    None) is fitted (weighted by ivar when given), pixels below the fit by > ``k_low``·σ or
    above by > ``k_high``·σ are dropped and the fit repeated until the kept set is stable or
    ``max_iter`` is reached. σ is the per-pixel 1/√ivar when ivar is given, else the white-noise
    level estimated from second differences of the flux (as in DER_SNR), so it does not shrink
    as pixels are clipped. With noise-only residuals the envelope settles ≈ 0.5σ above the true
    continuum for the default k_low = 1. Returns the continuum (..., n_pix) (NaN outside chips).
    """
    _check_kind(kind, degree, n_knots)
    if not (k_low > 0 and k_high > 0 and max_iter >= 1):
        raise InvalidSpectrumError(
            f"need k_low > 0, k_high > 0, max_iter >= 1; got {k_low}, {k_high}, {max_iter}")
    wave, rows, iv, shape = _rows(wavelength, flux, ivar)
    out = np.full(rows.shape, np.nan)
    for inside, lo, hi in _chip_slices(wave, chips):
        x = 2 * (wave[inside] - lo) / (hi - lo) - 1
        for r in range(rows.shape[0]):
            y, w = rows[r, inside], iv[r, inside]
            base = w > 0
            if ivar is None:
                sigma = np.full(y.shape, _noise_scale(y[base]))
            else:
                sigma = 1 / np.sqrt(np.where(base, w, 1.0))
            keep = base
            fit = np.zeros_like(y)
            for _ in range(max_iter):
                try:
                    fit = _weighted_fit(x, y, np.where(keep, w, 0.0), x, kind, degree, n_knots)
                except FitError as exc:
                    raise FitError(f"fit_upper_envelope: spectrum {r}, chip {lo:.0f}-{hi:.0f} "
                                   f"Å: {exc}; lower the degree or raise k_low") from None
                resid = y - fit
                new = base & (resid > -k_low * sigma) & (resid < k_high * sigma)
                if np.array_equal(new, keep) or new.sum() < degree + 1:
                    break
                keep = new
            out[r, inside] = fit
    return out.reshape(shape)


def _normalised(spectrum, continuum: np.ndarray):
    bad = ~np.isfinite(continuum) | (continuum <= 0)
    safe = np.where(bad, 1.0, continuum)
    sigma = spectrum.sigma / safe if spectrum.has_uncertainty else None
    return spectrum.replace(flux=np.where(bad, 0.0, spectrum.flux / safe), sigma=sigma,
                            mask=spectrum.mask | bad, flux_unit="normalized")


def _spectrum_ivar(spectrum) -> np.ndarray:
    return spectrum.ivar if spectrum.has_uncertainty else (~spectrum.mask).astype(float)


def _default_chips(spectrum: Spectrum):
    lo, hi = spectrum.wavelength_range
    return APOGEE_CHIPS if (15000.0 <= lo and hi <= 17100.0) else None


def normalize_pseudo_continuum(spectrum: Spectrum | EchelleSpectrum, continuum_pixels,
                               chips: Sequence[tuple[float, float]] | None = None,
                               kind: str = "chebyshev", degree: int = 2,
                               **kwargs) -> Spectrum | EchelleSpectrum:
    """``spectrum`` divided by its pseudo-continuum (see :func:`fit_pseudo_continuum`).

    Spectrum: continuum_pixels (n_pix,) mask or indices; chips default to :data:`APOGEE_CHIPS`
    for spectra inside 15000-17100 Å, else the whole spectrum is one piece. EchelleSpectrum:
    continuum_pixels a (n_orders, n_pixels) mask; each order is one piece. σ is divided too;
    pixels without a continuum (gaps between chips) are masked. flux_unit becomes "normalized".
    """
    if isinstance(spectrum, EchelleSpectrum):
        cp = np.asarray(continuum_pixels, dtype=bool)
        if cp.shape != spectrum.shape:
            raise InvalidSpectrumError(
                f"continuum_pixels for an echelle spectrum must be a mask of shape "
                f"{spectrum.shape}, got {cp.shape}")
        ivar = _spectrum_ivar(spectrum)
        cont = np.stack([fit_pseudo_continuum(w, f, iv, c, None, kind, degree, **kwargs)
                         for w, f, iv, c in zip(spectrum.wavelength, spectrum.flux, ivar, cp,
                                                strict=True)])
    else:
        chips = _default_chips(spectrum) if chips is None else chips
        cont = fit_pseudo_continuum(spectrum.wavelength, spectrum.flux, _spectrum_ivar(spectrum),
                                    continuum_pixels, chips, kind, degree, **kwargs)
    return _normalised(spectrum, cont)


def normalize_upper_envelope(spectrum: Spectrum | EchelleSpectrum, chips=None,
                             **kwargs) -> Spectrum | EchelleSpectrum:
    """``spectrum`` divided by its σ-clipped upper envelope (:func:`fit_upper_envelope`),
    order by order for echelle spectra; keyword arguments go to :func:`fit_upper_envelope`."""
    ivar = _spectrum_ivar(spectrum)
    if isinstance(spectrum, EchelleSpectrum):
        cont = np.stack([fit_upper_envelope(w, f, iv, None, **kwargs)
                         for w, f, iv in zip(spectrum.wavelength, spectrum.flux, ivar,
                                             strict=True)])
    else:
        cont = fit_upper_envelope(spectrum.wavelength, spectrum.flux, ivar, chips, **kwargs)
    return _normalised(spectrum, cont)
