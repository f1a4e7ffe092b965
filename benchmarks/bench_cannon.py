"""The Cannon: photosphere vs the reference implementation (annieslasso / ``thecannon``).

Same data, same run, same thread count: 1 855 training stars x 7 214 APOGEE pixels, 5 labels
(Teff, log g, [Fe/H], [α/Fe], vmacro), quadratic model, S/N 50-200 with APOGEE-like bad-pixel
masks, made from the Payne emulator (photosphere.datasets.apogee_emulated); 1 000 held-out stars
for the test step. Prints training time (with the achieved GFLOP/s of our matrix products),
test-step throughput and per-label bias/scatter of both implementations side by side.

The reference needs numpy < 2.4, so it runs in its own environment, fed with .npy files:

    python3.11 -m venv /work/peers/annieslasso
    /work/peers/annieslasso/bin/pip install annieslasso "numpy<2.4" scipy threadpoolctl
    PYTHONPATH=src python benchmarks/bench_cannon.py    # --peer-python: that venv's python

Each implementation runs in a subprocess with OPENBLAS/OMP/MKL_NUM_THREADS = --threads and
otherwise the same environment. Each side records the BLAS library and kernel it loaded
(threadpoolctl), the thread and kernel variables and the load average (benchmarks/_shared.py);
the speed ratios are printed only when both sides ran under the same BLAS conditions and the
load average stayed at or below the core count, otherwise the reasons are printed instead.
To compare with OpenBLAS choosing its own kernel on a machine that forces one, run the command
under ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` (both sides inherit it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _shared import describe, environment, print_ratio, ratio_refusals, thread_env

HERE = Path(__file__).resolve().parent
LABELS = ("teff", "logg", "feh", "alpha", "vmacro")

PEER_SCRIPT = r'''
import json, logging, sys, time
import numpy as np
logging.disable(logging.CRITICAL)
import thecannon as tc
sys.path.insert(0, sys.argv[3])
import _shared
d = sys.argv[1]
lab, flux, ivar = (np.load(f"{d}/train_{k}.npy") for k in ("labels", "flux", "ivar"))
tflux, tivar = np.load(f"{d}/test_flux.npy"), np.load(f"{d}/test_ivar.npy")
vec = tc.vectorizer.PolynomialVectorizer(tuple(sys.argv[2].split(",")), 2)
model = tc.CannonModel(lab, flux, ivar, vec)
t0, c0 = time.perf_counter(), time.process_time()
model.train()
train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
t0, c0 = time.perf_counter(), time.process_time()
labels, cov, meta = model.test(tflux, tivar)
test_wall, test_cpu = time.perf_counter() - t0, time.process_time() - c0
np.save(f"{d}/peer_labels.npy", np.asarray(labels, dtype=float))
print(json.dumps({"train_wall_s": train_wall, "train_cpu_s": train_cpu,
                  "test_wall_s": test_wall, "test_cpu_s": test_cpu,
                  "version": getattr(tc, "__version__", "unknown"),
                  "environment": _shared.environment()}))
'''


def make_data(directory: Path, n_train: int, n_test: int, seed: int, data_dir: str | None):
    from photosphere.datasets import apogee_emulated as ae

    emulator = ae.PayneEmulator.load(data_dir)
    train = ae.make_apogee_like(n_train, seed=seed, emulator=emulator)
    test = ae.make_apogee_like(n_test, seed=seed + 1, emulator=emulator)
    for prefix, data in (("train", train), ("test", test)):
        np.save(directory / f"{prefix}_labels.npy", data.labels)
        np.save(directory / f"{prefix}_flux.npy", data.flux)
        np.save(directory / f"{prefix}_ivar.npy", data.ivar)
    np.save(directory / "wavelength.npy", train.wavelength)


def run_ours(directory: Path) -> dict:
    """Worker: train and test photosphere's Cannon on the saved data (in this process)."""
    from photosphere.models.cannon import CannonModel

    d = directory
    lab, flux, ivar = (np.load(d / f"train_{k}.npy") for k in ("labels", "flux", "ivar"))
    tflux, tivar = np.load(d / "test_flux.npy"), np.load(d / "test_ivar.npy")
    # the first training in a process loads the compiled numba kernel from its on-disk cache
    # (or compiles it, the first time ever): timed here on a small slice, apart from the
    # (warm) training timed below
    t0 = time.perf_counter()
    CannonModel(LABELS).fit(lab, flux[:, :64], ivar[:, :64])
    warmup_s = time.perf_counter() - t0
    model = CannonModel(LABELS)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(lab, flux, ivar, np.load(d / "wavelength.npy"))
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    fit = model.infer_labels(tflux, tivar)
    test_wall, test_cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(d / "ours_labels.npy", fit.labels)
    np.save(d / "ours_sigma.npy", fit.sigma)
    search = model.provenance_.get("s2_search", {})
    # the rate of one large dense product of the training's shape on this core now (the
    # normal-matrix build of every pixel at once): our flops at that rate are the time the
    # arithmetic alone would take
    products = np.ascontiguousarray(np.random.default_rng(0).normal(size=(126, lab.shape[0])))
    t0 = time.perf_counter()
    products @ ivar
    gemm_s = time.perf_counter() - t0
    return {"train_wall_s": train_wall, "train_cpu_s": train_cpu, "test_wall_s": test_wall,
            "test_cpu_s": test_cpu, "n_flagged": int(np.count_nonzero(fit.flags)),
            "train_flop": search.get("flop"),
            "evaluations_per_pixel": search.get("evaluations_per_pixel"),
            "engine": search.get("engine"), "first_training_call_s": warmup_s,
            "cheap_evaluations_per_pixel": search.get("cheap_evaluations_per_pixel"),
            "gemm_gflops": 2.0 * products.size * ivar.shape[1] / gemm_s / 1e9,
            "environment": environment()}


def accuracy(labels: np.ndarray, truth: np.ndarray) -> dict:
    ok = np.all(np.isfinite(labels), axis=1)
    diff = labels[ok] - truth[ok]
    mad = 1.4826 * np.median(np.abs(diff - np.median(diff, axis=0)), axis=0)
    return {"n_failed": int((~ok).sum()),
            **{name: {"bias": float(np.mean(diff[:, k])), "scatter": float(np.std(diff[:, k])),
                      "robust_scatter": float(mad[k])} for k, name in enumerate(LABELS)}}


def _subprocess(cmd: list[str], threads: int) -> dict:
    """Run one worker; its JSON result plus the 1-minute load average before and after it."""
    env = thread_env(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"),
                                                    str(HERE)) if p)
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_average_1min"] = [load_before, os.getloadavg()[0]]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default="/work/peers/annieslasso/bin/python",
                   help="python of the environment with annieslasso (numpy < 2.4)")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--n-train", type=int, default=1855)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="shared data folder (holds apogee/payne/)")
    p.add_argument("--workdir", default=None, help="keep the .npy files here")
    p.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.worker == "ours":
        print(json.dumps(run_ours(Path(args.workdir))))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        make_data(work, args.n_train, args.n_test, args.seed, args.data_dir)
        truth = np.load(work / "test_labels.npy")
        n_pix = np.load(work / "wavelength.npy").size
        ours = _subprocess([sys.executable, __file__, "--worker", "ours", "--workdir", str(work)],
                           args.threads)
        ours["accuracy"] = accuracy(np.load(work / "ours_labels.npy"), truth)
        result = {"n_train": args.n_train, "n_test": args.n_test, "n_pixels": int(n_pix),
                  "threads": args.threads, "ours": ours}
        if not args.skip_peer:
            script = work / "peer_worker.py"
            script.write_text(PEER_SCRIPT)
            peer = _subprocess([args.peer_python, str(script), str(work), ",".join(LABELS),
                                str(HERE)], args.threads)
            peer["accuracy"] = accuracy(np.load(work / "peer_labels.npy"), truth)
            result["peer"] = peer
            loads = [*ours["load_average_1min"], *peer["load_average_1min"]]
            result["ratio_refusals"] = ratio_refusals(ours["environment"], peer["environment"],
                                                      loads)
            result["train_speedup"] = peer["train_wall_s"] / ours["train_wall_s"]
            result["test_throughput_ratio"] = peer["test_wall_s"] / ours["test_wall_s"]
            result["comparable"] = not result["ratio_refusals"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_table(result)
    return 0


def _print_table(r: dict) -> None:
    o, q = r["ours"], r.get("peer")
    print(f"The Cannon, {r['n_train']} training stars x {r['n_pixels']} px, 5 labels, quadratic; "
          f"{r['n_test']} held-out stars; {r['threads']} BLAS threads")
    print(f"{'':34s}{'photosphere':>16s}{'annieslasso':>16s}")

    def row(name, a, b, fmt="{:.2f}"):
        bs = fmt.format(b) if b is not None else "-"
        print(f"{name:34s}{fmt.format(a):>16s}{bs:>16s}")

    row("training wall time [s]", o["train_wall_s"], q and q["train_wall_s"])
    if o.get("train_flop"):
        cheap = o.get("cheap_evaluations_per_pixel")
        print(f"{'  our matrix products':34s}{o['train_flop'] / 1e9:>12.1f} GFLOP, "
              f"{o['train_flop'] / 1e9 / o['train_wall_s']:.1f} GFLOP/s "
              f"({o['evaluations_per_pixel']:.2f} normal-matrix builds"
              + (f" + {cheap:.2f} refinement-only evaluations" if cheap is not None else "")
              + " per pixel)")
        if o.get("gemm_gflops"):
            print(f"{'  one dense product (126 x stars)':34s}{o['gemm_gflops']:>12.1f} GFLOP/s "
                  f"-> our flops alone: {o['train_flop'] / 1e9 / o['gemm_gflops']:.2f} s")
    if o.get("engine"):
        print(f"{'  s² search engine':34s}{o['engine']:>16s}   (first training call in the "
              f"process, 64 px: {o['first_training_call_s']:.2f} s: loads or compiles the "
              "kernel; the time above is a warm call)")
    row("training CPU time [s]", o["train_cpu_s"], q and q["train_cpu_s"])
    row("test step wall time [s]", o["test_wall_s"], q and q["test_wall_s"])
    row("test step CPU time [s]", o["test_cpu_s"], q and q["test_cpu_s"])
    row("test throughput [spectra/s]", r["n_test"] / o["test_wall_s"],
        q and r["n_test"] / q["test_wall_s"], "{:.1f}")
    for name in LABELS:
        a = o["accuracy"][name]
        b = q["accuracy"][name] if q else None
        row(f"{name} bias", a["bias"], b and b["bias"], "{:.4f}")
        row(f"{name} scatter (std)", a["scatter"], b and b["scatter"], "{:.4f}")
    row("failed fits", o["accuracy"]["n_failed"], q and q["accuracy"]["n_failed"], "{:d}")
    for who, res in (("photosphere", o), ("annieslasso", q)):
        if res:
            before, after = res["load_average_1min"]
            print(f"load average (1 min) around the {who} run: {before:.2f} -> {after:.2f}")
    for who, res in (("photosphere", o), ("annieslasso", q)):
        if res:
            print(f"{who}: {describe(res['environment'])}")
    if q:
        print_ratio("training speed-up (wall)", r["train_speedup"], r["ratio_refusals"])
        print_ratio("test throughput ratio (wall)", r["test_throughput_ratio"],
                    r["ratio_refusals"])


if __name__ == "__main__":
    sys.exit(main())
