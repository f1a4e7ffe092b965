"""Measure a :class:`~photosphere.grids.calibrated.LineCalibration` on real stars.

Each calibration star is fitted with the protocol for real spectra (spline continuum, clipping,
R from the file) with its reference Teff, log g and [Fe/H] held fixed; what the model still
misses at those labels, on every pixel (the clipped ones too: they are the lines it gets
wrong), moved to the model's rest-frame pixels, is that star's contribution
(:func:`star_residuals`). :func:`calibrate_lines` combines the stars.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
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


# ------------------------------------------------------------------ the [Fe/H] zero point
def offset_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """The ``(k, j)`` fits that measure :attr:`LineCalibration.offsets`: star j (a column)
    fitted without itself and without star k. Rows that leave out the same calibration are
    fitted once: k another spectrum of j's star (its entry is j's diagonal), and k a later
    spectrum of a star with several (a copy of that star's first row)."""
    return [(k, j) for j in range(len(names)) for k in range(len(names))
            if k == j or (_first_spectrum(names, k) == k
                          and _first_spectrum(names, k) != _first_spectrum(names, j))]


def _first_spectrum(names: Sequence[str], k: int) -> int:
    """The index of the first calibration spectrum of star ``names[k]``."""
    from ..grids.calibrated import same_star

    return next(i for i, n in enumerate(names) if same_star(n, names[k]))


def _calibrated_model(model_path: str):
    """The calibrated model in ``model_path``, read once per process and file version (each
    of the ~130 fits of :func:`measure_offsets` leaves stars out of the same one)."""
    from pathlib import Path

    return _load_calibrated(model_path, Path(model_path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_calibrated(model_path: str, version: int):
    from ..grids.load import load_emulator

    return load_emulator(model_path)


@functools.lru_cache(maxsize=32)
def _prepared(spectrum_path: str):
    """A calibration star's spectrum as ``photosphere fit`` reads it, once per process."""
    from .batch import prepare_spectrum

    return prepare_spectrum(spectrum_path)


def offset_of(model_path: str, star_name: str, left_out: tuple[str, ...], spectrum_path: str,
              reference_feh: float, settings: dict) -> float:
    """Fitted − reference [Fe/H] (dex) of one star's spectrum, fitted with the protocol for
    real spectra and the calibrated model in ``model_path`` made without ``left_out`` (star
    names); NaN when the fit fails. Runs in a worker process: everything comes by name."""
    from .optimize import fit
    from .protocol import merge_defaults

    model = _calibrated_model(model_path)
    for name in left_out:
        model = model.without(name)
    try:
        result = fit(model, _prepared(spectrum_path), **merge_defaults(dict(settings)))
    except FitError:
        return float("nan")
    return float(result.values["feh"]) - float(reference_feh)


def measure_offsets(model_path: str, calibration: LineCalibration,
                    jobs: Sequence[tuple[str, float, dict]], *, workers: int = 1,
                    journal: Callable[[dict], None] | None = None, done: Mapping | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``(n, n)`` offsets of :meth:`LineCalibration.with_offsets` for the calibration stored in
    ``model_path`` (without offsets). jobs: per calibration star (in the calibration's order)
    ``(spectrum path, reference [Fe/H], fit settings)``. workers: processes (each fit ~10 s of
    one core for a 30 000-px model). done: ``{"k,j": offset}`` already measured (resuming);
    journal: called with the growing dict after each fit; progress: ``(finished, total)``."""
    names = list(calibration.star_names)
    if len(jobs) != len(names):
        raise ValueError(f"{len(jobs)} jobs for {len(names)} calibration stars")
    found = {str(k): float(v) for k, v in (done or {}).items()}
    pairs = [p for p in offset_pairs(names) if f"{p[0]},{p[1]}" not in found]
    total = len(offset_pairs(names))

    def task(k: int, j: int) -> tuple:
        left_out = (names[j],) if k == j else (names[j], names[k])
        path, feh, settings = jobs[j]
        return (model_path, names[j], left_out, path, feh, settings)

    def record(k: int, j: int, value: float) -> None:
        found[f"{k},{j}"] = value
        if journal:
            journal(dict(found))
        if progress:
            progress(len(found), total)

    if workers <= 1:
        for k, j in pairs:
            record(k, j, offset_of(*task(k, j)))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = {ex.submit(offset_of, *task(k, j)): (k, j) for k, j in pairs}
            for future in as_completed(futures):
                record(*futures[future], future.result())
    out = np.full((len(names), len(names)), np.nan)
    for key, value in found.items():
        k, j = (int(x) for x in key.split(","))
        out[k, j] = value
    for k in range(len(names)):
        first = _first_spectrum(names, k)
        for j in range(len(names)):
            if k == j:
                continue
            if first == _first_spectrum(names, j):  # k is j's own star: j's diagonal
                out[k, j] = out[j, j]
            elif first != k:  # a later spectrum of k's star: the same calibration as its first
                out[k, j] = out[first, j]
    return out
