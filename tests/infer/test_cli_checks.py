"""`photosphere fit`: options checked before any work, flagged results exit 3, a failed plot keeps
the result, Ctrl-C during MCMC is clean."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from test_cli_fit import TRUTH, _write_text

from analytic_model import AnalyticModel, simulate
from photosphere import cli
from photosphere.infer import batch, mcmc


@pytest.fixture
def analytic_grid(monkeypatch):
    model = AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    monkeypatch.setattr(batch, "load_grid_model", lambda path=None, line_strengths=None: model)
    return model


@pytest.fixture
def star(analytic_grid, tmp_path):
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 600), resolution=40000,
                    snr=60, seed=4)[0]
    return str(_write_text(tmp_path / "star.txt", spec))


@pytest.fixture
def no_work(monkeypatch):
    """Any read or fit fails the test: the check must come first."""
    def fail(*a, **k):
        pytest.fail("work started before the options were checked")
    monkeypatch.setattr(batch, "prepare_spectrum", fail)
    monkeypatch.setattr(batch, "fit_many", fail)


@pytest.mark.parametrize("options, message", [
    (["--workers", "0", "-o", "r.ecsv"], "--workers: 0 must be >= 1"),
    (["--resolution", "nan"], "--resolution: 'nan' is not a finite number"),
    (["--snr", "inf"], "--snr: 'inf' is not a finite number"),
    (["--snr", "-3"], "--snr: -3 must be > 0"),
    (["--walkers", "-2", "--mcmc"], "--walkers: -2 must be >= 1"),
    (["--continuum-degree", "999"], "--continuum-degree: 999 must be in -1..30"),
])
def test_bad_numbers_are_refused_by_the_parser(tmp_path, capsys, no_work, options, message):
    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", str(f), *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--mcmc", "--prior", "vsini=-5:1"], "vsini >= 0"),
    (["--mcmc", "--prior", "logg=4:nan"], "sigma=nan must be a finite number > 0"),
    (["--initial", "teff=nan"], "must be a finite number"),
    (["--wavelength-range", "5030", "5010"], "MIN must be below MAX"),
])
def test_bad_values_are_refused_before_reading(tmp_path, capsys, no_work, options, message):
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert cli.main(["fit", str(f), *options]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--walkers", "3"], "n_walkers=3 is too few"),
    (["--prior", "mass=1:0.1"], "no such label"),
])
def test_sampler_settings_are_checked_before_the_least_squares_start(star, capsys, monkeypatch,
                                                                     options, message):
    monkeypatch.setattr(mcmc, "fit", lambda *a, **k: pytest.fail("least squares ran first"))
    assert cli.main(["fit", star, "--mcmc", "--steps", "10", *options]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_labels_at_a_bound_are_flagged_with_exit_3(analytic_grid, tmp_path, capsys):
    hot = simulate(analytic_grid, {**TRUTH, "teff": 7600.0}, np.linspace(5005, 5035, 600),
                   resolution=40000, snr=60, seed=5)[0]   # hotter than the model's 7000 K edge
    path = str(_write_text(tmp_path / "hot.txt", hot))
    assert cli.main(["fit", path, "--resolution", "40000", "--json"]) == 3  # on main: 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)            # stdout stays one JSON document
    assert any("teff at a bound" in w for w in doc["warnings"])
    assert "photosphere fit: warning: teff at a bound" in captured.err
    assert cli.main(["fit", path, "--resolution", "40000", "--allow-flagged"]) == 0
    captured = capsys.readouterr()
    assert "warning: teff at a bound" in captured.err and "chi2_reduced" in captured.out


@pytest.mark.slow
def test_a_failed_plot_keeps_the_result(star, tmp_path, capsys, monkeypatch):
    from photosphere.infer.result import Result

    def broken(self, path=None, segments=None):
        raise OSError("disk full")
    monkeypatch.setattr(Result, "plot", broken)
    code = cli.main(["fit", star, "--resolution", "40000", "--json", "--plot",
                     str(tmp_path / "fit.png")])
    captured = capsys.readouterr()
    assert code == 2
    assert "teff" in json.loads(captured.out)["labels"]   # the result was printed first
    assert "--plot" in captured.err and "disk full" in captured.err


def test_ctrl_c_during_mcmc_is_clean(star, capsys, monkeypatch):
    calls = {"n": 0}
    original = mcmc.LogProbability.__call__

    def interrupt_on_third_call(self, theta):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)   # the user presses Ctrl-C mid-sampling
        return original(self, theta)
    monkeypatch.setattr(mcmc.LogProbability, "__call__", interrupt_on_third_call)
    code = cli.main(["fit", star, "--mcmc", "--walkers", "16", "--steps", "40", "--json",
                     "--initial", "teff=5800", "logg=4.3", "feh=-0.2", "vsini=5", "rv=8"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.out == ""                     # nothing on stdout to break --json
    assert "photosphere fit: interrupted; nothing was written" in captured.err
    assert "Traceback" not in captured.err and "rerun" not in captured.err
