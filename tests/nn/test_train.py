"""Training loop: schedule, resume equivalence, learning on a toy source, DAE in front."""

from __future__ import annotations

import pytest
import torch
from _toy import DATA, TINY_RESNET, ToyLayout, ToySource

from photosphere.errors import CheckpointError, ModelError
from photosphere.nn.checkpoint import load_checkpoint
from photosphere.nn.dae import DenoisedEstimator
from photosphere.nn.data import DataConfig, build_datasets
from photosphere.nn.evaluate import predict_split
from photosphere.nn.train import TrainConfig, lr_at, preset, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def datasets():
    return build_datasets(ToySource(), DataConfig(**DATA), ToyLayout())


def _config(**kw):
    base = dict(model="resnet", net=TINY_RESNET, data=DATA, epochs=4, lr=3e-3,
                lr_decay_epochs=1, batch_size=16, seed=3)
    return TrainConfig(**{**base, **kw})


def test_study_schedule():
    full = preset("full")
    assert (full.lr, full.epochs, full.lr_decay_epochs) == (1e-4, 750, 50)
    assert lr_at(full, 699) == 1e-4
    assert lr_at(full, 700) == pytest.approx(1e-5)
    dae = preset("full", model="dae")
    assert (dae.lr, dae.epochs, dae.weight_decay > 0) == (3e-4, 1500, True)
    assert preset("cpu", data={"snr": 100.0}).data["snr"] == 100.0
    with pytest.raises(ModelError, match="preset"):
        preset("huge")
    with pytest.raises(ModelError, match="lr_decay_epochs"):
        _config(epochs=3, lr_decay_epochs=5)


def test_resume_equals_straight_run(tmp_path, datasets):
    cfg = _config(calibrate=False)
    straight = train(cfg, None, tmp_path / "a.pt", datasets=datasets, progress=False)
    part = train(cfg, None, tmp_path / "b.pt", datasets=datasets, progress=False, stop_after=2)
    assert len(part.history) == 2
    assert load_checkpoint(tmp_path / "b.pt").training["epoch"] == 1
    resumed = train(cfg, None, tmp_path / "b.pt", datasets=datasets, progress=False,
                    resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in
                                                          straight.history]
    a = load_checkpoint(tmp_path / "a.pt").model.state_dict()
    b = load_checkpoint(tmp_path / "b.pt").model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_resume_with_other_config_refused(tmp_path, datasets):
    train(_config(epochs=1, lr_decay_epochs=0, calibrate=False), None, tmp_path / "m.pt",
          datasets=datasets, progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(_config(epochs=2, lr_decay_epochs=0, calibrate=False), None, tmp_path / "m.pt",
              datasets=datasets, progress=False, resume=True)


@pytest.mark.slow
def test_training_learns_and_calibrates(tmp_path, datasets):
    cfg = _config(epochs=25, lr_decay_epochs=5, lr=1e-3, batch_size=8)
    result = train(cfg, None, tmp_path / "m.pt", datasets=datasets, progress=False)
    assert len(result.history) == 25 and result.history[-1]["lr"] == pytest.approx(1e-4)
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.temperature is not None and ck.temperature.shape == (4,)
    assert torch.all(ck.temperature > 0)
    pred = predict_split(ck.model, ck.label_scaling, datasets["test"], 16)
    # Teff (the strongest signal of the toy lines) beats guessing the middle of the box, whose
    # MAE for a uniform label is a quarter of the box width (48 stars, 25 epochs; the NLL on
    # fresh noise rises late in this tiny run as σ shrinks, which the temperature corrects)
    assert pred.mae()["teff"] < 0.8 * 0.25 * 3000


def test_dae_then_estimator(tmp_path, datasets):
    dae_cfg = TrainConfig(model="dae", net=dict(channels=(4, 4)), data=DATA, epochs=2,
                          lr=3e-3, lr_decay_epochs=1, batch_size=16, weight_decay=1e-2)
    dae_res = train(dae_cfg, None, tmp_path / "dae.pt", datasets=datasets, progress=False)
    assert dae_res.temperature is None
    assert load_checkpoint(tmp_path / "dae.pt").kind == "dae"
    cfg = _config(epochs=1, lr_decay_epochs=0, dae=str(tmp_path / "dae.pt"))
    train(cfg, None, tmp_path / "est.pt", datasets=datasets, progress=False)
    ck = load_checkpoint(tmp_path / "est.pt")
    assert isinstance(ck.model, DenoisedEstimator)
    with pytest.raises(ModelError, match="not a DAE"):
        train(_config(epochs=1, lr_decay_epochs=0, dae=str(tmp_path / "est.pt")), None,
              tmp_path / "x.pt", datasets=datasets, progress=False)
