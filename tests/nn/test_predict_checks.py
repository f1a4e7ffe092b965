"""`nn predict` refuses spectra that cannot be a star and flags answers off its training box."""

from __future__ import annotations

import json

import numpy as np
import pytest

from photosphere import cli
from photosphere.nn import predict
from photosphere.nn.predict import NNPrediction

WAVE = np.linspace(5045.0, 5355.0, 6000)


def _text(path, flux):
    np.savetxt(path, np.column_stack([WAVE, flux]), header="medium: air\nwavelength flux")
    return str(path)


@pytest.fixture
def no_prediction(monkeypatch):
    monkeypatch.setattr(predict, "predict_spectrum",
                        lambda *a, **k: pytest.fail("the network ran on a non-star"))


@pytest.mark.parametrize("name, make, message", [
    ("zeros", lambda rng: np.zeros(WAVE.size), "median flux is 0"),
    ("flat", lambda rng: np.ones(WAVE.size), "constant"),
    ("noise", lambda rng: 1 + rng.normal(0, 0.02, WAVE.size), "no stellar lines"),
    ("negative", lambda rng: -1 + 0.3 * np.sin(WAVE), "median flux is -"),
])
def test_non_stars_are_refused_before_the_network(tmp_path, capsys, rng, no_prediction, name,
                                                  make, message):
    path = _text(tmp_path / f"{name}.txt", make(rng))
    assert cli.main(["nn", "predict", path, "--json"]) == 2   # on main: 0 with labels
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_mc_samples_is_bounded(tmp_path, capsys):
    for bad in ("-1", "5000", "x"):
        with pytest.raises(SystemExit) as e:
            cli.main(["nn", "predict", "spec.txt", "--mc-samples", bad])
        assert e.value.code == 2
        assert "--mc-samples" in capsys.readouterr().err


def test_labels_off_the_training_box_exit_3(tmp_path, capsys, rng, monkeypatch):
    lines = 1 - 0.5 * np.exp(-0.5 * ((WAVE[:, None] - rng.uniform(5050, 5350, 80)) / 0.05) ** 2)
    path = _text(tmp_path / "star.txt", lines.prod(axis=1) + rng.normal(0, 0.01, WAVE.size))
    wild = NNPrediction(labels={"teff": (-91722.0, 1.0), "logg": (4.0, 0.1), "feh": (203.0, 1.0),
                                "vsini": (3.0, 1.0)}, covariance=np.eye(4),
                        label_names=("teff", "logg", "feh", "vsini"),
                        provenance={"filled_fraction": 1.0, "consistency": None,
                                    "line_strengths": None})
    monkeypatch.setattr(predict, "predict_spectrum", lambda *a, **k: wild)
    assert cli.main(["nn", "predict", path, "--json"]) == 3
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert any(w.startswith("teff = -9.172e+04 is outside") for w in doc["warnings"])
    assert "photosphere nn predict: warning: feh = 203" in captured.err
    assert cli.main(["nn", "predict", path, "--allow-flagged"]) == 0


@pytest.mark.parametrize("given, outside", [(2200.0, True), (19000.0, True), (21000.0, False),
                                            (80000.0, False), (160000.0, False),
                                            (170000.0, True), (None, None)])
def test_resolution_outside_the_trained_range_is_out_of_distribution(given, outside):
    from types import SimpleNamespace

    check = {"out_of_distribution": False}
    ck = SimpleNamespace(data={"resolution": [25000.0, 130000.0]})
    predict._resolution_check(ck, given, check)
    assert check.get("resolution", {}).get("outside") is outside
    assert check["out_of_distribution"] is bool(outside)
    single = {"out_of_distribution": False}  # a model trained at one R is not judged
    predict._resolution_check(SimpleNamespace(data={"resolution": 115000.0}), 2200.0, single)
    assert single == {"out_of_distribution": False}


def test_predict_says_why_a_spectrum_is_out_of_distribution(tmp_path, capsys, rng, monkeypatch):
    lines = 1 - 0.5 * np.exp(-0.5 * ((WAVE[:, None] - rng.uniform(5050, 5350, 80)) / 0.05) ** 2)
    path = _text(tmp_path / "star.txt", lines.prod(axis=1) + rng.normal(0, 0.01, WAVE.size))
    check = {"checked": True, "mismatch_rms": 0.01, "mismatch_limit": 0.06, "noise_rms": 0.005,
             "out_of_distribution": True, "at_box_edge": [],
             "resolution": {"input": 2200.0, "trained": [25000.0, 130000.0], "outside": True}}
    found = NNPrediction(labels={"teff": (5800.0, 90.0), "logg": (4.4, 0.1), "feh": (0.0, 0.1),
                                 "vsini": (3.0, 1.0)}, covariance=np.eye(4),
                         label_names=("teff", "logg", "feh", "vsini"),
                         provenance={"filled_fraction": 0.0, "consistency": check,
                                     "line_strengths": None})
    monkeypatch.setattr(predict, "predict_spectrum", lambda *a, **k: found)
    assert cli.main(["nn", "predict", path]) == 3
    out = capsys.readouterr().out
    assert "OUT OF DISTRIBUTION (the spectrum's R 2200 is outside the R 25000-130000" in out
    assert "mismatch with the grid" not in out.split("grid consistency")[1].split("):")[0]
