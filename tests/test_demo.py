"""The demo end to end: a Turbospectrum star at off-node labels, fitted with the embedded grid."""

import json

import pytest

from photosphere.cli import main
from photosphere.demo import TRUTH

# What the embedded grid (steps 250 K, 0.5 dex, 0.5 dex; multilinear) can recover from the
# off-node star at S/N 150 (docs/grids.md, "The demo"): the measured differences are 4 K, 0.02,
# 0.01 dex, 0.16 km/s and < 0.01 km/s with the grid treated as exact (model_error="none"); with
# the default "auto" 4 K, 0.013, 0.005 dex, 0.08 km/s, within 1σ for the grid labels.
TOLERANCE = {"teff": 60.0, "logg": 0.1, "feh": 0.05, "vsini": 0.5, "rv": 0.05}


@pytest.mark.slow
@pytest.mark.turbospectrum
def test_demo_recovers_the_true_labels(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "default.h5" in out["model"]
    for name, true in TRUTH.items():
        fitted = out["labels"][name]
        assert fitted["sigma"] > 0, name
        assert abs(fitted["value"] - true) < TOLERANCE[name], name
    # the model is not the generator: some misfit, but no gross one
    assert 0.9 < out["chi2_reduced"] < 1.6
    # simulated without spots: the spot model must not win
    assert out["spots_vs_single"]["delta_bic"] < 0
    # the shipped network on the same star's 8-order image: within 2σ, and in distribution
    neural = out["neural"]
    for name in ("teff", "logg", "feh"):
        got = neural["labels"][name]
        assert abs(got["value"] - TRUTH[name]) < 2 * got["sigma"], name
    assert neural["consistency"]["checked"] and not neural["consistency"]["out_of_distribution"]
    # its σ include the floor measured on real stars (nn calibrate-stars)
    assert neural["real_stars"] >= 5
    assert set(neural["sigma_systematic"]) == {"teff", "logg", "feh"}
    for path in out["files"].values():
        assert (tmp_path / "demo").joinpath(path.split("/")[-1]).exists()
    # a rerun reuses the synthesised star (the file is not rewritten) and gives the same answer
    truth = tmp_path / "demo" / "demo-truth.fits"
    stamp = truth.stat().st_mtime_ns
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert truth.stat().st_mtime_ns == stamp
    assert again["labels"]["teff"]["value"] == pytest.approx(out["labels"]["teff"]["value"])


def test_demo_without_turbospectrum_names_the_setup_command(tmp_path, monkeypatch, capsys):
    import photosphere.grids.synth.build as build

    monkeypatch.setattr(build, "find_installation", lambda: None)
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "`photosphere setup`" in err
    assert not (tmp_path / "demo").exists()
