"""`photosphere fit --scheduler tcp://...` against a Dask scheduler and workers started as separate
processes on 127.0.0.1 (as on a real cluster): a worker killed mid-run loses nothing (every
spectrum gets exactly one row), and a rerun fits only what is new (nothing is recomputed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import photosphere
from analytic_model import simulate
from photosphere.infer.batch import load_grid_model, read_table

FIT_ARGS = ["--resolution", "40000", "--model-error", "none", "--continuum-degree", "1"]


def _env() -> dict:
    """This interpreter's environment, with this checkout's photosphere importable, one thread."""
    src = str(Path(photosphere.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                MKL_NUM_THREADS="1")


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:   # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, *args], env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _rows(path: Path) -> list:
    try:
        table = read_table(path)
    except (OSError, ValueError):   # caught while being replaced: read again later
        return []
    return [] if table is None else list(table)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers on 127.0.0.1; the second has no nanny, so
    that killing it really removes it. Yields (address, killable worker)."""
    procs: list[subprocess.Popen] = []
    try:
        info = tmp_path / "scheduler.json"
        procs.append(_spawn(["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--dashboard-address", ":0",
                             "--scheduler-file", str(info)], tmp_path / "scheduler.log"))
        _wait(info.exists, 60, "the scheduler file")
        _wait(lambda: "address" in info.read_text(), 10, "the scheduler address")
        address = json.loads(info.read_text())["address"]
        for i, nanny in enumerate(("--nanny", "--no-nanny")):
            procs.append(_spawn(["-m", "distributed.cli.dask_worker", address, "--host",
                                 "127.0.0.1", "--nthreads", "1", "--nworkers", "1", nanny,
                                 "--dashboard-address", ":0", "--death-timeout", "60",
                                 "--local-directory", str(tmp_path / f"dask{i}")],
                                tmp_path / f"worker{i}.log"))
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs[2]
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _spectra(folder: Path, n: int, first: int = 0) -> list[Path]:
    grid = load_grid_model()
    rng = np.random.default_rng(first)
    wave = np.linspace(5150, 5170, 800)
    paths = []
    for i in range(first, first + n):
        truth = {"teff": rng.uniform(5200, 6300), "logg": rng.uniform(3.8, 4.5),
                 "feh": rng.uniform(-0.6, 0.2), "vsini": 5.0, "rv": rng.uniform(-10, 10)}
        spec = simulate(grid, truth, wave, resolution=40000, snr=100, seed=i)[0]
        path = folder / f"star{i:02d}.txt"
        np.savetxt(path, np.column_stack([spec.wavelength, spec.flux, spec.sigma]),
                   header="medium: air\nwavelength flux sigma")
        paths.append(path)
    return paths


def _progress(text: str) -> tuple[int, int]:
    """(last count, total) of the "fitting" progress bar in a log; every total must agree."""
    bars = re.findall(r"fitting:.*?\|\s*(\d+)/(\d+) \[", text)
    assert bars, text[-2000:]
    assert len({total for _, total in bars}) == 1, bars
    return int(bars[-1][0]), int(bars[-1][1])


def _fit(address: str, files: list[Path], out: Path, log: Path) -> subprocess.Popen:
    return _spawn(["-c", "import sys; from photosphere.cli import main; sys.exit(main())",
                   "fit", *map(str, files), "--scheduler", address, "-o", str(out), *FIT_ARGS],
                  log)


@pytest.mark.slow
def test_fit_on_a_separate_dask_cluster_survives_a_killed_worker_and_resumes(cluster,
                                                                             tmp_path):
    address, victim = cluster
    files = _spectra(tmp_path, 8)
    out = tmp_path / "results.ecsv"
    log = tmp_path / "fit1.log"
    run = _fit(address, files, out, log)
    try:
        _wait(lambda: len(_rows(out)) >= 1 or run.poll() is not None, 240, "the first row")
        assert run.poll() is None, log.read_text()[-2000:]
        os.kill(victim.pid, signal.SIGKILL)           # a worker dies mid-run
        assert len(_rows(out)) < len(files)
        run.wait(300)
    finally:
        _stop(run)
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    rows = _rows(out)
    sources = [r["source"] for r in rows]
    assert sorted(sources) == sorted(map(str, files))          # nothing lost, no duplicate
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    assert _progress(text) == (8, 8)                           # the progress bar, on stderr
    before = {r["source"]: float(r["teff"]) for r in rows}

    # a rerun with two new spectra fits those two only; the finished rows stay as they were
    new = _spectra(tmp_path, 2, first=8)
    log = tmp_path / "fit2.log"
    run = _fit(address, [*files, *new], out, log)
    try:
        run.wait(300)
    finally:
        _stop(run)
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    assert _progress(text) == (2, 2)                           # only the two new ones
    rows = _rows(out)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert {r["source"]: float(r["teff"]) for r in rows if r["source"] in before} == before
