"""The fit of a real full optical spectrum, timed stage by stage on one core (issue 19 §3).

The real path, exactly as ``photosphere fit FILE`` / ``photosphere.fit(FILE)`` runs it: reading
the file, the checks and DER_SNR σ, choosing and loading the default model (the shipped optical
emulator for a spectrum covering its windows), then :func:`photosphere.infer.optimize.fit` with
the protocol for real spectra (spline continuum, clipping, misfit jitter, R from the file). The
stages are timed by wrapping the functions that do them (the wrappers cost microseconds):

* ``import``: ``import photosphere`` (with torch), in this process, before anything else;
* ``read``: :func:`photosphere.read`; ``checks``: the validity check and the masking of flux
  ≤ 0; ``der_snr``: σ estimated from the flux (:func:`photosphere.ops.noise.with_uncertainty`);
* ``choose_model``: the windows the spectrum covers; ``load_model``: reading the model file and
  conditioning its Gaussian processes;
* the fit: ``rv_scan`` (cross-correlation over ±300 km/s, building that chain included),
  ``build_chain`` (the chain of the fit's RV range: segments, continuum bases), ``screen``
  (χ² of the coarse start grid), ``multistart`` (Levenberg–Marquardt race of the best starts
  and the leader to convergence), ``clipping`` (outlier clipping and its refits), ``jitter``
  (the misfit term and its refit), ``templates`` (the model-error refits; the optical model
  offers none, so 0 there), ``covariance`` (the Jacobian at the solution: central differences
  for an emulator, forward-mode autodiff for the float32 grid) and
  ``result`` (segments for the output); ``rest``: everything else in the call;
* per model evaluation, summed over the whole fit (they overlap the stages above):
  ``emulator`` (the model's ``predict``), ``broaden`` (rotation ⊗ LSF convolution),
  ``rebin`` (Doppler shift and rebinning), ``continuum`` (the profiled spline solve).

Then the posterior, ``photosphere.sample(FILE, n_walkers=32, n_steps=2000)`` (its least-squares
start included, reported apart), wall and CPU time, acceptance, τ. ``--profile FILE`` writes a
cProfile of a third fit.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_fit_real.py [FILE] \
          [--steps 2000] [--skip-mcmc] [--profile /tmp/fit.prof] [--json]

FILE defaults to the HARPS s1d of the Sun (light reflected by Ganymede, 313 025 px,
3783–6913 Å, R 115 000 from the instrument), the widest real spectrum of an FGK star in the
shared data that the optical model fits (its windows keep ≈ 40 000 of the pixels); the GBS
HARPS spectrum of Procyon (``stars/hires/harps_procyon.fits``, 200 000 px, 4800–6800 Å, no R in
the file) is the other full optical one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools
_T_START = __import__("time").perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

import photosphere  # noqa: E402

_T_IMPORT = time.perf_counter() - _T_START

from _shared import SHARED, close_report, one_thread  # noqa: E402
from photosphere import api  # noqa: E402
from photosphere.grids import default_model, load  # noqa: E402
from photosphere.infer import chain as chain_module  # noqa: E402
from photosphere.infer import mcmc, optimize, validity  # noqa: E402
from photosphere.io import prepare  # noqa: E402
from photosphere.ops import noise  # noqa: E402

DEFAULT_FILE = SHARED / "stars" / "hires" / "harps_sun_ganymede.fits"
LABELS = ("teff", "logg", "feh", "alpha", "vmic", "vsini", "rv")


class Timers:
    """Wall time per named stage, accumulated while :attr:`active`."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active = True

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Replace ``owner.attribute`` by a timed version (a module function or a method)."""
        original = getattr(owner, attribute)
        if isinstance(original, classmethod | staticmethod):  # pragma: no cover - not used
            raise TypeError(attribute)
        depth = {"n": 0}

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if not self.active or depth["n"]:   # recursion: count the outer call only
                return original(*args, **kwargs)
            depth["n"] += 1
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                depth["n"] -= 1
                self.totals[name] += time.perf_counter() - t
                self.calls[name] += 1

        setattr(owner, attribute, timed)


def instrument(timers: Timers) -> None:
    """Wrap the functions of the real path (see the module doc for what each name covers)."""
    timers.wrap(photosphere, "read", "read")
    timers.wrap(api, "read", "read")
    timers.wrap(validity, "check_spectrum", "checks")
    timers.wrap(prepare, "mask_nonpositive", "checks")
    timers.wrap(noise, "with_uncertainty", "der_snr")
    timers.wrap(default_model, "choose_model", "choose_model")
    timers.wrap(load, "load_grid_model", "load_model")
    timers.wrap(optimize, "cross_correlation_rv", "rv_scan")
    timers.wrap(optimize, "_chunked", "screen")
    timers.wrap(optimize, "_multistart", "multistart")
    timers.wrap(optimize, "_clipped_refit", "clipping")
    timers.wrap(optimize, "_jitter_refit", "jitter")
    timers.wrap(optimize, "_refit_with_templates", "templates")
    timers.wrap(optimize, "covariance", "covariance")
    timers.wrap(optimize, "_segments", "result")
    timers.wrap(optimize, "fit", "fit_total")
    timers.wrap(mcmc, "fit", "fit_total")   # the least-squares start of sample
    Chain = chain_module.ObservationChain
    timers.wrap(Chain, "broaden", "broaden")
    timers.wrap(Chain, "_shifted_rebin", "rebin")
    timers.wrap(Chain, "continuum", "continuum")
    timers.wrap(Chain, "__init__", "chain_setup")
    # the model's predict: wrapped on the loaded object (see _wrap_model)


def _wrap_model(timers: Timers) -> None:
    original = load.load_grid_model

    def loading(*args, **kwargs):
        model = original(*args, **kwargs)
        if not getattr(model, "_bench_wrapped", False):
            timers.wrap(model, "predict", "emulator")
            model._bench_wrapped = True
        return model

    load.load_grid_model = loading


STAGES = ("read", "checks", "der_snr", "choose_model", "load_model", "rv_scan", "build_chain",
          "screen", "multistart", "clipping", "jitter", "templates", "covariance", "result")
PER_EVALUATION = ("emulator", "broaden", "rebin", "continuum")


def breakdown(timers: Timers, total: float) -> dict[str, float]:
    t = dict(timers.totals)
    out = {k: t.get(k, 0.0) for k in ("read", "checks", "der_snr", "choose_model",
                                       "load_model")}
    out["rv_scan"] = t.get("rv_scan", 0.0)
    # chain set-ups outside the RV scan: the fit's own chain (and the masked copies are copies)
    out["build_chain"] = max(t.get("chain_setup", 0.0) - _setup_in_scan(timers), 0.0)
    for k in ("screen", "multistart", "clipping", "jitter", "templates", "covariance",
              "result"):
        out[k] = t.get(k, 0.0)
    out["rest"] = total - sum(out.values())
    out["total"] = total
    for k in PER_EVALUATION:
        out[f"per_evaluation.{k}"] = t.get(k, 0.0)
    out["fit_call"] = t.get("fit_total", 0.0)
    return out


def _setup_in_scan(timers: Timers) -> float:
    return timers.totals.get("_scan_setup", 0.0)


def timed_fit(path, timers: Timers) -> tuple[object, dict[str, float], float]:
    timers.reset()
    t, c = time.perf_counter(), time.process_time()
    result = photosphere.fit(path)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out = breakdown(timers, wall)
    out["cpu"] = cpu
    return result, out, wall


def labels_of(result) -> dict[str, list[float]]:
    return {n: [float(result.values[n]), float(result.sigma[n])] for n in LABELS
            if n in result.values}


def _print_breakdown(title: str, b: dict[str, float]) -> None:
    print(f"{title}: {b['total']:.2f} s wall, {b['cpu']:.2f} s CPU")
    for k in (*STAGES, "rest"):
        print(f"   {k:13s} {b[k]:7.3f} s")
    print("   per model evaluation, summed (inside the stages above): " + ", ".join(
        f"{k} {b['per_evaluation.' + k]:.2f} s" for k in PER_EVALUATION))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    p.add_argument("--walkers", type=int, default=32)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--skip-mcmc", action="store_true")
    p.add_argument("--profile", metavar="FILE", help="cProfile a third fit into FILE")
    p.add_argument("--json", action="store_true", help="print the report as JSON (stdout)")
    args = p.parse_args(argv)
    one_thread()
    log = sys.stderr if args.json else sys.stdout
    timers = Timers()
    instrument(timers)
    _wrap_model(timers)
    # the chains built inside the cross-correlation are part of the RV scan
    scan = optimize.cross_correlation_rv

    def scan_timed(*a, **kw):
        before = timers.totals.get("chain_setup", 0.0)
        out = scan(*a, **kw)
        timers.totals["_scan_setup"] += timers.totals.get("chain_setup", 0.0) - before
        return out

    optimize.cross_correlation_rv = scan_timed

    report: dict = {"file": args.file, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                 time.gmtime()),
                    "import_s": _T_IMPORT, "load_average_before": os.getloadavg()}
    with contextlib.redirect_stdout(log):
        spectrum = photosphere.read(args.file)
        choice = default_model.choose_model(api._observation(spectrum)[0])
        report["n_pixels_file"] = int(np.size(spectrum.flux))
        print(f"{args.file}: {report['n_pixels_file']} px, "
              f"{np.nanmin(spectrum.wavelength):.1f}-{np.nanmax(spectrum.wavelength):.1f} Å; "
              f"model: {choice.as_dict()}")
        print(f"import photosphere (torch included): {_T_IMPORT:.2f} s")
        fits = []
        for label in ("first fit", "second fit"):
            result, b, _ = timed_fit(args.file, timers)
            fits.append(b)
            _print_breakdown(label, b)
        report["first_fit"], report["second_fit"] = fits
        report["n_pixels_fitted"] = int(result.n_pixels)
        report["flags"] = {k: result.flags.get(k) for k in (
            "clipped", "clip_refits", "jitter", "iterations", "n_starts", "converged",
            "model_error_rounds")}
        report["labels"] = labels_of(result)
        report["provenance_model"] = result.provenance.get("model")
        print(f"pixels fitted (inside the model's windows, after masks and clipping): "
              f"{result.n_pixels}; flags {report['flags']}")
        for n, (v, s) in report["labels"].items():
            print(f"   {n:6s} {v:12.5f} ± {s:.4g}")
        if args.profile:
            timers.active = False
            prof = cProfile.Profile()
            prof.enable()
            photosphere.fit(args.file)
            prof.disable()
            prof.dump_stats(args.profile)
            timers.active = True
            print(f"cProfile of a third fit written to {args.profile}")
        if not args.skip_mcmc:
            timers.reset()
            t, c = time.perf_counter(), time.process_time()
            post = photosphere.sample(args.file, n_walkers=args.walkers, n_steps=args.steps,
                                      progress=False)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            start = timers.totals.get("fit_total", 0.0)
            before = sum(timers.totals.get(k, 0.0) for k in (
                "read", "checks", "der_snr", "choose_model", "load_model"))
            tau = post.flags["autocorr_time"]
            report["mcmc"] = {
                "walkers": args.walkers, "steps": args.steps, "wall_s": wall, "cpu_s": cpu,
                "reading_and_model_s": before, "least_squares_start_s": start,
                "emcee_s": wall - start - before,
                "acceptance_fraction": post.flags["acceptance_fraction"],
                "autocorr_time": tau, "chain_too_short": post.flags["chain_too_short"],
                "evaluations": args.walkers * args.steps,
                "ms_per_evaluation": 1e3 * (wall - start - before) / (args.walkers * args.steps),
                "labels": labels_of(post)}
            m = report["mcmc"]
            print(f"photosphere.sample, emcee {args.walkers} walkers × {args.steps} steps: "
                  f"{wall:.1f} s wall ({cpu:.1f} s CPU), of which reading and the model "
                  f"{before:.1f} s, the least-squares start {start:.1f} s and emcee "
                  f"{m['emcee_s']:.1f} s ({m['ms_per_evaluation']:.2f} ms per evaluation); "
                  f"acceptance {m['acceptance_fraction']:.2f}; τ max {max(tau.values()):.0f} "
                  f"steps; chain_too_short {m['chain_too_short']}")
    close_report(report, log, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
