"""Measure a :class:`~photosphere.grids.calibrated.LineCalibration` on real stars.

Each calibration star is fitted with the protocol for real spectra (spline continuum, clipping,
R from the file) with its reference Teff, log g and [Fe/H] held fixed; what the model still
misses at those labels, on every pixel (the clipped ones too: they are the lines it gets
wrong), moved to the model's rest-frame pixels, is that star's contribution
(:func:`star_residuals`). :func:`calibrate_lines` combines the stars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import FitError
from ..grids.calibrated import LineCalibration, StarResiduals
from ..ops.doppler import doppler_factor

#: labels held at the reference values in a calibration fit
REFERENCE_LABELS = ("teff", "logg", "feh")


def _rest_frame(model_wavelength: np.ndarray, wave: np.ndarray, values: np.ndarray,
                rv: float) -> np.ndarray:
    """``values`` at observed ``wave`` (model medium) moved to the model's pixels at ``rv``;
    NaN outside the observed span and where a value is NaN."""
    rest = wave / doppler_factor(rv)
    out = np.interp(model_wavelength, rest, values, left=np.nan, right=np.nan)
    # no value across a gap between segments or masked stretches wider than 3 observed pixels
    step = np.median(np.diff(rest)) if len(rest) > 1 else np.inf
    idx = np.clip(np.searchsorted(rest, model_wavelength), 1, max(len(rest) - 1, 1))
    gap = (rest[idx] - rest[idx - 1]) > 3 * step if len(rest) > 1 else np.ones_like(out, bool)
    return np.where(gap, np.nan, out)


def star_residuals(model, spectrum, reference: Mapping[str, float], star: str,
                   **fit_settings: Any) -> StarResiduals:
    """One star's normalised data and model on ``model``'s pixels at its reference labels.

    model: the uncalibrated forward model, fitted as exact (no error templates or model
    variance, as the calibrated model is). spectrum: the star's spectrum with σ. reference:
    ``{teff, logg, feh}`` (K, dex, dex). fit_settings: keyword arguments of
    :func:`~photosphere.infer.optimize.fit` (``resolution=`` ...) over the protocol.
    """
    from .optimize import _segments, build_chain, fit
    from .protocol import merge_defaults

    fixed = {k: float(reference[k]) for k in REFERENCE_LABELS if k in model.label_names}
    lo_hi = {k: model.bounds[k] for k in fixed}
    fixed = {k: float(np.clip(v, *lo_hi[k])) for k, v in fixed.items()}
    # the model as exact, as the calibrated model is fitted (grids.calibrated.CalibratedModel):
    # its own error terms would absorb part of the misfit the calibration is to measure
    options = merge_defaults({"model_error": "none", "model_variance": False, **fit_settings,
                              "fixed": fixed})
    result = fit(model, spectrum, **options)
    # the residuals on every pixel, the clipped ones included (marked): the lines the model
    # gets wrong are what clipping removes, and what the mask is made from
    chain = build_chain(model, spectrum, options["settings"], fixed=result.values)
    segments = _segments(chain, chain.theta_from(result.values))
    rv = float(result.values.get("rv", np.mean([v for k, v in result.values.items()
                                                if k.startswith("rv")] or [0.0])))
    wavelength = np.asarray(model.wavelength, float)
    n = len(wavelength)
    data = np.full(n, np.nan)
    pred = np.full(n, np.nan)
    weight = np.zeros(n)
    for seg in segments:
        wave = np.asarray(seg.wavelength, float)  # the chain's segments are in the model's medium
        good = ~np.asarray(seg.mask) & (np.asarray(seg.continuum) > 0) & np.isfinite(seg.flux)
        if good.sum() < 10:
            continue
        cont = np.asarray(seg.continuum, float)[good]
        d = _rest_frame(wavelength, wave[good], np.asarray(seg.flux, float)[good] / cont, rv)
        m = _rest_frame(wavelength, wave[good], np.asarray(seg.model, float)[good] / cont, rv)
        s = _rest_frame(wavelength, wave[good], np.asarray(seg.sigma, float)[good] / cont, rv)
        here = np.isfinite(d) & np.isfinite(m) & np.isfinite(s) & (s > 0)
        data[here], pred[here] = d[here], m[here]
        weight[here] = 1.0 / s[here] ** 2
    if not np.any(weight > 0):
        raise FitError(f"{star}: no pixel of the spectrum falls on the model's wavelengths")
    kept = np.zeros(n)
    for seg in result.segments:  # the fit's own segments: masked = masked before or clipped
        wave = np.asarray(seg.wavelength, float)
        used = _rest_frame(wavelength, wave, (~np.asarray(seg.mask)).astype(float), rv)
        kept = np.fmax(kept, np.nan_to_num(used))
    clipped = (weight > 0) & (kept < 0.5)
    labels = {k: float(v) for k, v in result.values.items()}
    return StarResiduals(star, data, pred, weight, labels, clipped)


def calibrate_lines(model, stars: Iterable[tuple[str, Any, Mapping[str, float], dict]],
                    progress: Callable[[str], None] | None = None,
                    tied: tuple[str, ...] = (), held: tuple[str, ...] = ()
                    ) -> LineCalibration:
    """The line calibration of ``model`` on ``stars``: ``(name, spectrum, reference labels,
    fit settings)`` each. A star whose fit fails is reported through ``progress`` and left out.
    tied: the labels ``model`` ties by relations (a :class:`~photosphere.grids.tied_labels.
    TiedLabels`), recorded in the calibration so that fits with it tie them too. held: labels
    ``model`` ties in these fits only (recorded; free in fits with the calibrated model)."""
    residuals = []
    for name, spectrum, reference, settings in stars:
        try:
            residuals.append(star_residuals(model, spectrum, reference, name, **settings))
        except FitError as exc:
            if progress:
                progress(f"{name}: left out ({exc})")
            continue
        if progress:
            progress(f"{name}: done")
    return LineCalibration.from_stars(np.asarray(model.wavelength, float), residuals, tied, held)
