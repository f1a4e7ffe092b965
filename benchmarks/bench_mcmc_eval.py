"""One evaluation of the posterior of a real full optical spectrum, stage by stage, against the
arithmetic and memory limits of this core (issue 19 §3: emcee 32 × 2 000 ≤ 60 s needs
≤ 0.94 ms per evaluation).

The log-probability is the one ``photosphere.sample(FILE)`` drives (captured from a two-step
run: the least-squares start, the chain and the likelihood exactly as the sampler uses them),
called on batches of 16 parameter vectors (emcee's stretch move with 32 walkers evaluates half
the walkers per call) drawn from the walkers' starting ball. Timed with ``time.process_time``
(CPU seconds, one thread), median of ``--repeats`` calls:

* ``total``: the log-probability of the batch (what emcee calls);
* the stages of the chain on the same batch: ``emulator`` (the model's ``predict``: GP weights,
  the (B, 30) × (30, n_model) product, the line calibration's exp/log), ``broaden`` (rotation ⊗
  LSF by FFT per window), ``rebin`` (Doppler shift and flux-conserving rebinning onto the
  pixels), ``continuum`` (the profiled spline continuum's normal equations and solve),
  ``chi2`` (residuals squared and summed).

Then two limits of this core for the same batch:

* ``memory pass``: one read + one write of a (16, n_model) float64 array (``torch.mul`` into a
  preallocated output): what any elementwise stage costs at least;
* ``arithmetic``: the floating-point operations each stage needs (the emulator's product
  2·B·k·n_model, FFTs 2 × 2.5·n·log2 n per row and window, rebinning ≈ 10 per pixel, the
  continuum's normal matrix 2·B·n_pix·K(K+1)/2 and right-hand side 2·B·n_pix·K), divided by
  the rate of one large dense float64 product on this core (measured here: the best case).

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_mcmc_eval.py [FILE] [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import argparse
import contextlib
import math
import sys
import time

import numpy as np
import torch

import photosphere
from _shared import SHARED, close_report, one_thread
from photosphere.infer import mcmc
from photosphere.infer.chain import DTYPE

DEFAULT_FILE = SHARED / "stars" / "hires" / "harps_sun_ganymede.fits"
BATCH = 16
GOAL_S, EVALUATIONS = 60.0, 32 * 2000


def captured_log_probability(path: str):
    """The ``LogProbability`` and starting walkers of ``photosphere.sample(path)`` (a two-step
    run: its least-squares start, chain and likelihood are those of a full run)."""
    seen = {}
    original = mcmc.LogProbability.__init__

    def capture(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["log_prob"] = self

    mcmc.LogProbability.__init__ = capture
    try:
        post = photosphere.sample(path, n_walkers=32, n_steps=2, burn=0, progress=False)
    finally:
        mcmc.LogProbability.__init__ = original
    return seen["log_prob"], post.samples


def median_cpu(fn, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls (after two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return float(np.median(times))


def stage_functions(log_prob, batch: np.ndarray) -> dict:
    """Callables running each stage of the chain on ``batch`` (B, n_free), their inputs
    precomputed, so that each is timed alone."""
    chain = log_prob.likelihood.chain
    theta = torch.as_tensor(log_prob.params.theta_from_free(batch), dtype=DTYPE)
    labels, vsini, rv = chain.split(theta)
    vmac = chain.vmac_of(theta)
    with torch.no_grad():
        flux = chain.model.predict(labels)
        broadened = [f.squeeze(-2) for f in chain.broaden(flux.unsqueeze(-2), vsini, vmac)]
        stellar = chain.resampled(broadened, rv)
        cont = chain.continuum(stellar, log_det=[])
        model = [s * c for s, c in zip(stellar, cont, strict=True)]

    def chi2():
        return sum(((seg.flux - m) ** 2 * seg.ivar).sum(-1)
                   for seg, m in zip(chain.segments, model, strict=True))

    return {"total": lambda: log_prob(batch),
            "emulator": lambda: chain.model.predict(labels),
            "broaden": lambda: chain.broaden(flux.unsqueeze(-2), vsini, vmac),
            "rebin": lambda: chain.resampled(broadened, rv),
            "continuum": lambda: chain.continuum(stellar, log_det=[]),
            "chi2": chi2}


def flop_counts(chain, n_components: int) -> dict:
    """Floating-point operations per batch of :data:`BATCH` for each stage (see the module
    docstring), from the chain's segments."""
    n_model = int(chain.model_wavelength.size)
    fft = 0.0
    for seg in chain.segments:
        i0, i1 = seg.model_slice
        n = i1 - i0
        fft += 2 * 2.5 * n * math.log2(max(n, 2))            # rfft + irfft of the window
    n_pix = sum(int(seg.flux.numel()) for seg in chain.segments)
    cont = 0
    for seg in chain.segments:
        k = seg.continuum_basis.shape[-1]
        cont += seg.flux.numel() * (k * (k + 1) + 2 * k)   # normal matrix and right-hand side
    return {"emulator": BATCH * 2.0 * n_components * n_model, "broaden": BATCH * fft,
            "rebin": BATCH * 10.0 * n_pix, "continuum": BATCH * float(cont),
            "chi2": BATCH * 4.0 * n_pix}


def dense_rate() -> float:
    """FLOP/s of one large float64 matrix product on this thread (the best case)."""
    a = torch.randn(512, 2048, dtype=DTYPE)
    b = torch.randn(2048, 512, dtype=DTYPE)
    seconds = median_cpu(lambda: a @ b, 5)
    return 2.0 * 512 * 2048 * 512 / seconds


def memory_pass(n_model: int) -> float:
    """CPU seconds of one read + write pass over a (BATCH, n_model) float64 array."""
    x = torch.rand(BATCH, n_model, dtype=DTYPE)
    out = torch.empty_like(x)
    return median_cpu(lambda: torch.mul(x, 1.000001, out=out), 31)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--json", action="store_true", help="print the report as JSON (stdout)")
    args = p.parse_args(argv)
    one_thread()
    log = sys.stderr if args.json else sys.stdout
    report: dict = {"file": args.file, "load_average_before": os.getloadavg(),
                    "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    with contextlib.redirect_stdout(log), torch.no_grad():
        log_prob, walkers = captured_log_probability(args.file)
        chain = log_prob.likelihood.chain
        batch = walkers[np.random.default_rng(0).choice(len(walkers), BATCH, replace=False)]
        n_model = int(chain.model_wavelength.size)
        n_pix = sum(int(seg.flux.numel()) for seg in chain.segments)
        n_components = int(chain.model.n_components_)
        times = {name: median_cpu(fn, args.repeats)
                 for name, fn in stage_functions(log_prob, batch).items()}
        flops = flop_counts(chain, n_components)
        rate, one_pass = dense_rate(), memory_pass(n_model)
        report.update({"n_model_pixels": n_model, "n_data_pixels": n_pix,
                       "segments": len(chain.segments), "batch": BATCH,
                       "seconds_per_batch": times, "flop_per_batch": flops,
                       "dense_flop_rate": rate, "memory_pass_s": one_pass})
        per_eval = times["total"] / BATCH
        print(f"{args.file}: {n_pix} data pixels in {len(chain.segments)} windows, "
              f"{n_model} model pixels; batches of {BATCH}")
        print(f"one evaluation: {1e3 * per_eval:.2f} ms CPU; emcee 32 × 2000 at this rate "
              f"{per_eval * EVALUATIONS:.0f} s (goal {GOAL_S:.0f} s: "
              f"≤ {1e3 * GOAL_S / EVALUATIONS:.2f} ms per evaluation)")
        print(f"this core: dense float64 product {rate / 1e9:.1f} GFLOP/s; one memory pass "
              f"over ({BATCH}, {n_model}) float64 {1e3 * one_pass:.2f} ms")
        print(f"{'stage':10s} {'ms/batch':>9s} {'MFLOP':>8s} {'at dense rate ms':>17s} "
              f"{'memory passes':>14s}")
        for name in ("emulator", "broaden", "rebin", "continuum", "chi2"):
            t, f = times[name], flops[name]
            print(f"{name:10s} {1e3 * t:9.2f} {f / 1e6:8.1f} {1e3 * f / rate:17.2f} "
                  f"{t / one_pass:14.1f}")
        staged = sum(times[n] for n in flops)
        floor = sum(flops.values()) / rate
        print(f"{'stages':10s} {1e3 * staged:9.2f} {sum(flops.values()) / 1e6:8.1f} "
              f"{1e3 * floor:17.2f} {staged / one_pass:14.1f}")
        print(f"{'total':10s} {1e3 * times['total']:9.2f}   (log-probability of the batch: "
              "the stages plus priors, bookkeeping, log-determinants)")
        print(f"arithmetic at the dense rate: {1e3 * floor / BATCH:.3f} ms per evaluation, "
              f"emcee {floor / BATCH * EVALUATIONS:.0f} s")
    close_report(report, log, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
