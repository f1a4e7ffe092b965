"""Validate the synthesis against real stars: Turbospectrum vs the UVES Sun and HARPS Procyon.

The star is synthesised at its reference labels (:mod:`.validation_stars`) over each window of a
window set (``optical``: the optical model's seven windows, 4821-6610 Å with Hβ and Hα, MARCS
where it exists and molecules; ``embedded``: 5050-5350 Å, ATLAS9, atoms only), at 0.01 Å with
5 Å to spare on each side. The syntheses are broadened by rotation (vsini fixed), a
radial-tangential macroturbulence ζ and a Gaussian LSF of resolving power R, shifted by rv (all
three fitted, shared by the windows) and multiplied by a continuum per window solved linearly
(:mod:`.validation_fit`).

Continuum: a Legendre polynomial of degree 2 per window for a normalised spectrum (the Sun), a
cubic spline with knots every 50 Å (the fit protocol's) for one that is not (Procyon); in the
Hβ and Hα windows a straight line in both cases. Their wings fill the window, and a curved
continuum takes up their symmetric shape: on the UVES Sun (optical set, 2026-12-07) a degree-2
continuum in those windows bends by 3 % (4835-4901 Å) and 2 % (6510-6610 Å) and lowers the median
|residual| of the Hα window from 0.0099 to 0.0072, at least partly by bending into the wings,
which is what the check must not allow; a straight line (tilt and level only) cannot.

Figures of merit, per window and over all compared pixels, on the continuum-normalised scale
(observation / fitted continuum against the broadened synthesis): Pearson r, median and 95th
percentile of |residual|. The bar (:data:`BAR`) applies to every window and to the whole; a
window without data in the observation is listed, not judged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import atomic_path
from ...errors import OutOfGridError
from .turbospectrum import SyntheticSpectrum, synthesize
from .validation_fit import Continuum, fit_windows
from .validation_stars import (
    ValidationStar,
    WindowSet,
    read_spectrum,
    split_windows,
    validation_star,
    window_set,
)

BAR = {"pearson_r": 0.96, "median_abs_residual": 0.015, "p95_abs_residual": 0.09}
SYNTHESIS_MARGIN = 5.0  # Å synthesised beyond each window (shift and kernel margins need 2)
KNOT_SPACING = 50.0  # Å, the continuum spline of spectra that are not normalised


@dataclass(frozen=True)
class Figures:
    """Agreement over a set of pixels: window (air Å), n_pixels, Pearson r, median and 95th
    percentile of |model - observed| (normalised flux), and the continuum model used."""

    window: tuple[float, float]
    n_pixels: int
    pearson_r: float
    median_abs_residual: float
    p95_abs_residual: float
    continuum: str = ""

    @classmethod
    def of(cls, window: tuple[float, float], model: np.ndarray, observed: np.ndarray,
           continuum: str = "") -> Figures:
        """Figures of ``model`` against ``observed`` (both (n,) normalised flux)."""
        residual = np.abs(model - observed)
        return cls((float(window[0]), float(window[1])), int(model.size),
                   float(np.corrcoef(model, observed)[0, 1]), float(np.median(residual)),
                   float(np.percentile(residual, 95)), continuum)

    @property
    def passes(self) -> bool:
        return (self.pearson_r >= BAR["pearson_r"]
                and self.median_abs_residual <= BAR["median_abs_residual"]
                and self.p95_abs_residual <= BAR["p95_abs_residual"])

    def summary(self) -> dict[str, Any]:
        return {"window": list(self.window), "n_pixels": self.n_pixels,
                "pearson_r": self.pearson_r, "median_abs_residual": self.median_abs_residual,
                "p95_abs_residual": self.p95_abs_residual, "continuum": self.continuum,
                "passes": self.passes}


@dataclass(frozen=True)
class StarValidation:
    """Outcome of :func:`validate_star`: figures over all pixels and per window, the fitted
    broadening, and (n_pix,) arrays for plots: wavelength (Å), observed and model (normalised
    flux), window (index into ``windows``)."""

    star: str
    labels: dict[str, float]
    overall: Figures
    windows: tuple[Figures, ...]
    uncovered: tuple[tuple[float, float], ...]
    window_set: str
    resolution: float  # fitted R
    macroturbulence: float  # km/s, radial-tangential ζ
    vsini: float  # km/s (fixed)
    rv: float  # km/s, fitted shift of the model
    resolution_at_bound: bool  # R at its upper bound: ζ absorbed all Gaussian-like broadening
    wavelength: np.ndarray = field(repr=False)
    observed: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    window_index: np.ndarray = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pearson_r(self) -> float:
        return self.overall.pearson_r

    @property
    def median_abs_residual(self) -> float:
        return self.overall.median_abs_residual

    @property
    def p95_abs_residual(self) -> float:
        return self.overall.p95_abs_residual

    @property
    def passes(self) -> bool:
        """The bar met over all pixels and in every window."""
        return self.overall.passes and all(w.passes for w in self.windows)

    def summary(self) -> dict[str, Any]:
        return {"star": self.star, "pearson_r": self.pearson_r,
                "median_abs_residual": self.median_abs_residual,
                "p95_abs_residual": self.p95_abs_residual, "passes": self.passes, "bar": BAR,
                "windows": [w.summary() for w in self.windows],
                "uncovered_windows": [list(w) for w in self.uncovered],
                "window_set": self.window_set,
                "resolution": self.resolution, "resolution_at_bound": self.resolution_at_bound,
                "macroturbulence_kms": self.macroturbulence,
                "vsini_kms": self.vsini, "rv_kms": self.rv,
                "n_pixels": int(self.wavelength.size), "labels": self.labels,
                "provenance": self.provenance}


def _window_synthetic(synthetic: SyntheticSpectrum, window: tuple[float, float]
                      ) -> SyntheticSpectrum:
    """The part of ``synthetic`` within ``SYNTHESIS_MARGIN`` of ``window``; OutOfGridError when
    it does not reach 2 Å beyond both ends."""
    lo, hi = window
    wave = np.asarray(synthetic.wavelength)
    if wave[0] > lo - 2.0 or wave[-1] < hi + 2.0:
        raise OutOfGridError(
            f"validate_star: the synthetic spectrum covers {wave[0]:.2f}-{wave[-1]:.2f} Å; it "
            f"must cover {lo - 2:g}-{hi + 2:g} Å (shift and kernel margins)")
    keep = (wave >= lo - SYNTHESIS_MARGIN) & (wave <= hi + SYNTHESIS_MARGIN)
    return SyntheticSpectrum(wave[keep], np.asarray(synthetic.flux)[keep],
                             np.asarray(synthetic.flux_absolute)[keep],
                             np.asarray(synthetic.continuum)[keep], dict(synthetic.labels),
                             dict(synthetic.provenance), synthetic.medium)


def _synthetics(star: ValidationStar, windows: Sequence[tuple[float, float]], atmosphere: str,
                molecules: bool, synthetic) -> list[SyntheticSpectrum]:
    if synthetic is None:
        return [synthesize(**star.labels, wavelength_min=lo - SYNTHESIS_MARGIN,
                           wavelength_max=hi + SYNTHESIS_MARGIN, step=0.01,
                           atmosphere=atmosphere, molecules=molecules) for lo, hi in windows]
    given = [synthetic] if isinstance(synthetic, SyntheticSpectrum) else list(synthetic)
    out = []
    for window in windows:
        hits = [s for s in given if s.wavelength[0] <= window[0] - 2.0
                and s.wavelength[-1] >= window[1] + 2.0]
        out.append(_window_synthetic(hits[0] if hits else given[0], window))
    return out


def validate_star(star: str | ValidationStar, observed: str | os.PathLike | None = None, *,
                  windows: str | WindowSet = "optical", atmosphere: str | None = None,
                  molecules: bool | None = None, plot: str | os.PathLike | None = None,
                  synthetic: SyntheticSpectrum | Sequence[SyntheticSpectrum] | None = None,
                  data_dir: str | os.PathLike | None = None) -> StarValidation:
    """Synthesise ``star`` at its reference labels over ``windows`` and compare with its spectrum.

    star: "sun", "procyon" or a :class:`ValidationStar`; observed: the spectrum file (default:
    the star's file in ``data_dir``, the shared data folder); windows: a window-set name or
    :class:`WindowSet`; atmosphere / molecules: override the window set's physics; plot: write
    an overlay PNG there; synthetic: reuse syntheses instead of running Turbospectrum (one
    spectrum covering every window, or one per window, each reaching 2 Å beyond it).
    """
    star = star if isinstance(star, ValidationStar) else validation_star(star, data_dir)
    wset = windows if isinstance(windows, WindowSet) else window_set(windows)
    atmosphere = atmosphere or wset.atmosphere
    molecules = wset.molecules if molecules is None else molecules
    wave, flux = read_spectrum(star, observed)
    covered, pieces, uncovered = split_windows(wave, flux, wset.windows)
    if not covered:
        raise OutOfGridError(f"validate_star: {star.name}'s spectrum ({wave[0]:.0f}-"
                             f"{wave[-1]:.0f} Å) covers none of the {wset.name} windows "
                             f"{wset.windows}")
    synthetics = _synthetics(star, covered, atmosphere, molecules, synthetic)
    continuum = Continuum(knot_spacing=None if star.normalised else KNOT_SPACING)
    fits, params = fit_windows(synthetics, pieces, vsini=star.vsini, continuum=continuum)
    observed_norm = [f / fit.continuum for (_, f), fit in zip(pieces, fits, strict=True)]
    per_window = tuple(Figures.of(window, fit.line_flux, obs, continuum.describe(w))
                       for window, fit, obs, (w, _) in zip(covered, fits, observed_norm, pieces,
                                                           strict=True))
    all_wave = np.concatenate([w for w, _ in pieces])
    all_model = np.concatenate([fit.line_flux for fit in fits])
    all_obs = np.concatenate(observed_norm)
    result = StarValidation(
        star=star.name, labels=dict(star.labels),
        overall=Figures.of((covered[0][0], covered[-1][1]), all_model, all_obs),
        windows=per_window, uncovered=tuple(uncovered), window_set=wset.name,
        resolution=params["resolution"], macroturbulence=params["macroturbulence"],
        vsini=params["vsini"], rv=params["rv"],
        resolution_at_bound=params["resolution_at_bound"], wavelength=all_wave,
        observed=all_obs, model=all_model,
        window_index=np.concatenate([np.full(w.size, k) for k, (w, _) in enumerate(pieces)]),
        provenance={**synthetics[0].provenance, "atmosphere": atmosphere,
                    "molecules": bool(molecules),
                    "observed": str(observed if observed is not None else star.spectrum),
                    "label_source": star.label_source})
    if plot is not None:
        plot_overlay(result, plot)
    return result


def validate_sun(observed: str | os.PathLike | None = None, **options: Any) -> StarValidation:
    """:func:`validate_star` for the Sun: ``observed`` is the UVES atlas (uves_sun_norm.txt)."""
    return validate_star("sun", observed, **options)


def _break_at_gaps(wave: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """``wave`` and ``arrays`` (all (n,)) with a NaN inserted wherever the pixel step exceeds
    1.5 times its median, so that plotted lines do not bridge detector gaps."""
    gaps = np.flatnonzero(np.diff(wave) > 1.5 * np.median(np.diff(wave))) + 1
    return [np.insert(np.asarray(a, float), gaps, np.nan) for a in (wave, *arrays)]


def plot_overlay(result: StarValidation, path: str | os.PathLike) -> Path:
    """Observed and model flux with residuals, one pair of panels per window (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(result.windows)
    fig, axes = plt.subplots(2 * n, 1, figsize=(12, 3.2 * n), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1] * n})
    for k, figures in enumerate(result.windows):
        pix = result.window_index == k
        top, bottom = axes[2 * k, 0], axes[2 * k + 1, 0]
        wave, observed, model = _break_at_gaps(result.wavelength[pix], result.observed[pix],
                                               result.model[pix])
        top.plot(wave, observed, "k-", lw=0.5, label=result.star)
        top.plot(wave, model, "r-", lw=0.5, label="Turbospectrum")
        top.set_ylabel("normalised flux")
        top.set_title(f"{figures.window[0]:g}-{figures.window[1]:g} Å: r = "
                      f"{figures.pearson_r:.4f}, median |res| = {figures.median_abs_residual:.4f}"
                      f", p95 = {figures.p95_abs_residual:.4f} "
                      f"({'pass' if figures.passes else 'FAIL'}; {figures.continuum})",
                      fontsize=9)
        bottom.plot(wave, model - observed, "b-", lw=0.4)
        bottom.axhline(0.0, color="k", lw=0.5)
        bottom.set_ylabel("model − obs")
        bottom.set_xlim(top.get_xlim())
    axes[0, 0].legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel("wavelength (Å, air)")
    fig.suptitle(f"{result.star}: R={result.resolution:,.0f}, ζ={result.macroturbulence:.2f}, "
                 f"vsini={result.vsini:.1f}, rv={result.rv:+.2f} km/s; all windows r = "
                 f"{result.pearson_r:.4f}, median |res| = {result.median_abs_residual:.4f}")
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.985))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
