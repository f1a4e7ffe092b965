"""`photosphere fit` on text spectra, with the analytic model standing in for the grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analytic_model import AnalyticModel, simulate
from photosphere import cli
from photosphere.grids.line_strengths import CorrectedSource, LineStrengths
from photosphere.infer import batch

TRUTH = {"teff": 5800.0, "logg": 4.3, "feh": -0.2, "vsini": 5.0, "rv": 8.0}


@pytest.fixture
def analytic_grid(monkeypatch):
    model = AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    monkeypatch.setattr(batch, "load_grid_model", lambda path=None, line_strengths=None: (
        model if line_strengths is None
        else CorrectedSource(model, LineStrengths.read(line_strengths))))
    return model


def _write_text(path, spectrum, with_sigma=True):
    cols = [spectrum.wavelength, spectrum.flux] + ([spectrum.sigma] if with_sigma else [])
    np.savetxt(path, np.column_stack(cols), header="medium: air\nwavelength flux"
               + (" sigma" if with_sigma else ""))
    return path


@pytest.mark.slow
def test_fit_json_prints_labels_and_sigmas(analytic_grid, tmp_path, capsys):
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 1200), resolution=40000,
                    snr=80, seed=4)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    code = cli.main(["fit", str(path), "--resolution", "40000", "--json", "--clip", "4",
                     "--plot", str(tmp_path / "fit.png")])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    teff = doc["labels"]["teff"]
    assert abs(teff["value"] - 5800.0) < 5 * teff["sigma"]
    assert doc["chi2_reduced"] == pytest.approx(1.0, abs=0.15)
    assert doc["flags"]["clip_sigma"] == 4.0
    assert doc["flags"]["clipped"] < 0.01 * 1200   # Gaussian noise: beyond 4σ is rare
    assert (tmp_path / "fit.png").stat().st_size > 0


@pytest.mark.slow
def test_fit_without_sigma_estimates_it_and_accepts_fixed(analytic_grid, tmp_path, capsys):
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 1200), resolution=40000,
                    snr=80, seed=5)[0]
    path = _write_text(tmp_path / "nosigma.txt", spec, with_sigma=False)
    code = cli.main(["fit", str(path), "--resolution", "40000", "--fix", "logg=4.3",
                     "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"]["logg"] == {"value": 4.3, "sigma": None}
    assert doc["chi2_reduced"] == pytest.approx(1.0, abs=0.3)


def test_user_mistakes_exit_2_with_a_message(analytic_grid, tmp_path, capsys):
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 300), snr=50)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    assert cli.main(["fit", str(path), "--fix", "logg"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["fit", str(tmp_path / "missing*.txt")]) == 2
    assert "no file matches" in capsys.readouterr().err
    far = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 300), snr=50)[0]
    far = far.replace(wavelength=far.wavelength + 2000)
    assert cli.main(["fit", str(_write_text(tmp_path / "far.txt", far))]) == 2
    assert "no observed pixel can be predicted" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--mcmc", "--clip", "3"]) == 2
    assert "--clip is for least squares" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--macroturbulence", "-2"]) == 2
    assert "--macroturbulence '-2' is not a value" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--model", "spots", "--macroturbulence", "3"]) == 2
    assert "--macroturbulence is not available" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--model", "spots", "--clip", "3"]) == 2
    assert "--clip is not available with --model spots" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--prior", "logg=4.3:0.1"]) == 2
    assert "--prior needs --mcmc" in capsys.readouterr().err
    for bad in ("logg=4.3", "=4.3:0.1", "logg=a:b", "logg=4.3:-1"):
        assert cli.main(["fit", str(path), "--mcmc", "--prior", bad]) == 2
        assert "prior" in capsys.readouterr().err
    assert cli.main(["fit", str(path), "--mcmc", "--steps", "4", "--prior", "mass=1:0.1"]) == 2
    assert "no such label" in capsys.readouterr().err


@pytest.mark.slow
def test_gaussian_prior_pulls_the_posterior(analytic_grid, tmp_path, capsys):
    """A tight Gaussian prior on log g, far from the data's value, moves the posterior to it."""
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 600), resolution=40000,
                    snr=20, seed=5)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    base = ["fit", str(path), "--resolution", "40000", "--mcmc", "--walkers", "16",
            "--steps", "300", "--json"]
    assert cli.main(base) == 0
    free = json.loads(capsys.readouterr().out)["labels"]["logg"]
    assert cli.main([*base, "--prior", "logg=3.6:0.02"]) == 0
    pulled = json.loads(capsys.readouterr().out)["labels"]["logg"]
    assert abs(pulled["value"] - 3.6) < 0.1
    assert abs(free["value"] - 3.6) > 0.3


def test_missing_grid_file_is_a_clear_error(tmp_path):
    from photosphere.errors import MissingFileError

    with pytest.raises(MissingFileError, match="--grid PATH"):
        batch.load_grid_model(str(tmp_path / "nogrid.h5"))


@pytest.mark.slow
def test_model_error_switch(monkeypatch, tmp_path, capsys):
    from analytic_model import AnalyticModelWithTemplates

    model = AnalyticModelWithTemplates(5000.0, 5040.0, n_lines=20, model_sigma=0.005)
    monkeypatch.setattr(batch, "load_grid_model", lambda path=None, line_strengths=None: model)
    spec = simulate(model, TRUTH, np.linspace(5005, 5035, 800), resolution=40000, snr=80,
                    seed=6)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    docs = {}
    for choice in ("auto", "none"):
        assert cli.main(["fit", str(path), "--resolution", "40000", "--json",
                         "--model-error", choice]) == 0
        docs[choice] = json.loads(capsys.readouterr().out)
    assert docs["auto"]["provenance"]["model_error"] == "templates"
    assert docs["none"]["provenance"]["model_error"] == "none"
    # "none" adds the model's diagonal variance instead: different σ
    assert docs["auto"]["labels"]["teff"]["sigma"] != docs["none"]["labels"]["teff"]["sigma"]
    with pytest.raises(SystemExit):
        cli.main(["fit", str(path), "--model-error", "diagonal"])


@pytest.mark.slow
def test_fit_through_empirical_line_strengths(analytic_grid, tmp_path, capsys):
    """`fit --line-strengths`: exponents of 1 change nothing; lines twice as strong in the
    model need a cooler or more metal-poor star; mixtures refuse it."""
    spec = simulate(analytic_grid, TRUTH, np.linspace(5005, 5035, 1200), resolution=40000,
                    snr=80, seed=4)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    wave = np.asarray(analytic_grid.wavelength)
    docs = {}
    for name, c in (("plain", None), ("ones", 1.0), ("double", 2.0)):
        extra = []
        if c is not None:
            table = LineStrengths(wave, np.full(wave.size, c)).write(tmp_path / f"{name}.ecsv")
            extra = ["--line-strengths", str(table)]
        assert cli.main(["fit", str(path), "--resolution", "40000", "--json", *extra]) == 0
        docs[name] = json.loads(capsys.readouterr().out)["labels"]
    for label in ("teff", "logg", "feh"):
        assert docs["ones"][label]["value"] == pytest.approx(docs["plain"][label]["value"])
    assert abs(docs["double"]["feh"]["value"] - docs["plain"]["feh"]["value"]) > 0.1
    rc = cli.main(["fit", str(path), "--model", "spots", "--line-strengths",
                   str(tmp_path / "ones.ecsv")])
    assert rc == 2 and "absolute fluxes" in capsys.readouterr().err


def test_grid_model_with_line_strengths(tmp_path):
    from photosphere.grids.presets import default_grid_path

    grid = batch.load_grid_model()
    ones = LineStrengths(grid.wavelength, np.ones(grid.wavelength.size)).write(tmp_path / "1.ecsv")
    model = batch.load_grid_model(str(default_grid_path()), str(ones))
    assert isinstance(model, CorrectedSource) and hasattr(model, "predict_error_templates")
    from photosphere.errors import MissingFileError

    with pytest.raises(MissingFileError, match="calibrate-lines"):
        batch.load_grid_model(None, str(tmp_path / "none.ecsv"))


@pytest.mark.slow
def test_the_terminal_and_json_say_which_model_and_why(monkeypatch, tmp_path, capsys):
    """No --grid: the model is chosen by the spectrum's range (grids.default_model) and named
    on the terminal and in the JSON; --grid default forces the embedded grid. The analytic
    model stands in for whichever model is loaded; what the loader was asked for is recorded."""
    from photosphere.grids.default_model import optical_model_path

    if optical_model_path() is None:
        pytest.skip("this installation does not carry the optical emulator")
    model = AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    asked = []
    monkeypatch.setattr(batch, "load_grid_model", lambda path=None, line_strengths=None: (
        asked.append(path) or model))
    narrow = simulate(model, TRUTH, np.linspace(5005, 5035, 300), resolution=40000, snr=80,
                      seed=4)[0]
    wide_wave = np.linspace(4800.0, 6800.0, 4000)
    wide = narrow.replace(wavelength=wide_wave, flux=np.interp(wide_wave, narrow.wavelength,
                                                               narrow.flux),
                          sigma=np.full(wide_wave.size, 0.0125), mask=None)
    for name, spectrum in (("narrow", narrow), ("wide", wide)):
        _write_text(tmp_path / f"{name}.txt", spectrum)
    base = ["--resolution", "40000", "--allow-flagged", "--no-clip", "--misfit", "none",
            "--fix", "vsini=5", "rv=8"]
    assert cli.main(["fit", str(tmp_path / "narrow.txt"), *base]) == 0
    assert asked[-1] is None
    assert ("model: embedded (default grid; the spectrum covers 0 of the optical model's 7 "
            "windows, 2 needed)") in capsys.readouterr().out
    assert cli.main(["fit", str(tmp_path / "wide.txt"), *base, "--json"]) == 0
    assert asked[-1] == "optical"
    doc = json.loads(capsys.readouterr().out)
    assert doc["provenance"]["model"] == {"name": "optical",
                                          "reason": "shipped emulator; covers 7 of its 7 windows",
                                          "windows_covered": 7, "windows": 7}
    assert cli.main(["fit", str(tmp_path / "wide.txt"), *base, "--grid", "default"]) == 0
    assert asked[-1] is None
    assert "model: embedded (given: default)" in capsys.readouterr().out


def test_fit_file_chooses_per_spectrum_and_notes_the_row(tmp_path):
    """The batch runner's rows: ``model`` names what each file was fitted with."""
    from photosphere.grids.default_model import ModelFactory
    from photosphere.infer.protocol import merge_defaults

    model = AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)
    spec = simulate(model, TRUTH, np.linspace(5005, 5035, 1200), resolution=40000, snr=80,
                    seed=4)[0]
    path = _write_text(tmp_path / "star.txt", spec)
    factory = ModelFactory(None, None, loader=lambda name, lines: model)
    row = batch.fit_file(str(path), factory, fit_kwargs=merge_defaults({"resolution": 40000}))
    assert row["status"] == "ok" and row["model"] == "embedded"
    assert abs(row["teff"] - TRUTH["teff"]) < 5 * row["teff_err"]
