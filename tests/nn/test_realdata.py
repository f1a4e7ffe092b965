"""Real spectra into the network input: the UVES Sun and a HARPS e2ds frame (skipped without
../shared/data). A tiny model trained on the toy source in the HARPS-N layout checks that
`photosphere nn predict FILE --json` runs on both files; its labels are not meaningful (the real
default model needs the ATLAS9 grid)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _toy import DATA_BOUNDS, ToySource

from conftest import shared_file
from photosphere import cli
from photosphere.io import read
from photosphere.nn.data import DataConfig, build_datasets, default_layout
from photosphere.nn.inputs import prepare_image
from photosphere.nn.train import TrainConfig, train

torch.set_num_threads(1)
pytestmark = pytest.mark.realdata
UVES = "optical/uves_sun_norm.txt"
E2DS = "harps/HARPS.2003-12-13T06-19-48.371_e2ds_A.fits"
MG_B2 = 5172.68


def test_default_layout_is_the_study_window():
    layout = default_layout()
    assert layout.wavelength.shape == (8, 4096)
    assert abs(layout.wavelength.min() - 5050) < 1 and abs(layout.wavelength.max() - 5350) < 1


def test_uves_sun_image():
    sun = read(shared_file(UVES))
    layout = default_layout()
    out = prepare_image(sun, layout.wavelength, layout.medium)
    assert out.image.shape == (8, 4096) and out.filled_fraction == 0
    assert np.all(np.isfinite(out.image))
    assert abs(np.quantile(out.image, 0.95) - 1.0) < 0.03
    # Mg b2 is one of the deepest lines of the window
    o, p = np.unravel_index(np.argmin(np.abs(layout.wavelength - MG_B2)), layout.wavelength.shape)
    assert out.image[o, p - 3:p + 4].min() < 0.3


def test_harps_e2ds_image():
    frame = read(shared_file(E2DS), deblaze=True)
    layout = default_layout()
    out = prepare_image(frame, layout.wavelength, layout.medium, rv=18.2 - 15.26)
    assert out.orders_used == (121, 120, 119, 118, 117, 116, 114)
    # the CCD gap between the blue and red chips (about 5304-5337 Å) is filled
    assert 0.08 < out.filled_fraction < 0.15
    assert np.all(np.isfinite(out.image))
    # an M3.5 dwarf at S/N ~ 20 has no clean continuum here (MgH, TiO): the envelope-normalised
    # flux sits below 1 with noise spikes above, but on the same scale as the training images
    gap = (layout.wavelength > 5306) & (layout.wavelength < 5335)
    assert np.all(out.image[gap] == 1.0)
    assert 0.6 < np.median(out.image[~gap]) < 1.0
    assert np.quantile(out.image, 0.99) < 2.0


@pytest.fixture(scope="module")
def harpsn_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("nn") / "toy-harpsn.pt"
    cfg = TrainConfig(model="resnet", data=dict(bounds=DATA_BOUNDS, n_train=8, n_val=4,
                                                 n_test=4, snr=50.0), epochs=1,
                      lr_decay_epochs=0, batch_size=4)
    datasets = build_datasets(ToySource(), DataConfig(**cfg.data), default_layout())
    train(cfg, None, path, datasets=datasets, progress=False)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("relative", [UVES, E2DS])
def test_cli_predict_on_real_files(relative, harpsn_model, capsys):
    # --allow-flagged: the 1-epoch toy model may answer off its box (exit 3); the plumbing is
    # what is tested here
    rc = cli.main(["nn", "predict", str(shared_file(relative)), "--model", str(harpsn_model),
                   "--json", "--allow-flagged"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(out["labels"]) == {"teff", "logg", "feh", "vsini"}
    assert all(np.isfinite(v["value"]) and v["sigma"] > 0 for v in out["labels"].values())
    assert np.asarray(out["covariance"]).shape == (4, 4)
