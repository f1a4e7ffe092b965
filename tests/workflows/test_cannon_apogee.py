"""The APOGEE Cannon workflow: RV + label fits of shifted spectra, the CLI end to end, the
isochrones and the neural-network regressor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_file
from photosphere.cli import main
from photosphere.datasets import apogee_emulated as ae
from photosphere.errors import OutOfGridError
from photosphere.nn.label_regressor import LabelRegressor, RegressorConfig
from photosphere.workflows import cannon_apogee as wf


@pytest.fixture(scope="module")
def data_dir():
    return shared_file("apogee/payne/NN_normalized_spectra.npz").parents[2]


@pytest.fixture(scope="module")
def small_model(data_dir):
    return wf.train(wf.DatasetSpec(n=150, seed=4), data_dir=data_dir)


def test_shift_to_rest_undoes_a_doppler_shift(data_dir):
    em = ae.PayneEmulator.load(data_dir)
    rest = em.predict(np.array([5000.0, 4.5, 0.0, 0.1, 3.0]))
    wave = em.wavelength
    rv = 41.0
    beta = rv / wf.SPEED_OF_LIGHT
    observed = np.interp(wave / np.sqrt((1 + beta) / (1 - beta)), wave, rest)
    back, ivar = wf.shift_to_rest(wave, observed, np.ones_like(wave), rv)
    # chip edges lose a few pixels; inside, the shift is undone to interpolation accuracy
    inner = ivar > 0
    assert inner.mean() > 0.99
    assert np.median(np.abs(back - rest)[inner]) < 2e-3


def test_labels_and_rv_recovered_from_an_observed_frame_spectrum(data_dir, small_model):
    test = ae.make_apogee_like(1, seed=11, snr=(150, 150), data_dir=data_dir)
    rv = -63.0
    beta = rv / wf.SPEED_OF_LIGHT
    wave = test.wavelength
    observed = np.interp(wave / np.sqrt((1 + beta) / (1 - beta)), wave, test.flux[0])
    fit, rv_fit = wf.fit_labels_and_rv(small_model, wave, observed, test.ivar[0])
    assert abs(rv_fit - rv) < 0.5
    assert abs(fit.labels[0, 0] - test.labels[0, 0]) < 100
    assert abs(fit.labels[0, 2] - test.labels[0, 2]) < 0.05


@pytest.mark.slow
def test_cli_train_and_test_with_json(data_dir, tmp_path, capsys):
    path = tmp_path / "cannon.h5"
    assert main(["cannon", "train", "-o", str(path), "--n-train", "120", "--data-dir",
                 str(data_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_training_stars"] == 120 and out["n_terms"] == 21 and path.is_file()
    assert main(["cannon", "test", str(path), "--n-test", "40", "--real", "--data-dir",
                 str(data_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["validation"]["n"] == 40
    assert out["validation"]["labels"]["teff"]["scatter"] < 150
    names = [s["name"] for s in out["spectra"]]
    assert names[0].startswith("2M13012770") and len(names) == 8
    assert all(abs(s["rv_kms"]) < 400 for s in out["spectra"])


def test_cli_reports_missing_data_clearly(tmp_path, capsys):
    code = main(["cannon", "train", "-o", str(tmp_path / "m.h5"), "--data-dir",
                 str(tmp_path / "nowhere")])
    assert code == 2
    assert "PHOTOSPHERE_SHARED_DATA" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_report_writes_every_plot(data_dir, tmp_path, small_model, capsys):
    path = small_model.save(tmp_path / "cannon.h5")
    outdir = tmp_path / "report"
    assert main(["cannon", "report", str(path), "-o", str(outdir), "--n-validation", "30",
                 "--nn-epochs", "2", "--mcmc-steps", "40", "--data-dir", str(data_dir),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = {"training_labels_corner", "continuum_fit", "training_star_fit",
                "gradient_spectra", "scatter", "cross_validation", "kiel_diagram",
                "model_vs_feh", "model_along_isochrone", "mcmc_corner", "nn_cross_validation",
                "table", "summary"}
    assert expected <= set(summary["files"])
    for f in summary["files"].values():
        assert (outdir / f.split("/")[-1]).stat().st_size > 1000
    assert summary["mcmc"]["prior"]["teff"]["kind"] == "uniform"
    names = [r["name"] for r in summary["real_spectra"]]
    assert len(names) == 8 and "arcturus (atlas)" in names
    arcturus = summary["real_spectra"][names.index("arcturus (atlas)")]
    assert "outside the training labels" in arcturus["note"]


def test_mist_isochrone():
    pytest.importorskip("lachesis_grids")
    from photosphere.isochrones import mist_isochrone

    iso = mist_isochrone(6.0, 0.0)
    ms = iso.phase == 0
    assert 5600 < iso.teff[ms].max() < 6500            # turn-off of a 6 Gyr solar isochrone
    assert iso.logg[iso.phase == 2].min() < 1.0          # reaches up the red-giant branch
    poor = mist_isochrone(6.0, -1.0)
    assert poor.teff[poor.phase == 0].max() > iso.teff[ms].max()
    with pytest.raises(OutOfGridError, match="not a MIST grid value"):
        mist_isochrone(6.0, -0.3)


def test_label_regressor_learns_a_linear_map(rng):
    labels = rng.uniform(-1, 1, (400, 2))
    basis = rng.normal(size=(2, 50))
    flux = 1 + 0.1 * labels @ basis + rng.normal(0, 0.005, (400, 50))
    ivar = np.full_like(flux, 1 / 0.005**2)
    reg = LabelRegressor(RegressorConfig(hidden=(32,), epochs=150, seed=1))
    reg.fit(flux[:300], ivar[:300], labels[:300])
    pred = reg.predict(flux[300:], ivar[300:])
    assert np.std(pred - labels[300:]) < 0.1
