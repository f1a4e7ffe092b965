"""Fine-tuning from a trained model (``init``) and weight averaging over the last epochs."""

from __future__ import annotations

import pytest
import torch
from _toy import DATA, DATA_BOUNDS, TINY_RESNET, ToyLayout, ToySource

from photosphere.errors import ModelError
from photosphere.nn.checkpoint import _weights_digest, load_checkpoint
from photosphere.nn.data import DataConfig, build_datasets
from photosphere.nn.train import TrainConfig, refresh_batch_norm, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def datasets():
    return build_datasets(ToySource(), DataConfig(**DATA), ToyLayout())


def _config(**kw):
    base = dict(model="resnet", net=TINY_RESNET, data=DATA, epochs=3, lr=3e-3,
                lr_decay_epochs=1, batch_size=16, seed=3, calibrate=False)
    return TrainConfig(**{**base, **kw})


def _params(path):
    model = load_checkpoint(path).model
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_averaged_weights_are_the_mean_of_the_last_epochs(tmp_path, datasets):
    # averaging does not change the trajectory: the plain run gives the weights after each epoch
    train(_config(), None, tmp_path / "plain2.pt", datasets=datasets, progress=False,
          stop_after=2)
    train(_config(), None, tmp_path / "plain3.pt", datasets=datasets, progress=False)
    avg = train(_config(average_epochs=2), None, tmp_path / "avg.pt", datasets=datasets,
                progress=False)
    w2, w3, mean = _params(tmp_path / "plain2.pt"), _params(tmp_path / "plain3.pt"), \
        _params(tmp_path / "avg.pt")
    assert any(not torch.equal(w2[k], w3[k]) for k in w2)
    for k in mean:
        torch.testing.assert_close(mean[k], (w2[k] + w3[k]) / 2)
    assert "val_loss_averaged" in avg.history[-1]
    assert load_checkpoint(tmp_path / "avg.pt").training["average"]["count"] == 2
    # interrupted after the first averaged epoch and resumed: the same final model
    train(_config(average_epochs=2), None, tmp_path / "res.pt", datasets=datasets,
          progress=False, stop_after=2)
    train(_config(average_epochs=2), None, tmp_path / "res.pt", datasets=datasets,
          progress=False, resume=True)
    a = load_checkpoint(tmp_path / "avg.pt").model.state_dict()
    b = load_checkpoint(tmp_path / "res.pt").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(ModelError, match="average_epochs"):
        _config(average_epochs=4)


def test_refresh_batch_norm_gives_the_pass_average(tmp_path, datasets):
    train(_config(epochs=1, lr_decay_epochs=0), None, tmp_path / "m.pt", datasets=datasets,
          progress=False)
    model = load_checkpoint(tmp_path / "m.pt").model
    conv, norm = model.stem[0], model.stem[1]
    norm.running_mean.fill_(7.0)
    refresh_batch_norm(model, datasets["train"], 16, epoch=5)
    assert not model.training and norm.momentum == 0.1
    with torch.no_grad():  # 48 stars in 3 equal batches: the mean of the batch means
        means = [conv(b.images).mean((0, 2, 3)) for b in datasets["train"].batches(16, 5, True)]
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0))


def test_init_starts_from_the_given_weights(tmp_path, datasets):
    train(_config(epochs=2, lr_decay_epochs=0), None, tmp_path / "a.pt", datasets=datasets,
          progress=False)
    # lr 0: Adam moves nothing, so the fine-tuned parameters are the starting ones
    tuned = train(_config(epochs=1, lr=0.0, lr_decay_epochs=0, seed=9, init=str(tmp_path / "a.pt")),
                  None, tmp_path / "b.pt", datasets=datasets, progress=False)
    start, end = _params(tmp_path / "a.pt"), _params(tmp_path / "b.pt")
    for k in start:
        torch.testing.assert_close(end[k], start[k], rtol=0, atol=0)
    ck = load_checkpoint(tmp_path / "b.pt")
    assert ck.training["config"]["init"] == str(tmp_path / "a.pt")
    assert ck.training["init_sha256"] == _weights_digest(
        load_checkpoint(tmp_path / "a.pt").model.state_dict())
    assert len(tuned.history) == 1
    no_dropout = train(_config(net={**TINY_RESNET, "dropout": 0.0}, epochs=1, lr_decay_epochs=0,
                               init=str(tmp_path / "a.pt")), None, tmp_path / "e.pt",
                       datasets=datasets, progress=False)
    assert load_checkpoint(no_dropout.path).model.config.dropout == 0.0
    with pytest.raises(ModelError, match="not this run's resnet network"):
        train(_config(net={**TINY_RESNET, "hidden": (16, 16)}, init=str(tmp_path / "a.pt")),
              None, tmp_path / "c.pt", datasets=datasets, progress=False)
    other_box = {**DATA, "bounds": {**DATA_BOUNDS, "teff": (4000.0, 6000.0)}}
    with pytest.raises(ModelError, match="another label box"):
        train(_config(data=other_box, init=str(tmp_path / "a.pt")), None, tmp_path / "d.pt",
              datasets=datasets, progress=False)
    with pytest.raises(ModelError, match="not a DAE"):
        TrainConfig(model="dae", init=str(tmp_path / "a.pt"))
