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


def test_a_resolution_outside_the_trained_range_flags_a_star_whatever_its_mismatch():
    low_r = _reading("miles", 5000.0, 50.0, 0.001, resolution=2200.0)
    low_r.resolution_outside = True
    inside = [_reading(f"s{i}", 5500.0, 30.0, 0.02) for i in range(4)]
    record = calibrate([*inside, low_r])
    assert record["flagged"] == ["miles"] and "miles" not in record["stars"]


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


def test_floor_at_interpolates_in_log_snr_up_to_the_stars_own():
    from photosphere.nn.real_stars import floor_at

    by_snr = {"snr": [20.0, 100.0], "floor": {"teff": [200.0, 50.0], "logg": [0.3, 0.0]},
              "native_snr": 400.0}
    native = {"teff": 80.0, "logg": 0.05, "feh": 0.1}
    mid = floor_at(native, by_snr, float(np.sqrt(20.0 * 100.0)))  # halfway in log S/N
    assert mid["teff"] == pytest.approx(125.0) and mid["logg"] == pytest.approx(0.15)
    assert mid["feh"] == 0.1  # no S/N floor for it: the native one
    assert floor_at(native, by_snr, 200.0)["teff"] == pytest.approx(65.0)  # towards native
    assert floor_at(native, by_snr, 1000.0) == native  # at and beyond the stars' own S/N
    assert floor_at(native, by_snr, 5.0)["teff"] == 200.0  # held below the levels
    low_native = {**by_snr, "native_snr": 60.0}  # not above the levels: the larger one
    assert floor_at(native, low_native, 1000.0)["teff"] == 80.0
    assert floor_at(native, low_native, 20.0)["teff"] == 200.0
    assert floor_at(native, None, 20.0) is native


def _noisy_star(name, seed):
    rng = np.random.default_rng(seed)
    x = np.arange(256)
    image = 1 - 0.4 * np.exp(-0.5 * ((x % 64 - 32) / 8.0) ** 2)  # wide: DER_SNR sees noise
    image = np.stack([image, image]) + rng.normal(0, 1 / 500, (2, 256))
    reading = _reading(name, 5500.0, 0.0, 0.02)
    reading.image = image.astype(np.float32)
    return reading


def test_degrading_adds_noise_only_where_the_image_holds_data():
    """Zero padding (the HARPS s1d CCD gap) and pixels filled with the continuum stay noise-free,
    as in a real spectrum of lower S/N; a row mostly of padding is not blown up by renormalising
    (it was: the default's S/N-20 floors of session 12 came from it)."""
    from photosphere.nn.inversion_bias import row_noise
    from photosphere.nn.real_stars import degraded

    reading = _noisy_star("s", 0)
    reading.image[1, 40:] = 0.0  # a row mostly padding
    reading.image[0, :30] = 1.0  # filled with the continuum
    out = degraded(reading, 20.0, seed=1)
    assert np.all(out[1, 40:] == 0.0)
    assert np.all(np.abs(np.diff(out[0, :30], 2)) < 1e-4)  # the renormalised continuum, no noise
    assert np.all(np.abs(out) < 2)
    assert row_noise(out)[0] == pytest.approx(1 / 20, rel=0.3)


def test_snr_floors_grow_as_the_stars_are_degraded(monkeypatch):
    """A network whose error grows with the noise but whose σ does not: σ_sys measured on the
    stars degraded to S/N 20 is larger than at 100, leave-one-out per star and level."""
    from types import SimpleNamespace

    from photosphere.nn import predict
    from photosphere.nn.inversion_bias import row_noise
    from photosphere.nn.real_stars import snr_floors

    names = ("teff", "logg", "feh", "vsini")

    def fake_network(members, mc_samples=0):
        def run(image):
            noise = float(np.median(row_noise(image)))
            sign = 1.0 if float(np.asarray(image)[0, 7]) > float(np.asarray(image)[1, 7]) else -1.0
            mu = np.array([5500.0 + sign * 2e4 * noise, 4.4, 0.0, 2.0])
            return mu, np.diag([30.0, 0.05, 0.03, 1.0]) ** 2
        return run

    monkeypatch.setattr(predict, "network", fake_network)
    ck = SimpleNamespace(model=None, temperature=None,
                         label_scaling=SimpleNamespace(names=names))
    chosen = [_noisy_star(f"s{i}", i) for i in range(5)]
    found = snr_floors(ck, chosen, [100, 20], draws=2, progress=False)
    assert found["snr"] == [20.0, 100.0] and found["native_snr"] > 150
    teff = found["floor"]["teff"]
    assert teff[0] > 4 * teff[1] > 0  # σ 1/20 vs 1/100 of the continuum, × 2e4 K
    assert teff[0] == pytest.approx(2e4 / 20, rel=0.3)
    assert set(found["loo_floor"]) == {f"s{i}" for i in range(5)}
    assert all(len(v["teff"]) == 2 for v in found["loo_floor"].values())
    assert set(found["loo_coverage"]) == {"20", "100"}
    assert all(0 <= a <= b <= 1 for a, b in found["loo_coverage"]["20"].values())


def test_predict_adds_the_floor_at_the_inputs_snr():
    """The S/N floor given to predict_spectrum is read at the input's S/N (provenance ``snr``)
    and added in quadrature when it exceeds the native σ_sys."""
    from conftest import shared_file
    from photosphere.nn.predict import predict_spectrum, read_for_prediction

    spectrum = read_for_prediction(shared_file("optical/uves_sun_norm.txt"))
    plain = predict_spectrum(spectrum, "default", check_grid=False, systematic_floor=None,
                             systematic_floor_snr=None)
    by_snr = {"snr": [10.0, 20.0], "floor": {"teff": [900.0, 800.0]}}  # no native S/N
    floored = predict_spectrum(spectrum, "default", check_grid=False, systematic_floor=None,
                               systematic_floor_snr=by_snr)
    snr = floored.provenance["snr"]
    assert snr > 20 and plain.provenance["snr"] is None
    assert floored.provenance["sigma_systematic"]["teff"] == 800.0  # held above the levels
    assert floored.labels["teff"][1] == pytest.approx(
        np.hypot(plain.labels["teff"][1], 800.0), rel=1e-9)
    assert floored.labels["teff"][0] == plain.labels["teff"][0]
