"""Grid builds: Dask and serial agree, a killed build resumes, failures lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from _analytic import build_small, small_spec, synthesize

from photosphere.errors import DependencyError, GridError
from photosphere.grids.build import Journal, build_grid
from photosphere.grids.presets import get_preset
from photosphere.grids.store import GridStore

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("ref") / "ref.h5")


def _same_grid(a: Path, b: Path) -> None:
    with GridStore.open(a) as x, GridStore.open(b) as y:
        np.testing.assert_array_equal(x.present, y.present)
        np.testing.assert_array_equal(x.flux_all(), y.flux_all())
        np.testing.assert_array_equal(x.continuum_coarse(), y.continuum_coarse())


def _read_calls(path: Path) -> list[tuple[float, float, float]]:
    if not path.exists():
        return []
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_dask_local_cluster_build_matches_serial(tmp_path, reference, capfd):
    out = tmp_path / "dask.h5"
    report = build_grid(small_spec(), out, synthesizer=synthesize, n_workers=2, processes=False,
                        command="test")
    _same_grid(out, reference)
    assert report.n_computed == 24 and report.n_reused == 0 and report.n_missing == 2
    assert report.n_cores == 2
    err = capfd.readouterr().err
    assert report.n_synthesised == 22
    assert "22 models in" in err and "models/hour" in err and "per core" in err
    assert not Path(str(out) + ".partial").exists()


@pytest.mark.slow
def test_killed_build_resumes_without_recomputing(tmp_path, reference, monkeypatch, capfd):
    out = tmp_path / "killed.h5"
    log1, log2 = tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    script = (
        "from _analytic import small_spec, synthesize\n"
        "from photosphere.grids.build import build_grid\n"
        f"build_grid(small_spec(), {str(out)!r}, synthesizer=synthesize, n_workers=2,"
        " processes=False, progress=False)\n")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}",
           "PHOTOSPHERE_TEST_CALL_LOG": str(log1), "PHOTOSPHERE_TEST_SLEEP": "0.3"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    journal_nodes = Path(str(out) + ".partial") / "nodes"  # finished nodes; ".N.tmp.npz" are not
    deadline = time.time() + 180
    while time.time() < deadline and len(list(journal_nodes.glob("[0-9]*.npz"))) < 6:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed build must not leave a grid file"
    done = {int(p.stem) for p in journal_nodes.glob("[0-9]*.npz")}
    assert 6 <= len(done) < 24, "the kill must land mid-build"
    with pytest.raises(GridError, match="unfinished grid build"):
        GridStore.open(Path(str(out) + ".partial"))

    monkeypatch.setenv("PHOTOSPHERE_TEST_CALL_LOG", str(log2))
    report = build_grid(small_spec(), out, synthesizer=synthesize, scheduler="synchronous",
                        progress=True)
    assert f"resuming {out}.partial: {len(done)} of 24 nodes already done" in \
        capfd.readouterr().err
    spec = small_spec()
    second = set(_read_calls(log2))
    journalled = {tuple(spec.node_labels(i)[k] for k in ("teff", "logg", "feh")) for i in done}
    assert second.isdisjoint(journalled), "finished nodes were synthesised again"
    assert len(_read_calls(log2)) == 24 - len(done) == report.n_computed
    assert report.n_reused == len(done)
    _same_grid(out, reference)


def test_failed_nodes_are_reported_and_finished_ones_kept(tmp_path, reference, monkeypatch):
    out = tmp_path / "fail.h5"

    def flaky(teff, logg, feh, *args, **kw):
        if teff == 6000.0 and logg == 2.0:
            raise RuntimeError("Turbospectrum crashed")
        return synthesize(teff, logg, feh, *args, **kw)

    with pytest.raises(GridError, match=r"2 node\(s\) failed.*Turbospectrum crashed.*rerun"):
        build_grid(small_spec(), out, synthesizer=flaky, scheduler="synchronous", progress=False)
    assert not out.exists()
    assert len(Journal(out, small_spec()).done()) == 22
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("PHOTOSPHERE_TEST_CALL_LOG", str(log))
    report = build_grid(small_spec(), out, synthesizer=synthesize, scheduler="synchronous",
                        progress=False)
    assert sorted(_read_calls(log)) == [(6000.0, 2.0, -1.0), (6000.0, 2.0, 0.0)]
    assert report.n_computed == 2
    _same_grid(out, reference)


def test_partial_of_another_definition_and_existing_output(tmp_path, reference):
    out = tmp_path / "g.h5"
    Journal(out, small_spec())
    with pytest.raises(GridError, match="different grid definition"):
        build_grid(small_spec(velocity_step=2.0), out, synthesizer=synthesize,
                   scheduler="synchronous", progress=False)
    with pytest.raises(GridError, match=r"already exists.*overwrite"):
        build_grid(small_spec(), reference, synthesizer=synthesize, scheduler="synchronous")


def test_missing_compiler_fails_before_any_work(tmp_path, monkeypatch):
    fake = types.ModuleType("photosphere.grids.synth.turbospectrum")

    def ensure_built():
        raise DependencyError("gfortran is missing; install it with: apt-get install gfortran")

    fake.ensure_built = ensure_built
    fake.synthesize = synthesize
    monkeypatch.setitem(sys.modules, "photosphere.grids.synth.turbospectrum", fake)
    import photosphere.grids.synth as synth_pkg
    monkeypatch.setattr(synth_pkg, "turbospectrum", fake, raising=False)
    out = tmp_path / "x.h5"
    with pytest.raises(DependencyError, match="gfortran"):
        build_grid(small_spec(), out)
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(GridError, match=r"unknown grid preset 'nope'.*default.*harpsn-dl"):
        get_preset("nope")


def test_presets_cover_the_required_ranges():
    d = get_preset("default")
    assert d.axes["teff"][0] <= 4000 and d.axes["teff"][-1] >= 7000
    assert d.axes["logg"][0] <= 1 and d.axes["logg"][-1] >= 5
    assert d.axes["feh"][0] <= -2 and d.axes["feh"][-1] >= 0.5
    assert d.wavelength_min <= 5050 and d.wavelength_max >= 5350 and d.velocity_step <= 1.0
    h = get_preset("harpsn-dl")
    assert h.shape == (26, 11, 7) and h.atmosphere == "atlas9"
    assert np.allclose(np.diff(h.axes["teff"]), 250) and h.axes["teff"][-1] == 9750


@pytest.mark.slow
def test_existing_cluster_by_address_and_unreachable_scheduler(tmp_path, reference, monkeypatch):
    from dask.distributed import LocalCluster

    from photosphere.errors import NetworkError
    from photosphere.grids import build as build_module

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        out = tmp_path / "remote.h5"
        report = build_grid(small_spec(), out, synthesizer=synthesize,
                            scheduler=cluster.scheduler_address, progress=False)
        assert report.n_computed == 24 and report.n_cores == 1
        _same_grid(out, reference)
    monkeypatch.setattr(build_module, "SCHEDULER_TIMEOUT", "1s")
    with pytest.raises(NetworkError, match="cannot reach the Dask scheduler"):
        build_grid(small_spec(), tmp_path / "never.h5", synthesizer=synthesize,
                   scheduler="tcp://127.0.0.1:9", progress=False)
