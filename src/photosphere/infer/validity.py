"""Is this a star at all? The gate in front of every engine, and the warnings behind it.

:func:`check_spectrum` refuses, with an :class:`~photosphere.errors.InvalidSpectrumError` naming
the problem, spectra that no fit or network can turn into labels: flux that is zero, negative
or flat, fewer than :data:`MIN_PIXELS` usable pixels, S/N below :data:`MIN_SNR`, flux that dips
below its continuum no more than its own noise does (no stellar lines: a noise file, a blank
exposure, a smooth ramp), a telluric transmission model (TAPAS, TelFit) instead of a star, and
a header naming an instrument whose wavelength coverage the data do not overlap (the header is
wrong, so the wavelength frame it implies is suspect too).

:func:`result_warnings` lists what makes a finished fit untrustworthy: labels at a bound of the
model (the answer is the edge of the grid, not the star) and a model that misses the data by
more than :data:`MISMATCH_FLAG` beyond the noise; :func:`label_warnings` a network's labels
outside its training box. The CLI prints them on stderr and exits 3 unless ``--allow-flagged``
(docs/errors.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np

from ..errors import InvalidSpectrumError

#: Fewest usable pixels a spectrum needs: labels, RV, vsini and a continuum per order are fitted.
MIN_PIXELS = 100
#: Lowest median S/N per pixel that any of our models can use.
MIN_SNR = 3.0
#: Line depth / noise (:func:`line_contrast`) below which a spectrum shows no lines: white noise
#: gives 1.0 ± 0.1 over a few hundred pixels.
MIN_LINE_CONTRAST = 1.4
#: Largest fraction of non-positive pixels (sky-subtracted line cores may dip below zero).
MAX_NONPOSITIVE = 0.2
#: Model mismatch (rms of the residuals beyond the noise, as a fraction of the model flux; see
#: :func:`model_mismatch`) above which a fit is flagged: the model does not describe the data.
#: χ²_red alone cannot say it: the UVES Sun at S/N ~400 gives χ²_red 222 with the embedded grid,
#: a 3-4 % mismatch of a star the grid describes; pure noise fitted as a star gives 100 % and more.
MISMATCH_FLAG = 0.10
#: χ²_red above which a fit without data/model segments is flagged.
CHI2_FLAG = 100.0

#: Wavelength coverage (Å, generous) of instruments named in headers (INSTRUME).
INSTRUMENT_RANGES = {
    "APOGEE": (15000.0, 17100.0),
    "HPF": (8000.0, 13000.0),
    "IGRINS": (14000.0, 25500.0),
    "HARPS": (3700.0, 7000.0),
    "HARPS-N": (3750.0, 7000.0),
    "HARPN": (3750.0, 7000.0),
    "ESPRESSO": (3700.0, 7900.0),
    "TRES": (3800.0, 9200.0),
    "UVES": (2900.0, 11000.0),
    "FEROS": (3500.0, 9300.0),
}


def _rows(spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wavelength, flux, good) as (n_orders, n_pixels) arrays; good = unmasked and finite."""
    wave = np.atleast_2d(np.asarray(spectrum.wavelength, float))
    flux = np.atleast_2d(np.asarray(spectrum.flux, float))
    good = ~np.atleast_2d(np.asarray(spectrum.mask, bool)) & np.isfinite(flux) & np.isfinite(wave)
    return wave, flux, good


def _der_noise(f: np.ndarray) -> float:
    """DER_SNR noise estimate of one row of good pixels (Stoehr et al. 2008)."""
    if f.size < 5:
        return float("nan")
    return float(1.482602 / math.sqrt(6.0) * np.median(np.abs(2.0 * f[2:-2] - f[:-4] - f[4:])))


def _order_contrast(w: np.ndarray, f: np.ndarray) -> float:
    """:func:`line_contrast` of one order's good pixels (NaN when it cannot be measured)."""
    # absurd inputs (1e300 flux, a handful of distinct wavelengths) must give a number, not a
    # RuntimeWarning or a RankWarning
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = _order_contrast_unchecked(w, f)
    return value if not math.isnan(value) else float("nan")


def _order_contrast_unchecked(w: np.ndarray, f: np.ndarray) -> float:
    level = np.median(f)
    if f.size < 20 or not level > 0:
        return float("nan")
    f = f / level
    x = (w - w.min()) / max(float(np.ptp(w)), 1e-300) * 2.0 - 1.0
    keep = np.ones(f.size, bool)
    for _ in range(3):  # clip lines and cosmic rays out of the trend, both ways
        coef = np.polynomial.chebyshev.chebfit(x[keep], f[keep], 3)
        r = f - np.polynomial.chebyshev.chebval(x, coef)
        mad = 1.4826 * float(np.median(np.abs(r[keep] - np.median(r[keep]))))
        new = np.abs(r - np.median(r[keep])) <= 4.0 * mad
        if mad == 0.0 or new.sum() < f.size // 2:
            break
        keep = new
    depth = float(np.median(r) - np.percentile(r, 2.0))
    if not depth > 1e-9:
        return 0.0
    noise = 2.054 * _der_noise(f)
    return depth / noise if noise > 0 else float("inf")


def line_contrast(spectrum) -> float:
    """How far the flux dips below a smooth continuum, in units of its own noise: the depth of
    the 2nd percentile below the median of (flux / smooth cubic trend) over the 2.054 σ that
    Gaussian noise alone gives (σ from DER_SNR). Echelle: the 75th percentile over orders of
    >= 100 good pixels (a star shows lines in most orders; blue orders may drown in noise).

    ≈ 1 for noise (cosmic-ray spikes, which go up, do not count), 0 for a smooth ramp, well
    above 1 for a star's absorption lines; inf for noise-free data with lines; NaN when
    nothing can be measured.
    """
    wave, flux, good = _rows(spectrum)
    orders = [(w[g], f[g]) for w, f, g in zip(wave, flux, good, strict=True)]
    big = [o for o in orders if o[0].size >= 100] or orders
    values = np.array([_order_contrast(w, f) for w, f in big])
    values = values[~np.isnan(values)]
    # "higher": no interpolation, so noise-free orders (inf) give inf, not inf - inf
    return float(np.percentile(values, 75, method="higher")) if values.size else float("nan")


def check_instrument(spectrum, source: str = "") -> None:
    """Refuse a spectrum whose header's instrument cannot have recorded its wavelengths."""
    name = str(spectrum.meta.instrument or "").strip().upper()
    if name not in INSTRUMENT_RANGES:
        return
    lo, hi = INSTRUMENT_RANGES[name]
    wave, _, good = _rows(spectrum)
    w = wave[good]
    if w.size == 0:
        return
    inside = np.mean((w >= lo) & (w <= hi))
    if inside < 0.5:
        what = f"{source}: " if source else ""
        raise InvalidSpectrumError(
            f"{what}the header names the instrument {spectrum.meta.instrument!r} "
            f"({lo:.0f}-{hi:.0f} Å) but the wavelengths span {w.min():.0f}-{w.max():.0f} Å; "
            "the header is wrong for this file, so the wavelength frame it implies is too. "
            "Fix INSTRUME in the header (or write the spectrum as a plain table stating its "
            "medium)")


def check_spectrum(spectrum, source: str = "", *, min_pixels: int = MIN_PIXELS,
                   min_snr: float = MIN_SNR) -> None:
    """Raise :class:`InvalidSpectrumError` unless ``spectrum`` can be a star's spectrum.

    spectrum: a Spectrum or EchelleSpectrum (σ optional: the S/N is then estimated from the
    flux); source: the file name for the message; min_pixels, min_snr: what the model needs.
    """
    what = f"{source}: " if source else ""
    product = str(spectrum.meta.extra.get("product", ""))
    if getattr(spectrum, "flux_unit", None) == "transmission" or "transmission" in product:
        raise InvalidSpectrumError(
            f"{what}this is a telluric transmission model ({product or 'transmission'}), not a "
            "star's spectrum; pass the star's spectrum (a transmission file is for the telluric "
            "part of the model)")
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 flux: a message, not a warning
        _check_values(spectrum, what, min_pixels, min_snr)
    check_instrument(spectrum, source)


def _check_values(spectrum, what: str, min_pixels: int, min_snr: float) -> None:
    _, flux, good = _rows(spectrum)
    n_good = int(good.sum())
    if n_good < min_pixels:
        raise InvalidSpectrumError(
            f"{what}only {n_good} usable pixel(s); at least {min_pixels} are needed to fit the "
            "labels with RV, vsini and the continuum; pass a longer spectrum (or a wider "
            "--wavelength-range)")
    f = flux[good]
    level = float(np.median(f))
    if not level > 0:
        raise InvalidSpectrumError(
            f"{what}the median flux is {level:g}: a star's flux is positive; this file holds "
            "an empty, zero or sign-flipped spectrum")
    nonpositive = float(np.mean(f <= 0))
    if nonpositive > MAX_NONPOSITIVE:
        raise InvalidSpectrumError(
            f"{what}{nonpositive:.0%} of the pixels have flux <= 0 (at most "
            f"{MAX_NONPOSITIVE:.0%} allowed): this is not a calibrated stellar spectrum")
    if float(np.ptp(f)) <= 1e-6 * abs(level):
        raise InvalidSpectrumError(
            f"{what}the flux is constant ({level:g} everywhere): there are no lines to fit")
    snr = _snr(spectrum)
    if math.isfinite(snr) and snr < min_snr:
        raise InvalidSpectrumError(
            f"{what}median S/N per pixel is {snr:.2g}, below {min_snr:g}, the least the model "
            "needs; no labels can be measured from it")
    contrast = line_contrast(spectrum)
    if math.isfinite(contrast) and contrast < MIN_LINE_CONTRAST:
        raise InvalidSpectrumError(
            f"{what}the flux dips below its continuum no more than its own noise does (line "
            f"depth / noise {contrast:.2f} < {MIN_LINE_CONTRAST}): no stellar lines are seen, "
            "so this is noise, a smooth ramp or a blank exposure, not a star")


def _snr(spectrum) -> float:
    """Median S/N per pixel: from σ when the spectrum has it, else DER_SNR on the flux."""
    if spectrum.has_uncertainty:
        snr = spectrum.median_snr()
        if math.isfinite(snr):
            return snr
    _, flux, good = _rows(spectrum)
    values = []
    for f, g in zip(flux, good, strict=True):
        f = f[g]
        noise = _der_noise(f)
        if f.size >= 20 and noise > 0:
            values.append(float(np.median(f)) / noise)
    return float(np.median(values)) if values else float("nan")


def model_mismatch(result) -> float:
    """rms of the residuals beyond the noise, as a fraction of the model flux:
    sqrt(max(χ²_red − 1, 0)) × the median σ / |model| over the fitted pixels. NaN when the
    result holds no data/model segments. A fit with the misfit jitter
    (``flags["jitter"]``) measured exactly this: the jitter is returned."""
    jitter = result.flags.get("jitter")
    if jitter is not None and math.isfinite(float(jitter)):
        return float(jitter)
    rel = [np.abs(s.sigma[~s.mask] / s.model[~s.mask]) for s in result.segments
           if np.any(~s.mask)]
    rel = np.concatenate(rel) if rel else np.array([])
    rel = rel[np.isfinite(rel)]
    chi2 = result.chi2_reduced
    if rel.size == 0 or not math.isfinite(chi2):
        return float("nan")
    return math.sqrt(max(chi2 - 1.0, 0.0)) * float(np.median(rel))


#: a label within this fraction of the local node spacing of a grid node, ...
NODE_TOLERANCE = 0.02
#: ... with σ (the fit's own, before any systematic floor) below this fraction of the
#: spacing, sits pinned on the node by the kinks of linear interpolation: not measured
TINY_SIGMA = 0.05


def grid_nodes(model) -> dict[str, np.ndarray]:
    """``{label: node values}`` of a grid model's axes (empty for models without a grid)."""
    locator = getattr(model, "locator", None) or getattr(
        getattr(model, "source", None), "locator", None)
    if locator is None:
        return {}
    return {n: np.asarray(a.cpu().numpy(), float)
            for n, a in zip(locator.label_names, locator.axes, strict=True)}


def pinned_labels(labels: dict[str, tuple[float, float]],
                  nodes: dict[str, np.ndarray]) -> list[str]:
    """Labels ``{name: (value, sigma)}`` on a grid node (within :data:`NODE_TOLERANCE` of the
    local spacing) with σ below :data:`TINY_SIGMA` of that spacing."""
    out = []
    for name, (value, sigma) in labels.items():
        axis = nodes.get(name)
        if axis is None or len(axis) < 2 or not math.isfinite(value):
            continue
        k = int(np.argmin(np.abs(axis - value)))
        spacing = float(np.min(np.abs(np.diff(axis)[max(k - 1, 0):k + 1])))
        if abs(value - axis[k]) <= NODE_TOLERANCE * spacing and not sigma > TINY_SIGMA * spacing:
            out.append(name)
    return out


def result_warnings(result, mismatch_limit: float = MISMATCH_FLAG,
                    chi2_limit: float = CHI2_FLAG, model=None) -> list[str]:
    """Reasons not to trust a fit :class:`~photosphere.infer.result.Result` (empty: none):
    labels at a bound, labels pinned on a node of ``model``'s grid (:func:`pinned_labels`, with
    the fit's own σ before any systematic floor), or a model mismatch above ``mismatch_limit``
    (χ²_red above ``chi2_limit`` when the result holds no segments)."""
    out: list[str] = []
    if model is not None:
        stat = result.flags.get("sigma_stat") or {}
        labels = {n: (v, stat.get(n, result.sigma.get(n, math.nan)))
                  for n, v in result.values.items() if n in result.free}
        pinned = pinned_labels(labels, grid_nodes(model))
        if pinned:
            out.append(f"{', '.join(pinned)} on a grid node with a σ far below the node "
                       "spacing: pinned there by the interpolation, not measured")
    at_bound = list(result.flags.get("at_bound") or ())
    if at_bound:
        out.append(f"{', '.join(at_bound)} at a bound of the model: the answer is the edge of "
                   "the grid, not the star")
    partial = result.flags.get("partial_coverage")
    if partial:
        from ..grids.default_model import FULL_COVERAGE_WINDOWS

        out.append(f"the spectrum covers {partial['windows_covered']} of the optical model's "
                   f"{partial['windows']} windows: its σ_sys were measured on spectra covering "
                   f"{FULL_COVERAGE_WINDOWS} or more, and with so few the labels can be far off "
                   "(docs/benchmark.md)")
    chi2 = float(result.flags.get("chi2_reduced_before_jitter", result.chi2_reduced))
    mismatch = model_mismatch(result)
    if math.isfinite(mismatch):
        if mismatch > mismatch_limit:
            out.append(f"chi2_reduced {chi2:.3g}: the model misses the data by {mismatch:.0%} "
                       f"rms of the flux beyond the noise (limit {mismatch_limit:.0%}); it does "
                       "not describe these data")
    elif math.isfinite(chi2) and chi2 > chi2_limit:
        out.append(f"chi2_reduced {chi2:.3g} is far above 1 (limit {chi2_limit:g}): the model "
                   "does not describe these data")
    return out


def label_warnings(labels: dict[str, tuple[float, float]],
                   bounds: dict[str, tuple[float, float]]) -> list[str]:
    """Labels outside (or at) ``bounds`` {name: (lo, hi)}: a network answering off its
    training box."""
    out = []
    for name, (lo, hi) in bounds.items():
        if name not in labels:
            continue
        value = labels[name][0]
        if not math.isfinite(value) or value < lo or value > hi:
            out.append(f"{name} = {value:.4g} is outside the training range {lo:g}..{hi:g}")
    return out


def print_warnings(warnings: Iterable[str], command: str, stream=None) -> int:
    """Print each warning as ``photosphere COMMAND: warning: ...`` on stderr; returns their
    number."""
    import sys

    stream = stream or sys.stderr
    n = 0
    for text in warnings:
        print(f"photosphere {command}: warning: {text}", file=stream)
        n += 1
    return n
