"""`photosphere lines clone` and `photosphere lines fit` end to end on tiny generated files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from photosphere.cli import main
from photosphere.models.lines.model import LineModel


def _write_spectrum(path, rng, noise=0.0):
    wave = np.arange(6000.0, 6012.0, 0.02)
    truth = LineModel([6003.0, 6005.5, 6008.2, 6010.0], [0.02, 0.01, 0.03, 0.015],
                      [0.04, 0.05, 0.04, 0.05], [0.01, 0.01, 0.01, 0.01])
    flux = truth(torch.as_tensor(wave)).detach().numpy()
    flux = flux + rng.normal(0, noise, flux.size) if noise else flux
    cols = [wave, flux] + ([np.full_like(wave, noise)] if noise else [])
    np.savetxt(path, np.column_stack(cols), header="medium: air")


@pytest.mark.slow
def test_clone_then_fit_with_json(tmp_path, rng, capsys):
    _write_spectrum(tmp_path / "synth.txt", rng)
    _write_spectrum(tmp_path / "obs.txt", rng, noise=0.002)
    rc = main(["lines", "clone", str(tmp_path / "synth.txt"), "-o", str(tmp_path / "l.ecsv"),
               "--steps", "30", "--rounds", "1", "--optimizer", "lm", "--no-progress",
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["optimizer"] == "lm"
    assert out["n_lines"] == 4
    assert out["residual_final"]["rms"] < out["residual_initial"]["rms"]
    rc = main(["lines", "fit", str(tmp_path / "obs.txt"), "--lines", str(tmp_path / "l.ecsv"),
               "--rv", "0", "--resolution", "1e5", "--steps", "10", "--global-steps", "20",
               "--no-progress", "--add-missing",
               "-o", str(tmp_path / "fit.ecsv"), "--json"])
    assert rc == 0
    fit = json.loads(capsys.readouterr().out)
    from astropy.table import Table

    assert Table.read(tmp_path / "fit.ecsv")["added"].sum() == fit["n_added"]
    assert abs(fit["rv_kms"]) < 1.0
    assert fit["rms_over_noise"] < 2.0
    assert (tmp_path / "fit.ecsv").exists()


def test_clone_of_a_flat_spectrum_is_a_clear_error(tmp_path, capsys):
    wave = np.arange(6000.0, 6010.0, 0.02)
    np.savetxt(tmp_path / "flat.txt", np.column_stack([wave, np.ones_like(wave)]),
               header="medium: air")
    rc = main(["lines", "clone", str(tmp_path / "flat.txt"), "-o", str(tmp_path / "l.ecsv"),
               "--no-progress"])
    assert rc == 2
    assert "no lines deeper" in capsys.readouterr().err
    assert not (tmp_path / "l.ecsv").exists()


def test_bad_inputs_are_clear_errors(tmp_path, rng, capsys):
    _write_spectrum(tmp_path / "s.txt", rng)
    # a window beyond the data
    rc = main(["lines", "clone", str(tmp_path / "s.txt"), "-o", str(tmp_path / "l.ecsv"),
               "--wavelength-min", "7000", "--wavelength-max", "7010", "--no-progress"])
    assert rc == 2
    assert "choose a range inside it" in capsys.readouterr().err
    # NaN pixels in the range to clone
    data = np.loadtxt(tmp_path / "s.txt")
    data[50, 1] = np.nan
    np.savetxt(tmp_path / "nan.txt", data, header="medium: air")
    rc = main(["lines", "clone", str(tmp_path / "nan.txt"), "-o", str(tmp_path / "l.ecsv"),
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "masked/NaN pixel" in err and f"{data[50, 0]:.3f}" in err
    assert not (tmp_path / "l.ecsv").exists()
