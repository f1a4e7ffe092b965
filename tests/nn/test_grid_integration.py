"""`photosphere nn train --preset cpu --grid GRID`, `eval` and `predict` through the real grid
store and interpolator (photosphere.grids), on a small grid built with the grids stream's analytic
test synthesizer (not Turbospectrum) over 5020-5380 Å, and the HARPS-N layout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_file
from photosphere import cli
from photosphere.errors import OutOfGridError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grids"))
from _analytic import build_small  # the grids tests' analytic synthesizer

torch.set_num_threads(1)
SMALL = ["--epochs", "1", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--batch-size", "4"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("grid") / "harpsn.h5", wavelength_min=5020.0,
                       wavelength_max=5380.0, velocity_step=1.0, n_chunks=8)


@pytest.mark.slow
def test_train_eval_predict_on_a_grid_file(grid, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "resnet.pt"
    assert cli.main(["nn", "train", "--preset", "cpu", "--grid", str(grid), "--out", str(model),
                     *SMALL, "--json"]) == 0
    # the noise-free images of the splits went to the cache, keyed by the grid file
    cache = tmp_path / "cache/nn/images"
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["train", "val"]
    trained = json.loads(capsys.readouterr().out)
    bounds = trained["config"]["data"]["bounds"]
    assert bounds["teff"] == [5500.0, 7000.0] and bounds["logg"] == [1.0, 3.0]
    assert bounds["vsini"] == [0.0, 30.0]
    assert model.stat().st_size < 20e6  # the size limit of a shipped default model
    assert cli.main(["nn", "eval", str(model), "--grid", str(grid), "--snr", "20", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert runs[0]["n_test"] == 4 and np.isfinite(runs[0]["mae"]["teff"])
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["test", "train", "val"]
    sun = shared_file("optical/uves_sun_norm.txt")
    assert cli.main(["nn", "predict", str(sun), "--model", str(model), "--json"]) == 0
    labels = json.loads(capsys.readouterr().out)["labels"]
    assert all(np.isfinite(v["value"]) and v["sigma"] > 0 for v in labels.values())


def test_splits_avoid_the_holes_of_the_grid(grid):
    """The small grid lacks (teff 7000, logg 1): no star may need that node."""
    from photosphere.grids.interpolate import GridInterpolator
    from photosphere.nn.data import DataConfig, make_splits, source_coverage

    source = GridInterpolator(grid)
    bounds = {"teff": (5500.0, 7000.0), "logg": (1.0, 3.0), "feh": (-1.0, 0.0),
              "vsini": (0.0, 30.0)}
    cfg = DataConfig(bounds=bounds, n_train=400, n_val=50, n_test=50)
    valid = source_coverage(source, cfg.fixed)
    splits = make_splits(cfg, valid)
    every = torch.cat(list(splits.values()))
    assert len(every) == 500
    source.predict_mean_flux(every[:, :3])  # raises OutOfGridError for a label in the hole
    # without the coverage test, labels in the hole are drawn and the simulation would fail
    with pytest.raises(OutOfGridError, match="computed part of the grid"):
        source.predict_mean_flux(make_splits(cfg)["train"][:, :3])


@pytest.mark.slow
def test_train_and_eval_on_a_grid_with_empirical_line_strengths(grid, tmp_path, capsys,
                                                                 monkeypatch):
    """`grid calibrate-lines` -> `nn train --line-strengths` -> `nn eval`: the checkpoint holds
    the correction, eval rebuilds the corrected test stars (their own cache files), and an
    ensemble of a corrected and an uncorrected model is refused."""
    from photosphere.grids.line_strengths import LineStrengths
    from photosphere.nn.checkpoint import load_checkpoint

    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    sun = shared_file("optical/uves_sun_norm.txt")
    table = tmp_path / "ls.ecsv"
    assert cli.main(["grid", "calibrate-lines", "--grid", str(grid), "--observed", str(sun),
                     "--labels", "6000", "2.0", "0.0", "--iterations", "2", "-o", str(table),
                     "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rms_after"] < summary["rms_before"] and summary["output"] == str(table)
    strengths = LineStrengths.read(table)
    corrected, plain = tmp_path / "corrected.pt", tmp_path / "plain.pt"
    for out, extra in ((corrected, ["--line-strengths", str(table)]), (plain, [])):
        assert cli.main(["nn", "train", "--preset", "cpu", "--grid", str(grid), "--out",
                         str(out), *SMALL, *extra]) == 0
    capsys.readouterr()
    stored = load_checkpoint(corrected).data["line_strengths"]
    assert LineStrengths.from_dict(stored).digest == strengths.digest
    assert "line_strengths" not in load_checkpoint(plain).data
    # the two models' training stars are the same labels but different images
    cache = tmp_path / "cache/nn/images"
    assert sum(p.name.startswith("train") for p in cache.iterdir()) == 2
    assert cli.main(["nn", "eval", str(corrected), "--grid", str(grid), "--snr", "20",
                     "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["runs"][0]["mae"]["feh"])
    assert sum(p.name.startswith("test") for p in cache.iterdir()) == 1
    assert cli.main(["nn", "eval", str(corrected), str(plain), "--ensemble", "--grid",
                     str(grid), "--snr", "20"]) == 2
    assert "differently corrected grids (line strengths)" in capsys.readouterr().err
