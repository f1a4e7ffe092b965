"""Rotational broadening accuracy and speed: photosphere.ops vs PyAstronomy.

Peers: PyAstronomy ``pyasl.rotBroad`` and ``pyasl.fastRotBroad`` (pip install PyAstronomy).
Reference: the continuous convolution of an analytic spectrum (Gaussian absorption lines) with
Gray's rotation profile, by Gauss-Legendre quadrature in θ (v = vsini·sin θ removes the edge
singularity), evaluated at the pixel centres. All methods broaden the same sampled spectrum on a
linear 0.01 Å grid (≈ 0.6 km/s per pixel at 5050 Å); photosphere's log-grid operator (the
model-side path) also runs on the same spectrum sampled log-uniformly at the same step. We
report the maximum absolute error against the reference, the relative equivalent-width error
and the best wall time of 3 calls (one torch thread).

    PYTHONPATH=src python benchmarks/ops_rotation.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from photosphere.ops import rotation
from photosphere.ops.grid import log_uniform_wavelength, velocity_step
from photosphere.spectrum import Spectrum

C_KMS = 299_792.458
EPSILON = 0.6


def analytic_flux(wave, centres, depths, sigma_kms=2.0):
    flux = np.ones_like(wave)
    for c, d in zip(centres, depths, strict=True):
        flux *= 1 - d * np.exp(-0.5 * (C_KMS * np.log(wave / c) / sigma_kms) ** 2)
    return flux


def reference(wave, centres, depths, vsini, n_nodes=400):
    """∫ f(λ·e^(−v/c)) G(v) dv by Gauss-Legendre in θ, v = vsini·sin θ."""
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    theta = nodes * np.pi / 2
    weights = weights * np.pi / 2
    x = np.sin(theta)
    g = (2 * (1 - EPSILON) * np.sqrt(1 - x**2) + np.pi * EPSILON / 2 * (1 - x**2)) / (
        np.pi * (1 - EPSILON / 3))
    w = weights * g * np.cos(theta)  # dx = cos θ dθ
    out = np.zeros_like(wave)
    for xi, wi in zip(x, w, strict=True):
        out += wi * analytic_flux(wave * np.exp(-vsini * xi / C_KMS), centres, depths)
    return out / np.sum(w)


def equivalent_width(wave, flux):
    return float(np.sum((1 - flux) * np.gradient(wave)))


def timed(fn, repeat=3):
    fn()
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    wave = np.arange(5000.0, 5100.0, 0.01)
    centres = rng.uniform(5005.0, 5095.0, 40)
    depths = rng.uniform(0.1, 0.8, 40)
    flux = analytic_flux(wave, centres, depths)
    spec = Spectrum(wave, flux)
    inner = (wave > 5003) & (wave < 5097)  # ignore edge handling differences
    try:
        from PyAstronomy import pyasl
    except ImportError:
        pyasl = None
        print("PyAstronomy is not installed (pip install PyAstronomy): peer columns omitted")

    methods = {"photosphere.ops": lambda v: rotation.broaden_spectrum(spec, v, EPSILON).flux}
    # the model-side path: the same spectrum sampled on a log-uniform grid of the same step
    log_wave = log_uniform_wavelength(5000.0, 5100.0, C_KMS * np.log(5050.01 / 5050.0))
    log_flux = torch.tensor(analytic_flux(log_wave, centres, depths))
    log_step = velocity_step(log_wave)
    log_inner = (log_wave > 5003) & (log_wave < 5097)
    if pyasl is not None:
        methods["PyAstronomy rotBroad"] = lambda v: pyasl.rotBroad(wave, flux, EPSILON, v)
        methods["PyAstronomy fastRotBroad"] = lambda v: pyasl.fastRotBroad(wave, flux, EPSILON, v)

    print(f"grid: {wave.size} px, 0.01 Å (~0.59 km/s/px); 40 Gaussian lines (σ = 2 km/s); "
          f"ε = {EPSILON}")
    print(f"{'vsini':>6} {'method':<26} {'max |Δf|':>10} {'ΔEW/EW':>10} {'time [ms]':>10}")
    for vsini in (0.3, 1.0, 3.0, 10.0, 50.0):
        ref = reference(wave, centres, depths, vsini)
        ew_ref = equivalent_width(wave[inner], ref[inner])
        log_ref = reference(log_wave, centres, depths, vsini)
        out, seconds = timed(lambda v=vsini: rotation.rotational_broaden(
            log_flux, v, log_step, EPSILON).numpy())
        err = np.max(np.abs(out[log_inner] - log_ref[log_inner]))
        dew = equivalent_width(log_wave[log_inner], out[log_inner]) / equivalent_width(
            log_wave[log_inner], log_ref[log_inner]) - 1
        print(f"{vsini:6.1f} {'photosphere.ops (log grid)':<26} {err:10.2e} {dew:10.2e} "
              f"{1e3 * seconds:10.1f}")
        for name, fn in methods.items():
            try:
                out, seconds = timed(lambda fn=fn, v=vsini: fn(v))
            except Exception as exc:  # report a peer that refuses the input instead of crashing
                print(f"{vsini:6.1f} {name:<26} failed: {type(exc).__name__}: {exc}")
                continue
            err = np.max(np.abs(out[inner] - ref[inner]))
            dew = equivalent_width(wave[inner], out[inner]) / ew_ref - 1
            print(f"{vsini:6.1f} {name:<26} {err:10.2e} {dew:10.2e} {1e3 * seconds:10.1f}")


if __name__ == "__main__":
    main()
