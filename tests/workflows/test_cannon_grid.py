"""The Cannon on a synthetic grid (dataset (a)): interpolated spectra degraded to an instrument,
trained and tested through the CLI; the embedded default grid end to end (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from photosphere.cli import main
from photosphere.errors import ModelError
from photosphere.models.cannon import CannonModel
from photosphere.workflows.cannon_grid import (
    SPEED_OF_LIGHT,
    GridDatasetSpec,
    degrade,
    instrument_wavelength,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grids"))
from _analytic import build_small


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    axes = {"teff": (5500.0, 5750.0, 6000.0, 6250.0, 6500.0), "logg": (2.0, 3.0, 4.0),
            "feh": (-1.0, -0.5, 0.0)}
    return build_small(tmp_path_factory.mktemp("cannon-grid") / "grid.h5", axes=axes)


def test_degrade_conserves_flux_and_gives_the_requested_resolution():
    step = 1.0
    wave = 5000.0 * np.exp(np.arange(6000) * np.log1p(step / SPEED_OF_LIGHT))
    line = 1 - 0.5 * np.exp(-0.5 * ((wave - 5050.0) / 0.005) ** 2)   # unresolved line
    out_wave = instrument_wavelength(wave, 20000.0, 4.0, 2.0)
    out = degrade(wave, line[None, :], step, 20000.0, out_wave)[0]
    # equivalent width is conserved
    ew_in = np.trapezoid(1 - line, wave)
    ew_out = np.trapezoid(1 - out, out_wave)
    assert ew_out == pytest.approx(ew_in, rel=2e-3)
    # the degraded line has FWHM ≈ λ/R (Gaussian LSF dominates)
    depth = 1 - out
    half = out_wave[depth >= depth.max() / 2]
    assert half[-1] - half[0] == pytest.approx(5050.0 / 20000.0, rel=0.15)
    # 4 pixels per FWHM: velocity step c / (R · 4)
    dv = SPEED_OF_LIGHT * np.expm1(np.diff(np.log(out_wave)))
    assert np.allclose(dv, SPEED_OF_LIGHT / 20000.0 / 4.0, rtol=1e-9)


def test_grid_sets_are_seeded_noisy_and_inside_the_box(grid_path):
    spec = GridDatasetSpec(str(grid_path), n=40, seed=3, box={"teff": (5600.0, 6400.0)})
    a, b = spec.build(), spec.build()
    assert a.label_names == ("teff", "logg", "feh")
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.labels, b.labels)
    assert a.labels[:, 0].min() >= 5600 and a.labels[:, 0].max() <= 6400
    assert np.all((a.snr >= 50) & (a.snr <= 200))
    # the noise matches the stated ivar: chi2 per pixel against the noise-free spectra ≈ 1
    clean = GridDatasetSpec(str(grid_path), n=40, seed=3, box={"teff": (5600.0, 6400.0)},
                            snr=(1e9, 1e9)).build()
    assert np.mean((a.flux - clean.flux) ** 2 * a.ivar) == pytest.approx(1.0, rel=0.05)
    assert GridDatasetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ModelError, match=r"box\['teff'\] = \(5000.0, 6400.0\).*grid range"):
        GridDatasetSpec(str(grid_path), n=5, box={"teff": (5000.0, 6400.0)}).build()
    with pytest.raises(ModelError, match="not axes of the grid"):
        GridDatasetSpec(str(grid_path), n=5, box={"alpha": (0.0, 0.2)}).build()


def test_cli_train_test_on_a_grid(grid_path, tmp_path, capsys):
    model = tmp_path / "grid-cannon.h5"
    assert main(["cannon", "train", "--grid", str(grid_path), "--n-train", "120",
                 "--n-calibration", "40", "--resolution", "20000", "-o", str(model),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label_names"] == ["teff", "logg", "feh"] and out["n_training_stars"] == 120
    assert out["training_set"]["kind"] == "grid" and out["training_set"]["resolution"] == 20000
    assert set(out["uncertainty_calibration"]["sigma_scale"]) == {"teff", "logg", "feh"}
    assert main(["cannon", "test", str(model), "--n-test", "30", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["validation"]
    assert stats["kind"] == "grid" and stats["n"] == 30 and stats["calibrated_errors"]
    # the held-out spectra are reproduced by the model at their true labels to within the noise
    # (the analytic test grid ties the labels to one line-strength combination, so the labels
    # themselves are degenerate here; the embedded grid is tested for labels below)
    cannon = CannonModel.load(model)
    from photosphere.workflows.cannon_grid import validation_spec

    test = validation_spec(cannon, 30).build()
    chi2 = np.mean((test.flux - cannon.predict(test.labels)) ** 2 * test.ivar)
    assert chi2 < 2.0


@pytest.mark.slow
def test_embedded_grid_giants_end_to_end(tmp_path, capsys):
    """Train on 400 interpolated giant spectra of the embedded grid at R = 22 500 and recover
    held-out labels at S/N 50-200; calibrated errors have close to 68 % coverage."""
    model = tmp_path / "default-grid.h5"
    assert main(["cannon", "train", "--grid", "default", "--n-train", "400",
                 "--n-calibration", "150", "-o", str(model), "--json"]) == 0
    json.loads(capsys.readouterr().out)
    assert main(["cannon", "test", str(model), "--n-test", "200", "--json"]) == 0
    labels = json.loads(capsys.readouterr().out)["validation"]["labels"]
    assert labels["teff"]["scatter"] < 120 and abs(labels["teff"]["bias"]) < 40
    assert labels["logg"]["scatter"] < 0.3 and labels["feh"]["scatter"] < 0.1
    for v in labels.values():
        assert 0.55 < v["coverage_1sigma"] < 0.85


@pytest.mark.slow
def test_cli_report_on_a_grid_model(grid_path, tmp_path, capsys):
    model = tmp_path / "grid-cannon.h5"
    assert main(["cannon", "train", "--grid", str(grid_path), "--n-train", "80",
                 "--n-calibration", "0", "-o", str(model)]) == 0
    capsys.readouterr()
    outdir = tmp_path / "report"
    assert main(["cannon", "report", str(model), "-o", str(outdir), "--n-validation", "25",
                 "--nn-epochs", "2", "--mcmc-steps", "30", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = {"training_labels_corner", "training_star_fit", "gradient_spectra", "scatter",
                "cross_validation", "kiel_diagram", "model_vs_feh", "model_along_isochrone",
                "mcmc_corner", "nn_cross_validation", "table", "summary"}
    assert expected <= set(summary["files"]) and "continuum_fit" not in summary["files"]
    for f in summary["files"].values():
        assert Path(f).stat().st_size > 1000
    assert summary["training_set"]["kind"] == "grid" and "real_spectra" not in summary
    assert 0 <= summary["cannon"]["teff"]["coverage_1sigma"] <= 1
