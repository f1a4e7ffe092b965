"""The shipped optical model (photosphere/data/nn/optical.pt) on real spectra: trained on the
calibrated optical emulator, read through its input calibration, flagged out of distribution
where the benchmark stars say so."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_file
from photosphere import cli
from photosphere.nn.predict import load_model, model_grid, shipped_models, trained_calibrated

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif("optical" not in shipped_models(),
                                reason="no optical model is shipped in this checkout")


def test_the_optical_model_knows_its_emulator_and_its_real_star_calibration():
    ck = load_model("optical")
    assert ck.kind == "ensemble" and ck.model.config.n_members == len(ck.data["ensemble"]) >= 2
    assert trained_calibrated(ck)
    assert model_grid(ck) is not None, "the shipped optical.h5 is not the file it was trained on"
    record = ck.data["real_star_calibration"]
    assert len(record["stars"]) >= 5 and set(record["loo_floor"]) == set(record["stars"])
    assert 0.02 < ck.data["mismatch_limit"] < 0.5
    assert not any(s == "Sun" or "Procyon" in s for s in record["flagged"])
    assert all(any(m in s for s in record["flagged"]) for m in ("Gl 699", "Gl 273", "Gl 581"))


def test_predict_the_uves_sun_and_flag_an_m_dwarf(capsys):
    """The UVES Sun (a calibration star of the emulator: in-sample, a check of the whole
    chain) within 250 K / 0.4 / 0.2 dex and [α/Fe] near 0; Gl 273 (M3.5 V) flagged, exit 3."""
    sun = shared_file("optical/uves_sun_norm.txt")
    assert cli.main(["nn", "predict", str(sun), "--model", "optical", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labels = out["labels"]
    for name, truth, tol in (("teff", 5772, 250), ("logg", 4.44, 0.4), ("feh", 0.0, 0.2),
                             ("alpha", 0.0, 0.2)):
        assert abs(labels[name]["value"] - truth) < tol, (name, labels[name])
    assert all(np.isfinite(v["value"]) and v["sigma"] > 0 for v in labels.values())
    assert out["provenance"]["input_calibration"]["zero_point"] == 0.0
    assert not out["provenance"]["consistency"]["out_of_distribution"]
    gl273 = shared_file("harps/HARPS.2003-12-13T06-19-48.371_e2ds_A.fits")
    assert cli.main(["nn", "predict", str(gl273), "--rv", "2.94", "--model", "optical",
                     "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["provenance"]["consistency"][
        "out_of_distribution"]


def test_nn_predict_without_a_model_reads_what_the_default_cannot_with_the_optical_one(capsys):
    """The Griffith star (pixels only around lines, none in 5050-5350 Å): the default refuses it
    with a CoverageError; `nn predict` without --model then reads it with the optical model and
    says so; with --model default the refusal stands."""
    from photosphere.errors import CoverageError
    from photosphere.nn.predict import predict_spectrum, read_for_prediction

    path = shared_file("stars/hires/griffith2022_2MASS_J03443498+0553014.csv")
    with pytest.raises(CoverageError, match="not covered"):
        predict_spectrum(read_for_prediction(path), "default", check_grid=False)
    assert cli.main(["nn", "predict", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["provenance"]["model"].endswith("optical.pt")
    assert "default network cannot read" in out["model_choice"]
    for name, truth, tol in (("teff", 5456, 400), ("logg", 3.86, 0.6), ("feh", -1.22, 0.5)):
        assert abs(out["labels"][name]["value"] - truth) < tol, (name, out["labels"][name])
    assert cli.main(["nn", "predict", str(path), "--model", "default", "--json"]) != 0
    assert "not covered" in capsys.readouterr().err
