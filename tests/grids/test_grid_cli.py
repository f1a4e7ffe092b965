"""The `photosphere grid` commands: build from a TOML file, info --json, emulator, synth, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _analytic import synthesize
from astropy.table import Table

from photosphere import cli
from photosphere.errors import DependencyError
from photosphere.grids import build as build_module
from photosphere.grids import presets

TOML = """
name = "cli-test"
wavelength_min = 5160.0
wavelength_max = 5180.0
velocity_step = 1.5
n_chunks = 2

[axes]
teff = { min = 5500, max = 6500, step = 500 }
logg = [3.0, 4.0]

[fixed]
feh = 0.0
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "grid.toml").write_text(TOML)
    mp = pytest.MonkeyPatch()
    mp.setattr(build_module, "default_synthesizer", lambda: synthesize)
    try:
        rc = cli.main(["grid", "build", "--spec", str(tmp / "grid.toml"), "-o",
                       str(tmp / "g.h5"), "--scheduler", "synchronous", "--no-progress"])
    finally:
        mp.undo()
    assert rc == 0
    return tmp / "g.h5"


def test_build_from_toml_then_info_json(built, capsys):
    capsys.readouterr()
    assert cli.main(["grid", "info", str(built), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"]["teff"] == {"min": 5500.0, "max": 6500.0, "step": 500.0, "n": 3,
                                      "unit": "K"}
    assert info["labels"]["logg"]["step"] == 1.0
    assert info["fixed_labels"] == {"feh": 0.0}
    lo, hi = info["wavelength_range"]
    assert lo == pytest.approx(5160.0) and 5180.0 <= hi < 5180.1
    assert info["velocity_step"] == 1.5 and info["n_present"] == 6
    assert cli.main(["grid", "info", str(built)]) == 0
    assert "teff" in capsys.readouterr().out


def test_yaml_definition_matches_toml(tmp_path):
    (tmp_path / "g.toml").write_text(TOML)
    (tmp_path / "g.yaml").write_text(
        "name: cli-test\nwavelength_min: 5160.0\nwavelength_max: 5180.0\nvelocity_step: 1.5\n"
        "n_chunks: 2\naxes:\n  teff: {min: 5500, max: 6500, step: 500}\n  logg: [3.0, 4.0]\n"
        "fixed:\n  feh: 0.0\n")
    assert presets.load_grid_spec(tmp_path / "g.yaml") == presets.load_grid_spec(
        tmp_path / "g.toml")
    (tmp_path / "bad.toml").write_text("name = 'x'\n[axes]\nteff = {min = 1}\n")
    with pytest.raises(presets.GridError, match="lacks 'wavelength_min'"):
        presets.load_grid_spec(tmp_path / "bad.toml")


def test_emulator_train_and_synth_from_grid(built, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["grid", "emulator", "train", str(built), "-o", str(tmp_path / "e.h5"),
                     "--iterations", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_training_nodes"] == 6 and summary["loo_abs_error_p95"] >= 0
    assert summary["sigma_scale"] > 0
    out = tmp_path / "s.ecsv"
    assert cli.main(["grid", "synth", "--grid", str(built), "--teff", "5800", "--logg", "3.5",
                     "-o", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    table = Table.read(out)
    assert payload["n_pixels"] == len(table) and np.all(table["flux"] <= 1.0 + 1e-6)
    np.testing.assert_allclose(table["flux_absolute"], table["flux"] * table["continuum"])
    broad = tmp_path / "b.ecsv"
    assert cli.main(["grid", "synth", "--grid", str(built), "--teff", "5800", "--logg", "3.5",
                     "--vsini", "15", "--resolution", "40000", "--rv", "20", "-o",
                     str(broad)]) == 0
    b = Table.read(broad)
    ok = np.isfinite(b["flux"])
    assert ok.sum() > 0.9 * len(b)
    assert b["flux"][ok].min() > table["flux"].min()  # broadening fills in the deepest line


def test_user_errors_exit_2_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(presets, "default_grid_path", lambda: tmp_path / "absent.h5")
    assert cli.main(["grid", "info"]) == 2
    assert "photosphere grid build --preset default" in capsys.readouterr().err
    assert cli.main(["grid", "build", "--preset", "nope", "-o", str(tmp_path / "x.h5")]) == 2
    assert "known presets: default, harpsn-dl" in capsys.readouterr().err

    def no_compiler():
        raise DependencyError("gfortran is missing: apt-get install gfortran")

    monkeypatch.setattr(build_module, "default_synthesizer", no_compiler)
    assert cli.main(["grid", "synth", "--teff", "5800", "--logg", "4.4", "-o",
                     str(tmp_path / "s.fits")]) == 2
    assert "gfortran" in capsys.readouterr().err
    assert not (tmp_path / "s.fits").exists()


def test_info_of_the_embedded_grid_json(capsys):
    assert cli.main(["grid", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "default" and info["n_present"] == info["n_nodes"] == 702
    assert info["labels"]["teff"] == {"min": 4000.0, "max": 7000.0, "step": 250.0, "n": 13,
                                      "unit": "K"}
    assert (info["labels"]["logg"]["min"], info["labels"]["logg"]["max"],
            info["labels"]["logg"]["step"]) == (1.0, 5.0, 0.5)
    assert (info["labels"]["feh"]["min"], info["labels"]["feh"]["max"],
            info["labels"]["feh"]["step"]) == (-2.0, 0.5, 0.5)
    lo, hi = info["wavelength_range"]
    assert lo == pytest.approx(5050.0) and 5350.0 <= hi < 5350.1


def test_bad_grid_input_exits_2_and_names_the_problem(built, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "s.fits"
    assert cli.main(["grid", "synth", "--grid", str(built), "--teff", "2500", "--logg", "3.5",
                     "-o", str(out)]) == 2
    assert "teff=2500 is outside the grid (5500-6500 K)" in capsys.readouterr().err
    assert not out.exists()
    half = tmp_path / "half.h5"
    half.write_bytes(built.read_bytes()[: built.stat().st_size // 2])
    assert cli.main(["grid", "info", str(half)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert cli.main(["grid", "synth", "--grid", str(half), "--teff", "6000", "--logg", "3.5",
                     "-o", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err and not out.exists()
