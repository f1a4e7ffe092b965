"""Fitting speed: one least-squares fit, one emcee posterior, batch throughput with Dask.

The forward model is a real one: the photosphere grid given with ``--grid`` (or the embedded
default grid when it exists), else The Payne's trained APOGEE emulator from the shared data
(``apogee/payne/NN_normalized_spectra.npz``: 5 labels Teff, log g, [Fe/H], [α/Fe], vmacro), the
peer code's own network, evaluated by our batched torch forward model.

The synthetic observation has 15 000 pixels (3 orders × 5 000 for the Payne model, 1 order for a
grid) with a quadratic continuum per order and S/N 100; we fit all model labels + RV (+ vsini for a
grid) + the per-order continuum.

Run:  PYTHONPATH=src python benchmarks/bench_fit.py [--grid PATH] [--steps 2000] [--batch 8] \
          [--starfish-python /path/to/py39/bin/python]

Both sides run on one thread (torch, and every BLAS through threadpoolctl / the thread variables
of the peer's process) and record the BLAS library and kernel they loaded, the kernel and thread
variables and the load average (benchmarks/_shared.py); the per-call ratios are printed only
when the kernels are of the same vector instruction set and the load stayed at or below the core
count, otherwise the reasons are printed instead.

The peer (Starfish, Czekala et al. 2015; ``astrostarfish`` needs Python 3.9): with
``--starfish-python`` the same run times Starfish's ``SpectrumModel.log_likelihood`` on the same
grid file (its PCA emulator with 4 components, vsini, RV, Chebyshev continuum, dense N×N global
covariance) at 1 000, 4 000 and 8 000 pixels (``benchmarks/_starfish_peer.py``), beside our
log-likelihood per call at 15 000 pixels. Without it, the figures quoted in the issue are printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _shared import (
    SHARED,
    describe,
    environment,
    one_thread,
    print_ratio,
    ratio_refusals,
    thread_env,
)
from photosphere import EchelleSpectrum, Spectrum
from photosphere.infer.chain import ObservationChain
from photosphere.infer.likelihood import Likelihood
from photosphere.infer.mcmc import sample
from photosphere.infer.optimize import build_chain, fit

STARFISH_QUOTED = {"1000 px": 0.2, "4000 px": 4.3, "8000 px": 27.0}


class PayneEmulator:
    """The Payne's per-pixel network (Ting et al. 2019) as a ForwardModel on the 8575-pixel
    log-uniform apStar grid (vacuum); pixels between the chips are continuum (flux 1)."""

    medium = "vacuum"
    label_names = ("teff", "logg", "feh", "alpha", "vmac")

    def __init__(self, folder: Path = SHARED / "apogee" / "payne") -> None:
        nn = np.load(folder / "NN_normalized_spectra.npz")
        def as_t(a):
            return torch.as_tensor(np.asarray(a, np.float64))

        self.w0 = as_t(nn["w_array_0"])   # (n_pix, 5 hidden, 5 labels)
        self.w1 = as_t(nn["w_array_1"])   # (n_pix, 5)
        self.b0 = as_t(nn["b_array_0"])   # (n_pix, 5)
        self.b1 = as_t(nn["b_array_1"])   # (n_pix,)
        self.x_min = as_t(nn["x_min"])
        self.x_max = as_t(nn["x_max"])
        self.wavelength = 10 ** (4.179 + 6e-6 * np.arange(8575))
        self.pixels = torch.as_tensor(np.r_[322:3242, 3648:6048, 6412:8306])
        self.bounds = {n: (float(lo), float(hi)) for n, lo, hi in
                       zip(self.label_names, nn["x_min"], nn["x_max"], strict=True)}
        self.bounds["vmac"] = (max(self.bounds["vmac"][0], 0.0), self.bounds["vmac"][1])

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        x = (torch.as_tensor(labels, dtype=torch.float64) - self.x_min) / (
            self.x_max - self.x_min) - 0.5                          # (..., 5)
        hidden = torch.einsum("pjk,...k->...pj", self.w0, x) + self.b0
        flux = (torch.sigmoid(hidden) * self.w1).sum(-1) + self.b1  # (..., 7214)
        out = torch.ones(*flux.shape[:-1], len(self.wavelength), dtype=flux.dtype)
        return out.index_copy(-1, self.pixels, flux)


def load_model(grid: str | None):
    if grid is None:
        try:
            from photosphere.grids.presets import default_grid_path

            path = default_grid_path()
            grid = str(path) if Path(path).is_file() else None
        except Exception:  # no grids package or no embedded grid yet: use the emulator
            grid = None
    if grid is not None:
        from photosphere.grids.interpolate import GridInterpolator

        return GridInterpolator(grid), f"grid {grid}"
    return PayneEmulator(), "The Payne APOGEE emulator (shared data)"


def observation(model, seed: int = 0, snr: float = 100.0):
    """15 000-pixel synthetic observation and its truth."""
    rng = np.random.default_rng(seed)
    lo = {n: b[0] for n, b in model.bounds.items()}
    hi = {n: b[1] for n, b in model.bounds.items()}
    truth = {n: lo[n] + (0.35 + 0.3 * rng.random()) * (hi[n] - lo[n]) for n in model.label_names}
    truth["rv"] = -25.0
    rotation = not isinstance(model, PayneEmulator)
    if isinstance(model, PayneEmulator):
        w = model.wavelength
        wave = np.stack([np.linspace(w[a + 20], w[b - 20], 5000)
                         for a, b in ((322, 3242), (3648, 6048), (6412, 8306))])
        resolution = None
    else:
        w = model.wavelength
        wave = np.linspace(w[0] * 1.002, w[-1] * 0.998, 15000)[None]
        resolution = 50000.0
        truth["vsini"] = 4.0
    dummy = EchelleSpectrum(wave, np.ones_like(wave), np.ones_like(wave), medium=model.medium)
    chain = ObservationChain(model, dummy, resolution=resolution, continuum_degree=None,
                             rotation=rotation, rv_bounds=(-30, -20))
    with torch.no_grad():
        flux = np.stack([f.numpy() for f in chain.predict(
            torch.as_tensor(chain.theta_from(truth)))[0]])
    x = (wave - wave.mean(1, keepdims=True)) / np.ptp(wave, axis=1, keepdims=True)
    flux = flux * (1.0 + 0.1 * x - 0.05 * x ** 2)
    sigma = np.full_like(flux, 1.0 / snr)
    noisy = flux + rng.normal(size=flux.shape) * sigma
    if wave.shape[0] == 1:
        spec = Spectrum(wave[0], noisy[0], sigma[0], medium=model.medium)
    else:
        spec = EchelleSpectrum(wave, noisy, sigma, medium=model.medium)
    return spec, truth, dict(resolution=resolution, rotation=rotation)


def _read_npz(path: str):
    with np.load(path) as f:
        cls = Spectrum if f["wavelength"].ndim == 1 else EchelleSpectrum
        return cls(f["wavelength"], f["flux"], f["sigma"], medium=str(f["medium"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", help="HDF5 grid (default: embedded grid, else The Payne emulator)")
    p.add_argument("--walkers", type=int, default=32)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8, help="spectra for the Dask throughput run")
    p.add_argument("--skip-mcmc", action="store_true")
    p.add_argument("--model-error", choices=("auto", "none"), default="auto",
                   help="fit(model_error=...): marginalise the model's error templates or not")
    p.add_argument("--skip-batch", action="store_true")
    p.add_argument("--starfish-python", help="a Python 3.9 with astrostarfish: time the peer")
    p.add_argument("--starfish-pixels", type=int, nargs="+", default=[1000, 4000, 8000])
    p.add_argument("--starfish-coretype", metavar="CORE",
                   help="OPENBLAS_CORETYPE for the peer only, when its OpenBLAS does not know "
                        "this CPU and falls back to a generic kernel (e.g. SkylakeX; recorded)")
    args = p.parse_args(argv)
    one_thread()
    model, what = load_model(args.grid)
    spec, truth, kw = observation(model)
    kw["model_error"] = args.model_error
    print(f"model: {what}; observation {spec.flux.size} px in {np.atleast_2d(spec.flux).shape[0]}"
          f" order(s); free: {', '.join(truth)} + continuum (degree 2 per order)")
    report: dict = {"model": what, "n_pixels": int(spec.flux.size), "truth": truth,
                    "model_error": args.model_error}

    t = time.perf_counter()
    fit(model, spec, **kw, initial=truth, n_grid=1, n_starts=1)  # warm-up (imports, caches)
    report["warm_up_s"] = time.perf_counter() - t
    print(f"model_error={args.model_error}; warm-up fit (imports, caches; with templates also "
          f"their one-off calibration on the grid): {report['warm_up_s']:.1f} s")
    t, c = time.perf_counter(), time.process_time()
    res = fit(model, spec, **kw)
    report["fit_s"], report["fit_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    fit(model, spec, **kw, initial=truth, n_grid=1, n_starts=1)
    report["fit_from_start_s"] = time.perf_counter() - t
    report["fit"] = {n: res.labels[n] for n in truth}
    print(f"one fit (RV by cross-correlation + {res.flags['n_starts']} starts + LM): "
          f"{report['fit_s']:.2f} s on one core ({report['fit_cpu_s']:.2f} s CPU); "
          "LM alone from a given start: "
          f"{report['fit_from_start_s']:.2f} s (goal <= 1 s)")
    for n, tv in truth.items():
        v, s = res.labels[n]
        print(f"   {n:6s} true {tv:10.4g}  fit {v:10.4g} ± {s:.3g}")
    chain = build_chain(model, spec, **{k: v for k, v in kw.items() if k != "model_error"},
                        initial=truth)
    theta = chain.theta_from(truth)
    likelihood = Likelihood(chain, model_error=args.model_error, templates_at=theta)
    report["log_likelihood_s"] = _per_call(lambda: likelihood.log_likelihood(theta))
    batch16 = np.tile(theta, (16, 1))
    report["log_likelihood_batch16_s"] = _per_call(lambda: likelihood.log_likelihood(batch16))
    print(f"log-likelihood at {chain.n_pixels} px: {report['log_likelihood_s'] * 1e3:.1f} ms per "
          f"call, {report['log_likelihood_batch16_s'] / 16 * 1e3:.1f} ms per spectrum in a "
          f"batch of 16 (model-error templates: "
          f"{likelihood.n_residuals - likelihood.n_pixels})")
    if args.starfish_python:
        ours_env = environment()
        peer = starfish_likelihood(args.starfish_python, model, args.starfish_pixels,
                                   args.starfish_coretype)
        report["starfish"] = peer
        report["environment"] = ours_env
        print(f"Starfish {peer['starfish_version']} log-likelihood per call (same run, same grid "
              "file, 4 PCA components): " + ", ".join(
                  f"{k} px: {v:.2f} s" for k, v in peer["log_likelihood_s"].items()))
        print(f"ours: {describe(ours_env)}")
        print(f"Starfish: {describe(peer['environment'])}")
        reasons = ratio_refusals(ours_env, peer["environment"], [peer["load_before"]])
        report["ratio_refusals"] = reasons
        for k, v in peer["log_likelihood_s"].items():
            print_ratio(f"Starfish per call at {k} px / ours at {chain.n_pixels} px",
                        v / report["log_likelihood_s"], reasons, "{:.0f}x")
    else:
        print("Starfish (quoted from the issue, not re-measured): likelihood alone per call "
              + ", ".join(f"{k}: {v} s" for k, v in STARFISH_QUOTED.items()))

    if not args.skip_mcmc:
        t, c = time.perf_counter(), time.process_time()
        post = sample(model, spec, **kw, initial=res, n_walkers=args.walkers,
                      n_steps=args.steps, progress=True)
        report["mcmc_s"], report["mcmc_cpu_s"] = (time.perf_counter() - t,
                                                  time.process_time() - c)
        report["mcmc_flags"] = {k: post.flags[k] for k in (
            "acceptance_fraction", "autocorr_time", "effective_sample_size", "chain_too_short")}
        print(f"emcee {args.walkers} walkers × {args.steps} steps: {report['mcmc_s']:.1f} s "
              f"({report['mcmc_cpu_s']:.1f} s CPU; goal <= 60 s); "
              f"acceptance {post.flags['acceptance_fraction']:.2f}; "
              f"τ max {max(post.flags['autocorr_time'].values()):.0f} steps")

    if not args.skip_batch:
        from photosphere.infer.batch import fit_many

        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.batch):
                s, _, _ = observation(model, seed=100 + i)
                np.savez(Path(tmp) / f"star{i:03d}.npz", wavelength=s.wavelength, flux=s.flux,
                         sigma=s.sigma, medium=s.medium)
            factory = functools.partial(load_model_only, args.grid)
            t = time.perf_counter()
            table = fit_many([f"{tmp}/star*.npz"], factory, Path(tmp) / "results.ecsv",
                             reader=_read_npz, fit_kwargs=kw, n_workers=2)
            elapsed = time.perf_counter() - t
        n_ok = int(np.sum(table["status"] == "ok"))
        report["batch"] = {"n": args.batch, "ok": n_ok, "elapsed_s": elapsed,
                           "spectra_per_minute": 60 * args.batch / elapsed}
        print(f"batch: {args.batch} spectra on 2 Dask workers in {elapsed:.1f} s = "
              f"{report['batch']['spectra_per_minute']:.1f} spectra/minute "
              f"(includes cluster start-up and model loading per worker)")
    print(json.dumps(report, default=float), file=sys.stderr)
    return 0


def _per_call(fn, min_seconds: float = 2.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def starfish_likelihood(python: str, model, pixels: list[int],
                        coretype: str | None = None) -> dict:
    """Run ``_starfish_peer.py --likelihood-pixels`` under ``python`` on the model's grid, one
    thread (``coretype``: OPENBLAS_CORETYPE for the peer's process)."""
    path = getattr(model, "path", None)
    if path is None:
        raise SystemExit("--starfish-python needs a grid model (the peer reads the grid file)")
    script = Path(__file__).with_name("_starfish_peer.py")
    env = thread_env(1)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    load_before = os.getloadavg()[0]
    done = subprocess.run([python, str(script), str(path), "--components", "4",
                           "--likelihood-pixels", *map(str, pixels), "--min-seconds", "0"],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the Starfish peer failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["load_before"] = load_before
    return out


def load_model_only(grid: str | None):
    return load_model(grid)[0]


if __name__ == "__main__":
    sys.exit(main())
