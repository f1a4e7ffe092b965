"""A checkpoint's config is checked against limits before any network is allocated."""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import _resnet

from photosphere.errors import CheckpointError
from photosphere.nn.attention import AttentionConfig, AttentionNet
from photosphere.nn.checkpoint import MAX_PARAMETERS, load_checkpoint, save_checkpoint
from photosphere.nn.dae import DAEConfig, DenoisedEstimator, DenoisingAutoencoder

torch.set_num_threads(1)


def _crafted(tmp_path, edit, model=None):
    path = save_checkpoint(tmp_path / "m.pt", "resnet" if model is None else "attention",
                           model if model is not None else _resnet())
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_a_config_asking_for_160_gb_is_refused_before_allocation(tmp_path):
    # two 200 000-wide FC layers: 4e10 weights, 160 GB of float32
    path = _crafted(tmp_path, lambda p: p["config"].update(hidden=[200_000, 200_000]))
    with pytest.raises(CheckpointError, match=f"limit {MAX_PARAMETERS:,}"):
        load_checkpoint(path)


def test_a_huge_input_image_is_refused(tmp_path):
    path = _crafted(tmp_path, lambda p: p["config"].update(n_pixels=2 ** 30))
    with pytest.raises(CheckpointError, match="input pixels"):
        load_checkpoint(path)


@pytest.mark.parametrize("change, match", [
    ({"n_pixels": 102}, "must be divisible"),        # 102 is not a multiple of 2**2
    ({"channels": [0, -3]}, "does not build a network"),
    ({"kernel": "seven"}, "does not build a network|invalid"),
    ({"unknown": 1}, "invalid"),
])
def test_a_bad_dae_config_is_a_clear_error(tmp_path, change, match):
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(DAEConfig(n_pixels=256, channels=(2, 2)))
    est = AttentionNet(AttentionConfig(n_pixels=256, channels=(2, 2, 2, 2), intermediate=2))
    path = _crafted(tmp_path, lambda p: p["dae"]["config"].update(change),
                    DenoisedEstimator(dae, est).eval())
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_weights_that_are_not_tensors_are_refused(tmp_path):
    path = _crafted(tmp_path, lambda p: p["state_dict"].update(extra="not a tensor"))
    with pytest.raises(CheckpointError, match="not stored as a mapping"):
        load_checkpoint(path)
