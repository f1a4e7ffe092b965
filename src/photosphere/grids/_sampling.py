"""NumPy sampling helpers for building grids: log-uniform wavelengths and flux-conserving rebinning.

These run on the synthesis workers (plain NumPy, no torch), so a spectrum is reduced to the stored
sampling before it travels back to the writer.
"""

from __future__ import annotations

import numpy as np

from ..errors import GridError

C_KMS = 299_792.458


def log_uniform_wavelength(wavelength_min: float, wavelength_max: float,
                           velocity_step: float) -> np.ndarray:
    """Wavelengths (Å) with constant step ``velocity_step`` km/s = c ln(λ[i+1]/λ[i]).

    The first pixel is ``wavelength_min`` and the last is the first one >= ``wavelength_max``.
    """
    try:
        from ..ops.grid import log_uniform_wavelength as ops_grid
    except ImportError:
        ops_grid = None
    if ops_grid is not None:
        # ops stops at the last point <= the maximum; one step more makes the grid cover it
        upper = wavelength_max * np.exp(velocity_step / C_KMS * (1 - 1e-6))
        return np.asarray(ops_grid(wavelength_min, upper, velocity_step), dtype=float)
    n = int(np.ceil(np.log(wavelength_max / wavelength_min) * C_KMS / velocity_step - 1e-9)) + 1
    return wavelength_min * np.exp(np.arange(n) * velocity_step / C_KMS)


def pixel_edges(wavelength: np.ndarray) -> np.ndarray:
    """(n+1,) pixel edges: midpoints between samples, outer edges mirrored."""
    mid = 0.5 * (wavelength[1:] + wavelength[:-1])
    return np.concatenate([[2 * wavelength[0] - mid[0]], mid, [2 * wavelength[-1] - mid[-1]]])


def rebin(wave_in: np.ndarray, flux_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Flux-conserving resampling: mean of the (piecewise-constant) input over each output pixel.

    wave_in (n_in,), flux_in (..., n_in), wave_out (n_out,) Å; returns (..., n_out). The output
    pixels must lie inside the input coverage.
    """
    e_in = pixel_edges(np.asarray(wave_in, float))
    e_out = pixel_edges(np.asarray(wave_out, float))
    if e_out[0] < e_in[0] - 1e-9 or e_out[-1] > e_in[-1] + 1e-9:
        raise GridError(f"resampling onto {wave_out[0]:.3f}-{wave_out[-1]:.3f} Å needs input "
                        f"covering it, got {wave_in[0]:.3f}-{wave_in[-1]:.3f} Å; synthesise a "
                        "wider range")
    flux_in = np.asarray(flux_in, float)
    cum = np.concatenate([np.zeros((*flux_in.shape[:-1], 1)),
                          np.cumsum(flux_in * np.diff(e_in), axis=-1)], axis=-1)
    if cum.ndim == 1:
        at = np.interp(e_out, e_in, cum)
    else:
        at = np.stack([np.interp(e_out, e_in, row) for row in cum.reshape(-1, cum.shape[-1])])
        at = at.reshape((*flux_in.shape[:-1], e_out.size))
    return np.diff(at, axis=-1) / np.diff(e_out)


def vacuum_to_air(wavelength: np.ndarray) -> np.ndarray:
    """Vacuum -> air wavelengths (Å), via photosphere.ops.airvac when present.

    Fallback: the IAU standard of Morton (2000, ApJS 130, 403) with the Birch & Downs refractive
    index, as used by VALD: n = 1 + 8.34254e-5 + 2.406147e-2/(130 - s²) + 1.5998e-4/(38.9 - s²).
    """
    try:
        from ..ops.airvac import vacuum_to_air as ops_v2a
    except ImportError:
        ops_v2a = None
    if ops_v2a is not None:
        return np.asarray(ops_v2a(np.asarray(wavelength, float)), dtype=float)
    w = np.asarray(wavelength, float)
    s2 = (1e4 / w) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
    return w / n


def chunk_edges(wavelength: np.ndarray, n_chunks: int) -> np.ndarray:
    """(n_chunks+1,) Å edges of equal-log-width chunks spanning the grid."""
    lo, hi = float(wavelength[0]), float(wavelength[-1])
    return np.exp(np.linspace(np.log(lo), np.log(hi), n_chunks + 1))


def chunk_means(wavelength: np.ndarray, flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of ``flux`` (..., n_pix) over the pixels of each chunk -> (..., n_chunks)."""
    which = np.clip(np.searchsorted(edges, wavelength, side="right") - 1, 0, len(edges) - 2)
    out = np.empty((*flux.shape[:-1], len(edges) - 1))
    for k in range(len(edges) - 1):
        out[..., k] = flux[..., which == k].mean(axis=-1)
    return out


def continuum_indices(n_pix: int, stride: int) -> np.ndarray:
    """Pixel indices where the (smooth) continuum is stored: every ``stride`` and the last."""
    idx = np.arange(0, n_pix, stride)
    if idx[-1] != n_pix - 1:
        idx = np.append(idx, n_pix - 1)
    return idx


def expand_continuum(wave_coarse: np.ndarray, continuum: np.ndarray,
                     wavelength: np.ndarray) -> np.ndarray:
    """Continuum (..., n_coarse) back on ``wavelength`` by linear interpolation in ln λ."""
    x, xc = np.log(wavelength), np.log(wave_coarse)
    if continuum.ndim == 1:
        return np.interp(x, xc, continuum)
    flat = continuum.reshape(-1, continuum.shape[-1])
    return np.stack([np.interp(x, xc, row) for row in flat]).reshape(
        (*continuum.shape[:-1], x.size))
