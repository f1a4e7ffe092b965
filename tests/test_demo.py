"""The demo end to end (real Turbospectrum synthesis of 12 small nodes, then a full fit)."""

import json

import pytest

from photosphere.cli import main
from photosphere.demo import TRUTH


@pytest.mark.slow
@pytest.mark.turbospectrum
def test_demo_recovers_the_true_labels(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name, true in TRUTH.items():
        fitted = out["labels"][name]
        # within 4 sigma, and sigma is a meaningful (finite, positive) number
        assert fitted["sigma"] > 0
        assert abs(fitted["value"] - true) < 4 * fitted["sigma"], name
    assert 0.8 < out["chi2_reduced"] < 1.25
    for path in out["files"].values():
        assert (tmp_path / "demo").joinpath(path.split("/")[-1]).exists()
    # a rerun reuses the grid it built (the file is not rewritten) and gives the same answer
    grid = tmp_path / "demo" / "demo-grid.h5"
    stamp = grid.stat().st_mtime_ns
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert grid.stat().st_mtime_ns == stamp
    assert again["labels"]["teff"]["value"] == pytest.approx(out["labels"]["teff"]["value"])
