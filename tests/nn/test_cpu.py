"""`nn train` on every CPU: oneDNN's backward (torch 2.13.0+cpu) segfaults on AVX-512/AMX CPUs,
so training routes around it there (photosphere.nn._cpu)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from photosphere.nn._cpu import cpu_flags, onednn_training_unsafe, safe_training

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw amx_tile amx_int8\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_cpu_flags_and_the_decision(monkeypatch):
    monkeypatch.delenv("PHOTOSPHERE_ONEDNN", raising=False)
    assert {"avx512f", "amx_tile"} <= cpu_flags(XEON)
    assert onednn_training_unsafe(cpu_flags(XEON))
    assert not onednn_training_unsafe(cpu_flags(EPYC))
    monkeypatch.setenv("PHOTOSPHERE_ONEDNN", "1")   # a fixed torch: keep oneDNN
    assert not onednn_training_unsafe(cpu_flags(XEON))
    monkeypatch.setenv("PHOTOSPHERE_ONEDNN", "0")
    assert onednn_training_unsafe(cpu_flags(EPYC))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_training_switches_onednn_off_only_where_needed_and_restores_it(monkeypatch):
    monkeypatch.delenv("PHOTOSPHERE_ONEDNN", raising=False)
    before = torch.backends.mkldnn.enabled
    with safe_training(cpu_flags(XEON)) as off:
        assert off and not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled == before
    with safe_training(cpu_flags(EPYC)) as off:
        assert not off and torch.backends.mkldnn.enabled == before


_TRAIN = """
import sys
sys.path[:0] = [{grids!r}]
from _analytic import build_small
from photosphere.cli import main
grid = build_small(sys.argv[1], wavelength_min=5020.0, wavelength_max=5380.0, n_chunks=8)
sys.exit(main(["nn", "train", "--preset", "cpu", "--grid", str(grid), "--out", sys.argv[2],
               "--epochs", "1", "--n-train", "8", "--n-val", "4", "--n-test", "4",
               "--batch-size", "4", "--no-cache"]))
"""


@pytest.mark.slow
def test_nn_train_does_not_crash_on_this_cpu(tmp_path):
    """In a child process, so that a segfault fails this test instead of killing the suite
    (on an AVX-512/AMX Xeon it died with SIGSEGV/SIGABRT before the fix)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1",
           "PHOTOSPHERE_CACHE": str(tmp_path / "cache")}
    env.pop("PHOTOSPHERE_ONEDNN", None)
    run = subprocess.run([sys.executable, "-c", _TRAIN.format(grids=str(HERE.parent / "grids")),
                          str(tmp_path / "g.h5"), str(tmp_path / "m.pt")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-3000:]}"
    assert (tmp_path / "m.pt").stat().st_size > 0
