"""`nn calibrate-stars`: σ_sys and the mismatch limit measured on stars, stored in a copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from photosphere import cli
from photosphere.datasets.reference_stars import Star
from photosphere.nn.predict import default_model_path, load_model
from photosphere.nn.real_stars import StarReading, calibrate

pytestmark = pytest.mark.skipif(not default_model_path().exists(),
                                reason="no default model is shipped in this checkout")


def _reading(name, teff, err, mismatch, resolution=60000.0, in_box=True):
    star = Star(name, f"{name}.fits", Path(f"{name}.fits"), "test", resolution,
                {"teff": (teff, 50.0), "logg": (4.4, 0.05), "feh": (0.0, 0.05)})
    mu = {"teff": teff + err, "logg": 4.4 + err / 1000, "feh": err / 2000, "vsini": 2.0}
    sigma = {"teff": 30.0, "logg": 0.05, "feh": 0.03, "vsini": 1.0}
    return StarReading(star, resolution, mu, sigma, dict(mu), dict(sigma), mismatch, in_box, 0,
                       np.ones((2, 4), np.float32))


def test_calibrate_measures_floors_leave_one_out_and_flags_by_the_limit():
    rng = np.random.default_rng(0)
    inside = [_reading(f"s{i}", 5500.0, float(rng.normal(0, 150)), 0.02 + 0.002 * i)
              for i in range(8)]
    outside = [_reading("mdwarf", 3300.0, 800.0, 0.2, in_box=False),
               _reading("miles", 5000.0, 50.0, 0.5, resolution=2000.0)]
    record = calibrate(inside + outside)
    assert record["mismatch"]["separable"]  # set by the high-resolution stars only ...
    assert record["mismatch"]["limit"] == pytest.approx(np.sqrt(0.034 * 0.2))
    assert record["flagged"] == ["mdwarf", "miles"]  # ... and applied to every star
    assert len(record["stars"]) == 8 and record["floor"]["teff"] > 50
    errors = np.array([r.error("teff") for r in inside])
    total2 = 30.0 ** 2 + record["floor"]["teff"] ** 2 + 50.0 ** 2
    assert np.mean(errors ** 2 / total2) == pytest.approx(1.0, rel=1e-6)
    assert set(record["loo_floor"]) == {f"s{i}" for i in range(8)}


def test_the_command_stores_the_calibration_in_a_copy(tmp_path, monkeypatch, capsys):
    readings = [_reading(f"s{i}", 5500.0, 100.0 * (-1) ** i, 0.03) for i in range(6)]
    readings.append(_reading("mdwarf", 3300.0, 800.0, 0.3, in_box=False))
    monkeypatch.setattr("photosphere.nn.real_stars.read_all",
                        lambda ck, stars, progress=True: (readings, []))
    (tmp_path / "labels.csv").write_text("file,star,instrument,resolution,teff,teff_err,logg,"
                                         "logg_err,feh,feh_err\n")
    out = tmp_path / "cal.pt"
    assert cli.main(["nn", "calibrate-stars", "default", "--stars-dir", str(tmp_path), "--out",
                     str(out), "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["flagged"] == ["mdwarf"]
    ck = load_model(str(out))
    assert ck.data["systematic_floor"] == payload["floor"]
    assert ck.data["mismatch_limit"] == pytest.approx(payload["mismatch"]["limit"])
    before = load_model()
    for a, b in zip(ck.model.state_dict().values(), before.model.state_dict().values(),
                    strict=True):
        assert np.array_equal(a.numpy(), b.numpy())  # same network


def test_a_missing_stars_folder_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["nn", "calibrate-stars", "default", "--stars-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path / "cal.pt")])
    assert code != 0
    assert "labels.csv" in capsys.readouterr().err
    assert not (tmp_path / "cal.pt").exists()
