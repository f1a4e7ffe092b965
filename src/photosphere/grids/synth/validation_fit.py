"""Fit synthetic spectra to an observed star: one broadening for all windows, a continuum each.

The model of window k: the synthetic spectrum of that window on a log-uniform grid, broadened by
rotation (vsini, fixed), radial-tangential macroturbulence ζ and a Gaussian line-spread function
of resolving power R, shifted by a velocity rv and rebinned (flux-conserving) onto the observed
pixels, times a smooth continuum solved linearly at every step (:class:`Continuum`). R, ζ and rv
are shared by all windows (one star, one spectrograph) and found by Nelder-Mead on the summed
squared residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from ...errors import FitError
from ...ops.doppler import shift_wavelength
from ...ops.grid import log_uniform_wavelength
from ...ops.lsf import gaussian_broaden
from ...ops.macroturbulence import radial_tangential_kernel
from ...ops.resample import rebin
from ...ops.rotation import rotational_broaden
from .turbospectrum import SyntheticSpectrum

LOG_R_MIN, LOG_R_MAX = 4.0, 6.5  # fitted log10 R range; at the top the LSF is negligible
#: Å (air) of the Balmer lines in the optical (Hδ, Hγ, Hβ, Hα).
BALMER_LINES = (4101.73, 4340.46, 4861.33, 6562.80)


class Broadener:
    """Synthetic spectrum on a log-uniform grid, pre-rotated; adds macro + LSF + shift + rebin.

    synthetic: anything with ``wavelength`` (n,) Å and ``flux`` (n,); wave_obs: (n_obs,) Å,
    increasing, gaps allowed; velocity_step: km/s of the working grid; vsini: km/s.
    """

    def __init__(self, synthetic: SyntheticSpectrum, wave_obs: np.ndarray, velocity_step: float,
                 vsini: float):
        self.dv = velocity_step
        self.wave = log_uniform_wavelength(float(synthetic.wavelength[0]) + 0.05,
                                           float(synthetic.wavelength[-1]) - 0.05, velocity_step)
        flux = rebin(torch.tensor(np.asarray(synthetic.wavelength, float)),
                     torch.tensor(np.asarray(synthetic.flux, float)), torch.as_tensor(self.wave))
        self.rotated = rotational_broaden(flux, torch.tensor(vsini), velocity_step)
        # rebin per contiguous run of observed pixels, so a gap never becomes one wide pixel
        step = np.median(np.diff(wave_obs))
        breaks = np.flatnonzero(np.diff(wave_obs) > 1.5 * step) + 1
        self.segments = [torch.as_tensor(seg) for seg in np.split(wave_obs, breaks)]

    def __call__(self, resolution: float, zeta: float, rv: float) -> np.ndarray:
        """(n_obs,) broadened, shifted flux; resolution R, zeta and rv in km/s."""
        kernel = torch.as_tensor(radial_tangential_kernel(self.dv, zeta))
        flux = self.rotated
        if kernel.numel() > 1:
            half = kernel.numel() // 2
            padded = torch.nn.functional.pad(flux[None, None], (half, half), mode="replicate")
            flux = torch.nn.functional.conv1d(padded, kernel.flip(0)[None, None])[0, 0]
        flux = gaussian_broaden(flux, torch.tensor(resolution), self.dv)
        shifted = shift_wavelength(torch.as_tensor(self.wave), torch.tensor(rv))
        return torch.cat([rebin(shifted, flux, seg) for seg in self.segments]).detach().numpy()


def legendre_basis(wavelength: np.ndarray, degree: int) -> np.ndarray:
    """(n_pix, degree + 1) Legendre polynomials in λ mapped onto [-1, 1] over ``wavelength``."""
    x = 2.0 * (wavelength - wavelength[0]) / (wavelength[-1] - wavelength[0]) - 1.0
    return np.polynomial.legendre.legvander(x, degree)


def holds_balmer_line(wavelength: np.ndarray) -> bool:
    """Whether a Balmer line lies inside the span of ``wavelength`` (Å, air)."""
    return any(wavelength[0] < line < wavelength[-1] for line in BALMER_LINES)


@dataclass(frozen=True)
class Continuum:
    """The continuum of each window, a linear model solved at every step of the fit.

    degree: Legendre degree in λ per window; knot_spacing: Å, a cubic B-spline with knots this far
    apart instead (for spectra that are not normalised); balmer_degree: Legendre degree of a window
    holding a Balmer line, whatever the rest use (None: no exception). The wings of Hβ and Hα span
    the whole optical window around them, so a curved continuum there trades wing depth for
    curvature; a straight line anchored by the window's ends cannot.
    """

    degree: int = 2
    knot_spacing: float | None = None
    balmer_degree: int | None = 1

    def __post_init__(self) -> None:
        if self.degree < 0 or (self.balmer_degree is not None and self.balmer_degree < 0):
            raise FitError(f"Continuum: degrees must be >= 0, got degree={self.degree}, "
                           f"balmer_degree={self.balmer_degree}")
        if self.knot_spacing is not None and not self.knot_spacing > 0:
            raise FitError(f"Continuum: knot_spacing={self.knot_spacing} Å must be positive")

    def describe(self, wavelength: np.ndarray) -> str:
        """What :meth:`basis` uses over ``wavelength``, in words ("Legendre 1", "spline 50 Å")."""
        if self.balmer_degree is not None and holds_balmer_line(wavelength):
            return f"Legendre {self.balmer_degree} (Balmer)"
        if self.knot_spacing is not None:
            return f"spline {self.knot_spacing:g} Å"
        return f"Legendre {self.degree}"

    def basis(self, wavelength: np.ndarray) -> np.ndarray:
        """(n_pix, n_coef) basis over one window's observed pixels ``wavelength`` (Å)."""
        if self.balmer_degree is not None and holds_balmer_line(wavelength):
            return legendre_basis(wavelength, self.balmer_degree)
        if self.knot_spacing is not None:
            from scipy.interpolate import BSpline

            lo, hi = float(wavelength[0]), float(wavelength[-1])
            inner = np.linspace(lo, hi, max(1, round((hi - lo) / self.knot_spacing)) + 1)
            knots = np.concatenate([[lo] * 3, inner, [hi] * 3])
            return BSpline.design_matrix(np.asarray(wavelength, float), knots, 3).toarray()
        return legendre_basis(wavelength, self.degree)


@dataclass(frozen=True)
class WindowFit:
    """Fitted model of one window on its observed pixels, all (n_pix,): ``model`` = ``continuum``
    × ``line_flux`` (the broadened, shifted synthetic spectrum, normalised)."""

    model: np.ndarray
    continuum: np.ndarray
    line_flux: np.ndarray


def fit_windows(synthetics: Sequence[SyntheticSpectrum],
                observed: Sequence[tuple[np.ndarray, np.ndarray]], *, vsini: float,
                continuum: Continuum = Continuum(), velocity_step: float = 0.5, threads: int = 1
                ) -> tuple[list[WindowFit], dict[str, float]]:
    """Best broadened, shifted, continuum-scaled model of every window, and the shared parameters.

    synthetics: one per window, each covering its window's observed pixels with ≥ 2 Å to spare;
    observed: per window ``(wavelength (n_k,) Å, flux (n_k,))``. Free: R, ζ (km/s), rv (km/s) by
    Nelder-Mead; the continuum coefficients of each window linearly. ``threads``: torch threads
    during the fit (one is fastest: each of the hundreds of model evaluations is a few small
    convolutions, and thread hand-off costs more than it gains). Returns the per-window fits and
    ``{"resolution", "macroturbulence", "rv", "vsini", "resolution_at_bound", "evaluations"}``.
    """
    if len(synthetics) != len(observed) or not observed:
        raise FitError(f"fit_windows: {len(synthetics)} synthetic spectra for {len(observed)} "
                       "observed windows; give one synthetic spectrum per window (at least one)")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(synthetics, observed, vsini, continuum, velocity_step)
    finally:
        torch.set_num_threads(previous)


def _fit(synthetics, observed, vsini, continuum, velocity_step):
    broadeners = [Broadener(s, w, velocity_step, vsini)
                  for s, (w, _) in zip(synthetics, observed, strict=True)]
    bases = [continuum.basis(w) for w, _ in observed]

    def fits_for(p: np.ndarray) -> list[WindowFit]:
        resolution, zeta, rv = 10.0 ** p[0], abs(p[1]), p[2]
        out = []
        for broaden, basis, (_, flux_obs) in zip(broadeners, bases, observed, strict=True):
            line_flux = broaden(resolution, zeta, rv)
            design = basis * line_flux[:, None]
            coef, *_ = np.linalg.lstsq(design, flux_obs, rcond=None)
            out.append(WindowFit(design @ coef, basis @ coef, line_flux))
        return out

    def loss(p: np.ndarray) -> float:
        if not LOG_R_MIN <= p[0] <= LOG_R_MAX or abs(p[2]) > 10.0:
            return 1e30
        return float(sum(np.sum((f.model - flux) ** 2)
                         for f, (_, flux) in zip(fits_for(p), observed, strict=True)))

    # explicit simplex steps (log R 0.3 dex, ζ 1 km/s, rv 0.5 km/s): scipy's default step for a
    # zero start is 2.5e-4, which leaves rv stuck; one restart from the optimum guards against a
    # collapsed simplex
    start, steps = np.array([5.0, 3.0, 0.0]), np.diag([0.3, 1.0, 0.5])
    nfev = 0
    with torch.no_grad():
        for _ in range(2):
            best = minimize(loss, start, method="Nelder-Mead",
                            options={"initial_simplex": np.vstack([start, start + steps]),
                                     "xatol": 2e-3, "fatol": 1e-6, "maxiter": 400})
            start, nfev = best.x, nfev + best.nfev
            steps = steps / 3.0
        p = best.x
        fits = fits_for(p)
    params = {"resolution": float(10.0 ** p[0]), "macroturbulence": float(abs(p[1])),
              "resolution_at_bound": bool(p[0] > LOG_R_MAX - 0.05),
              "rv": float(p[2]), "vsini": float(vsini), "evaluations": int(nfev)}
    return fits, params


def fit_to_observation(synthetic: SyntheticSpectrum, wave_obs: np.ndarray, flux_obs: np.ndarray,
                       vsini: float = 1.9, continuum_degree: int = 2,
                       velocity_step: float = 0.5, threads: int = 1
                       ) -> tuple[np.ndarray, dict[str, float]]:
    """One window: best broadened/shifted/continuum-scaled model (n_obs,) on ``wave_obs`` and its
    parameters (:func:`fit_windows` with a Legendre continuum of ``continuum_degree``)."""
    fits, params = fit_windows([synthetic], [(wave_obs, flux_obs)], vsini=vsini,
                               continuum=Continuum(degree=continuum_degree, balmer_degree=None),
                               velocity_step=velocity_step, threads=threads)
    return fits[0].model, params
