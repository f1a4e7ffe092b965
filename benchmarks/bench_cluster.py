"""Batch throughput on a Dask cluster started as separate processes (as on a real cluster).

Makes ``--n-spectra`` synthetic spectra from the default grid (``--pixels`` px in 5150-5180 Å,
R = 40 000, S/N 100, random Teff/log g/[Fe/H]/RV), starts ``dask scheduler`` and ``--workers``
single-threaded ``dask worker`` processes on 127.0.0.1, and times

    photosphere fit FILES --scheduler tcp://127.0.0.1:PORT -o results.ecsv --resolution 40000 \
        --model-error none

from launch to exit (imports, model loading on each worker, every fit, the table written after
each spectrum). Prints spectra per minute, per minute per core (one core = one worker thread),
the load average around the run and the environment (benchmarks/_shared.py). A run under a load
average above the core count is flagged: its per-core figure is not a result.

    PYTHONPATH=src python benchmarks/bench_cluster.py --n-spectra 1000 --workers 2
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

from _shared import BLAS_VARIABLES, describe, environment, thread_env
from photosphere.cli._checks import EXIT_FLAGGED

HERE = Path(__file__).resolve().parent
FIT_ARGS = ["--resolution", "40000", "--model-error", "none"]


def make_spectra(folder: Path, n: int, pixels: int, seed: int = 0) -> list[Path]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from analytic_model import simulate
    from photosphere.infer.batch import load_grid_model

    grid = load_grid_model()
    rng = np.random.default_rng(seed)
    wave = np.linspace(5150, 5180, pixels)
    paths = []
    for i in range(n):
        truth = {"teff": rng.uniform(5000, 6500), "logg": rng.uniform(3.5, 4.6),
                 "feh": rng.uniform(-1.0, 0.3), "vsini": 5.0, "rv": rng.uniform(-20, 20)}
        spec = simulate(grid, truth, wave, resolution=40000, snr=100, seed=seed + i)[0]
        path = folder / f"star{i:05d}.txt"
        np.savetxt(path, np.column_stack([spec.wavelength, spec.flux, spec.sigma]),
                   header="medium: air\nwavelength flux sigma")
        paths.append(path)
    return paths


def _spawn(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def run(n_spectra: int, n_workers: int, pixels: int, work: Path) -> dict:
    env = thread_env(1)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    folder = work / "spectra"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = make_spectra(folder, n_spectra, pixels)
    make_s = time.perf_counter() - t0
    procs = []
    try:
        info = work / "scheduler.json"
        procs.append(_spawn(["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--dashboard-address", ":0", "--scheduler-file",
                             str(info)], work / "scheduler.log", env))
        end = time.monotonic() + 60
        while not (info.exists() and "address" in info.read_text()):
            if time.monotonic() > end:
                raise RuntimeError("the scheduler did not start: " +
                                   (work / "scheduler.log").read_text()[-2000:])
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        procs.append(_spawn(["-m", "distributed.cli.dask_worker", address, "--host",
                             "127.0.0.1", "--nthreads", "1", "--nworkers", str(n_workers),
                             "--dashboard-address", ":0", "--local-directory",
                             str(work / "dask")], work / "workers.log", env))
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=120)
        out = work / "results.ecsv"
        loads = [os.getloadavg()[0]]
        t0 = time.perf_counter()
        fit = subprocess.run([sys.executable, "-c", "import sys; from photosphere.cli import "
                              "main; sys.exit(main())", "fit", *map(str, files), "--scheduler",
                              address, "-o", str(out), "--json", *FIT_ARGS],
                             env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        loads.append(os.getloadavg()[0])
        if fit.returncode not in (0, EXIT_FLAGGED):  # 3: every spectrum fitted, some flagged
            raise RuntimeError(f"photosphere fit failed:\n{fit.stderr[-3000:]}")
        doc = json.loads(fit.stdout)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"n_spectra": n_spectra, "n_ok": doc["n_ok"], "exit_code": fit.returncode,
            "n_warnings": fit.stderr.count(": warning: "), "workers": n_workers,
            "pixels": pixels, "make_spectra_s": make_s, "wall_s": wall,
            "spectra_per_minute": 60 * n_spectra / wall,
            "spectra_per_minute_per_core": 60 * n_spectra / wall / n_workers,
            "load_average_1min": loads, "environment": environment(),
            "worker_variables": {k: env[k] for k in BLAS_VARIABLES if k in env}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-spectra", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pixels", type=int, default=1500)
    p.add_argument("--workdir", help="keep the spectra, table and logs here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        r = run(args.n_spectra, args.workers, args.pixels, work)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['n_ok']}/{r['n_spectra']} spectra ({r['pixels']} px) fitted on {r['workers']} "
          f"single-threaded workers in {r['wall_s']:.1f} s wall (launch to exit); exit code "
          f"{r['exit_code']}, {r['n_warnings']} warnings (labels flagged, e.g. pinned on a node)")
    print(f"throughput {r['spectra_per_minute']:.1f} spectra/min, "
          f"{r['spectra_per_minute_per_core']:.1f} spectra/min per core")
    before, after = r["load_average_1min"]
    print(f"load average (1 min) {before:.2f} -> {after:.2f}; driver: "
          f"{describe(r['environment'])}; workers: {r['worker_variables']}")
    cores = r["environment"]["cores"]
    if max(before, after) > cores:
        print(f"NOTE: the load exceeded the {cores} cores: other jobs shared the CPU, so the "
              "per-core figure understates the throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
