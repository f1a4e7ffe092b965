"""Validate the synthesis against the real Sun: Turbospectrum vs the UVES solar spectrum.

The synthetic Sun (Teff 5772 K, log g 4.44, [Fe/H] 0, vmic 1 km/s) is put on a log-uniform grid,
broadened by rotation (vsini 1.9 km/s, fixed), radial-tangential macroturbulence ζ and a Gaussian
line-spread function of resolving power R (both fitted), shifted by a fitted velocity and rebinned
(flux-conserving) onto the observed pixels; a smooth multiplicative continuum (Legendre polynomial
in λ, degree 2, solved linearly at every step) absorbs the normalisation difference. The figures of
merit are the Pearson r between model and observation and the median / 95th percentile of the
absolute residual over 5050-5350 Å.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

from ..._files import atomic_path
from ...errors import FileFormatError, MissingFileError, OutOfGridError
from ...ops.doppler import shift_wavelength
from ...ops.grid import log_uniform_wavelength
from ...ops.lsf import gaussian_broaden
from ...ops.macroturbulence import radial_tangential_kernel
from ...ops.resample import rebin
from ...ops.rotation import rotational_broaden
from .turbospectrum import SyntheticSpectrum, synthesize

SUN_LABELS = {"teff": 5772.0, "logg": 4.44, "feh": 0.0, "alpha": 0.0, "vmic": 1.0}
SUN_VSINI = 1.9  # km/s
WINDOW = (5050.0, 5350.0)  # Å, air
BAR = {"pearson_r": 0.96, "median_abs_residual": 0.015, "p95_abs_residual": 0.09}
UVES_SUN = "optical/uves_sun_norm.txt"
LOG_R_MIN, LOG_R_MAX = 4.0, 6.5  # fitted log10 R range; at the top the LSF is negligible


@dataclass(frozen=True)
class SunValidation:
    """Outcome of :func:`validate_sun`: metrics, fitted broadening, arrays (n_pix,) for plots."""

    pearson_r: float
    median_abs_residual: float
    p95_abs_residual: float
    resolution: float  # fitted R
    macroturbulence: float  # km/s, radial-tangential ζ
    vsini: float  # km/s (fixed)
    rv: float  # km/s, fitted shift of the model
    resolution_at_bound: bool  # R hit LOG_R_MAX: ζ absorbed all Gaussian-like broadening
    wavelength: np.ndarray = field(repr=False)
    observed: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def passes(self) -> bool:
        return (self.pearson_r >= BAR["pearson_r"]
                and self.median_abs_residual <= BAR["median_abs_residual"]
                and self.p95_abs_residual <= BAR["p95_abs_residual"])

    def summary(self) -> dict[str, Any]:
        return {"pearson_r": self.pearson_r, "median_abs_residual": self.median_abs_residual,
                "p95_abs_residual": self.p95_abs_residual, "passes": self.passes, "bar": BAR,
                "resolution": self.resolution, "resolution_at_bound": self.resolution_at_bound,
                "macroturbulence_kms": self.macroturbulence,
                "vsini_kms": self.vsini, "rv_kms": self.rv, "n_pixels": int(self.wavelength.size),
                "window": list(WINDOW), "labels": SUN_LABELS, "provenance": self.provenance}


def read_uves_sun(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The UVES solar atlas (two columns: λ Å air, normalised flux) inside :data:`WINDOW`."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"UVES solar spectrum {path} does not exist; pass --observed "
                               f"pointing at {UVES_SUN} of the shared data folder")
    data = np.loadtxt(path, ndmin=2)
    if data.shape[1] < 2:
        raise FileFormatError(f"{path}: expected two columns (wavelength, flux)")
    keep = (data[:, 0] >= WINDOW[0]) & (data[:, 0] <= WINDOW[1]) & np.isfinite(data[:, 1])
    if keep.sum() < 100:
        raise FileFormatError(f"{path}: fewer than 100 pixels within {WINDOW} Å")
    # the atlas repeats a few wavelengths (joins of its pieces): average the repeats
    wave, inverse = np.unique(data[keep, 0], return_inverse=True)
    flux = np.bincount(inverse, weights=data[keep, 1]) / np.bincount(inverse)
    return wave, flux


class Broadener:
    """Synthetic spectrum on a log-uniform grid, pre-rotated; adds macro + LSF + shift + rebin."""

    def __init__(self, synthetic: SyntheticSpectrum, wave_obs: np.ndarray, velocity_step: float,
                 vsini: float):
        self.dv = velocity_step
        self.wave = log_uniform_wavelength(float(synthetic.wavelength[0]) + 0.05,
                                           float(synthetic.wavelength[-1]) - 0.05, velocity_step)
        flux = rebin(torch.tensor(synthetic.wavelength), torch.tensor(synthetic.flux),
                     torch.as_tensor(self.wave))
        self.rotated = rotational_broaden(flux, torch.tensor(vsini), velocity_step)
        # rebin per contiguous run of observed pixels, so a gap never becomes one wide pixel
        step = np.median(np.diff(wave_obs))
        breaks = np.flatnonzero(np.diff(wave_obs) > 1.5 * step) + 1
        self.segments = [torch.as_tensor(seg) for seg in np.split(wave_obs, breaks)]

    def __call__(self, resolution: float, zeta: float, rv: float) -> np.ndarray:
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
    x = 2.0 * (wavelength - wavelength[0]) / (wavelength[-1] - wavelength[0]) - 1.0
    return np.polynomial.legendre.legvander(x, degree)


def fit_to_observation(synthetic: SyntheticSpectrum, wave_obs: np.ndarray, flux_obs: np.ndarray,
                       vsini: float = SUN_VSINI, continuum_degree: int = 2,
                       velocity_step: float = 0.5, threads: int = 1
                       ) -> tuple[np.ndarray, dict[str, float]]:
    """Best broadened/shifted/continuum-scaled model on ``wave_obs`` and its parameters.

    Free: R (LSF), ζ (km/s), rv (km/s) by Nelder-Mead; continuum coefficients linearly.
    ``threads``: torch threads during the fit (one is fastest: each of the hundreds of model
    evaluations is a few small convolutions, and thread hand-off costs more than it gains).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(synthetic, wave_obs, flux_obs, vsini, continuum_degree, velocity_step)
    finally:
        torch.set_num_threads(previous)


def _fit(synthetic, wave_obs, flux_obs, vsini, continuum_degree, velocity_step):
    broaden = Broadener(synthetic, wave_obs, velocity_step, vsini)
    basis = legendre_basis(wave_obs, continuum_degree)

    def model_for(p: np.ndarray) -> np.ndarray:
        resolution, zeta, rv = 10.0 ** p[0], abs(p[1]), p[2]
        flux = broaden(resolution, zeta, rv)
        design = basis * flux[:, None]
        coef, *_ = np.linalg.lstsq(design, flux_obs, rcond=None)
        return design @ coef

    def loss(p: np.ndarray) -> float:
        if not LOG_R_MIN <= p[0] <= LOG_R_MAX or abs(p[2]) > 10.0:
            return 1e30
        return float(np.sum((model_for(p) - flux_obs) ** 2))

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
        model = model_for(p)
    params = {"resolution": float(10.0 ** p[0]), "macroturbulence": float(abs(p[1])),
              "resolution_at_bound": bool(p[0] > LOG_R_MAX - 0.05),
              "rv": float(p[2]), "vsini": float(vsini), "evaluations": int(nfev)}
    return model, params


def validate_sun(observed: str | os.PathLike, *, atmosphere: str = "atlas9",
                 plot: str | os.PathLike | None = None,
                 synthetic: SyntheticSpectrum | None = None) -> SunValidation:
    """Synthesise the Sun over 5050-5350 Å (0.01 Å) and compare it with the UVES spectrum.

    ``observed``: path of uves_sun_norm.txt; ``plot``: write an overlay PNG there;
    ``synthetic``: reuse an existing synthesis (must cover 5045-5355 Å).
    """
    wave_obs, flux_obs = read_uves_sun(observed)
    if synthetic is None:
        synthetic = synthesize(**SUN_LABELS, wavelength_min=WINDOW[0] - 5.0,
                               wavelength_max=WINDOW[1] + 5.0, step=0.01, atmosphere=atmosphere)
    if synthetic.wavelength[0] > WINDOW[0] - 2.0 or synthetic.wavelength[-1] < WINDOW[1] + 2.0:
        raise OutOfGridError(
            f"validate_sun: the synthetic spectrum covers {synthetic.wavelength[0]:.2f}-"
            f"{synthetic.wavelength[-1]:.2f} Å; it must cover {WINDOW[0] - 2:g}-{WINDOW[1] + 2:g} Å"
            " (shift and kernel margins)")
    model, params = fit_to_observation(synthetic, wave_obs, flux_obs)
    residual = np.abs(model - flux_obs)
    result = SunValidation(
        pearson_r=float(np.corrcoef(model, flux_obs)[0, 1]),
        median_abs_residual=float(np.median(residual)),
        p95_abs_residual=float(np.percentile(residual, 95)),
        resolution=params["resolution"], macroturbulence=params["macroturbulence"],
        vsini=params["vsini"], rv=params["rv"],
        resolution_at_bound=params["resolution_at_bound"], wavelength=wave_obs, observed=flux_obs,
        model=model, provenance={**synthetic.provenance, "observed": str(observed)})
    if plot is not None:
        plot_overlay(result, plot)
    return result


def plot_overlay(result: SunValidation, path: str | os.PathLike) -> Path:
    """Overlay of observed and model flux with residuals (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    axes[0].plot(result.wavelength, result.observed, "k-", lw=0.6, label="UVES Sun")
    axes[0].plot(result.wavelength, result.model, "r-", lw=0.6,
                 label=f"Turbospectrum (R={result.resolution:,.0f}, ζ={result.macroturbulence:.2f}"
                       f", vsini={result.vsini:.1f} km/s)")
    axes[0].set_ylabel("normalised flux")
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title(f"r = {result.pearson_r:.4f}, median |res| = "
                      f"{result.median_abs_residual:.4f}, p95 = {result.p95_abs_residual:.4f}")
    axes[1].plot(result.wavelength, result.model - result.observed, "b-", lw=0.5)
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set_xlabel("wavelength (Å, air)")
    axes[1].set_ylabel("model − obs")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
