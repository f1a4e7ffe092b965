"""`photosphere nn train | eval | predict` end to end on the toy source (grid reader patched)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _toy import DATA_BOUNDS, ToyLayout, ToySource

from photosphere import cli
from photosphere.cli import nn as commands
from photosphere.nn import predict
from photosphere.nn.predict import load_model, predict_spectrum
from photosphere.spectrum import EchelleSpectrum

torch.set_num_threads(1)
TINY = ["--epochs", "2", "--n-train", "24", "--n-val", "8", "--n-test", "8", "--batch-size", "8"]


@pytest.fixture
def toy_grid(monkeypatch, tmp_path):
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("photosphere.nn.train.source_from_grid",
                        lambda path, line_strengths=None, calibrated=True: ToySource())
    monkeypatch.setattr(commands, "_layout", lambda path, source: ToyLayout())


def _run(capsys, argv):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
def test_train_eval_predict(tmp_path, capsys, toy_grid):
    model = tmp_path / "m.pt"
    rc, out, _ = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--model", "attention",
                               "--out", str(model), *TINY, "--json"])
    assert rc == 0
    payload = json.loads(out)
    assert payload["epochs"] == 2 and len(payload["temperature"]) == 4
    # the study box clipped to the toy grid (teff 4000-7000, logg 1-5, feh -2..0.5)
    assert payload["config"]["data"]["bounds"]["teff"] == [4000.0, 7000.0]
    rc, out, _ = _run(capsys, ["nn", "eval", str(model), "--grid", "toy.h5", "--snr", "20",
                               "100", "--plots", str(tmp_path / "figs"), "--mc-samples", "3"])
    assert rc == 0
    assert "Table 2" in out and "Table 3" in out and "[study] DAE Attention-network" in out
    table2, table3 = out.split("Table 3")
    assert table2.count("Attention-network [m.pt]") == 2  # S/N 20 and 100
    assert table3.count("Attention-network [m.pt]") == 6  # raw, calibrated, +MC dropout
    figs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert figs == ["m_snr100_attention.png", "m_snr100_residuals.png", "m_snr100_sigma.png",
                    "m_snr20_attention.png", "m_snr20_residuals.png", "m_snr20_sigma.png"]
    rc, out, _ = _run(capsys, ["nn", "eval", str(model), "--grid", "toy.h5", "--snr", "20",
                               "--json"])
    runs = json.loads(out)["runs"]
    assert runs[0]["n_test"] == 8 and set(runs[0]["mae"]) == set(DATA_BOUNDS)
    # predict on an echelle spectrum in the layout (the library call behind `nn predict`)
    ck = load_model(model)
    img = np.ones((8, 256))
    res = predict_spectrum(EchelleSpectrum(ToyLayout().wavelength, img), ck)
    assert set(res.labels) == set(DATA_BOUNDS)
    assert all(s > 0 for _, s in res.labels.values())
    assert res.provenance["calibrated"] is True
    # an "ensemble" of one model twice has no spread between members: same answer
    twice = predict_spectrum(EchelleSpectrum(ToyLayout().wavelength, img), [ck, ck])
    np.testing.assert_allclose(twice.covariance, res.covariance, rtol=1e-5)


def test_resume_through_cli(tmp_path, capsys, toy_grid):
    model = tmp_path / "m.pt"
    args = ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY[:-2],
            "--batch-size", "12", "--json"]
    assert _run(capsys, args)[0] == 0
    assert args[6:8] == ["--epochs", "2"]
    rc, _, err = _run(capsys, [*args[:7], "3", *args[8:], "--resume"])
    assert rc == 2 and "different configuration" in err  # another schedule cannot resume
    rc, out, _ = _run(capsys, [*args, "--resume"])  # finished: resuming adds nothing
    assert rc == 0 and json.loads(out)["final"]["epoch"] == 1


def test_predict_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(predict, "default_model_path", lambda: tmp_path / "default.pt")
    rc, _, err = _run(capsys, ["nn", "predict", "spec.fits"])
    assert rc == 2 and "no default neural model is shipped" in err
    assert "photosphere nn train --preset cpu --grid GRID" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    rc, _, err = _run(capsys, ["nn", "predict", "spec.fits", "--model", str(bad)])
    assert rc == 2 and "not a readable photosphere model checkpoint" in err


def test_shipped_models_by_name_and_ensemble_eval(tmp_path, capsys, toy_grid, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(predict, "default_model_path", lambda: shipped / "default.pt")
    for seed, name in ((0, "default"), (1, "snr20")):
        args = ["nn", "train", "--grid", "toy.h5", "--out", str(shipped / f"{name}.pt"),
                *TINY, "--seed", str(seed), "--unmodelled-lines", "5", "--curvature", "0.01"]
        assert _run(capsys, args)[0] == 0
    assert sorted(predict.shipped_models()) == ["default", "snr20"]
    ck = load_model("snr20")
    assert ck.path == shipped / "snr20.pt" and ck.data["unmodelled_lines"] == 5.0
    rc, _, err = _run(capsys, ["nn", "predict", "spec.fits", "--model", "snr21"])
    assert rc == 2 and "no shipped model has that name" in err and "default, snr20" in err
    rc, out, _ = _run(capsys, ["nn", "eval", "default", "snr20", "--grid", "toy.h5", "--snr",
                               "20", "--ensemble", "--json"])
    assert rc == 0
    (run,) = json.loads(out)["runs"]
    assert run["model"] == ["default", "snr20"] and run["n_test"] == 8
    one, two = run["coverage_ensemble_calibrated"]
    assert 0 <= one["all"] <= two["all"] <= 1
    singles = [json.loads(_run(capsys, ["nn", "eval", m, "--grid", "toy.h5", "--snr", "20",
                                        "--json"])[1])["runs"][0] for m in ("default", "snr20")]
    # the ensemble mean is the mean of the members' means: its MAE is at most their average
    for label, mae in run["mae"].items():
        bound = 0.5 * (singles[0]["mae"][label] + singles[1]["mae"][label])
        assert mae <= bound * (1 + 1e-5)  # equality when the members err alike; float32
    rc, out, _ = _run(capsys, ["nn", "eval", "default", "snr20", "--grid", "toy.h5", "--snr",
                               "20", "--ensemble"])
    assert "Ensemble of 2 (Residual-network, Residual-network) [default.pt, snr20.pt]" in out
    # the same two stored as one ensemble file: its raw σ are the members' raw mixture too
    # (not widened by the members' own σ temperatures, which the file carries)
    stored = tmp_path / "ens.pt"
    assert _run(capsys, ["nn", "ensemble", "default", "snr20", "--out", str(stored)])[0] == 0
    rc, out, _ = _run(capsys, ["nn", "eval", str(stored), "--grid", "toy.h5", "--snr", "20",
                               "--json"])
    assert rc == 0
    (one_file,) = json.loads(out)["runs"]
    for label, mae in run["mae"].items():
        assert one_file["mae"][label] == pytest.approx(mae, rel=1e-5)
    for got, want in zip(one_file["coverage_raw"], run["coverage_raw"], strict=True):
        assert got == pytest.approx(want)


def test_net_settings_from_the_command_line(tmp_path, capsys, toy_grid):
    model = tmp_path / "wide.pt"
    net = '{"stem_channels": 12, "channels": [12, 12, 16, 16, 24]}'
    rc, out, _ = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY,
                               "--net", net, "--json"])
    assert rc == 0 and json.loads(out)["config"]["net"]["stem_channels"] == 12
    assert load_model(model).model.config.channels == (12, 12, 16, 16, 24)
    rc, _, err = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY,
                               "--net", '{"stem_chanels": 12}'])
    assert rc == 2 and "['stem_chanels'] are not known" in err and "stem_channels" in err
    rc, _, err = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY,
                               "--net", "stem_channels=12"])
    assert rc == 2 and "is not JSON" in err


def test_broadening_ranges_from_the_command_line(tmp_path, capsys, toy_grid):
    model = tmp_path / "multi.pt"
    rc, out, _ = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY,
                               "--resolution", "40000", "115000", "--macroturbulence", "0", "6",
                               "--json"])
    assert rc == 0
    data = json.loads(out)["config"]["data"]
    assert data["resolution"] == [40000.0, 115000.0] and data["macroturbulence"] == [0.0, 6.0]
    assert load_model(model).data["resolution"] == [40000.0, 115000.0]
    # evaluated on the study's protocol instead (one R, no macroturbulence)
    rc, out, _ = _run(capsys, ["nn", "eval", str(model), "--grid", "toy.h5", "--snr", "20",
                               "--resolution", "115000", "--macroturbulence", "0", "--json"])
    assert rc == 0 and np.isfinite(json.loads(out)["runs"][0]["mae"]["vsini"])
    rc, _, err = _run(capsys, ["nn", "train", "--grid", "toy.h5", "--out", str(model), *TINY,
                               "--resolution", "1", "2", "3"])
    assert rc == 2 and "one value or LO HI" in err
