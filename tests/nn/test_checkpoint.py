"""Checkpoints: round trip, weights_only loading, corrupt and truncated files."""

from __future__ import annotations

import pytest
import torch

from photosphere.errors import CheckpointError, MissingFileError
from photosphere.nn.attention import AttentionConfig, AttentionNet
from photosphere.nn.checkpoint import LabelScaling, load_checkpoint, save_checkpoint
from photosphere.nn.dae import DAEConfig, DenoisedEstimator, DenoisingAutoencoder
from photosphere.nn.resnet import ResNet, ResNetConfig

torch.set_num_threads(1)
BOUNDS = {"teff": (3500.0, 9750.0), "logg": (0.0, 5.0), "feh": (-2.5, 0.5), "vsini": (0.0, 30.0)}
X = torch.randn(2, 1, 8, 256, generator=torch.Generator().manual_seed(3))


def _resnet():
    torch.manual_seed(0)
    return ResNet(ResNetConfig(n_pixels=256, covariance="full", stem_channels=2,
                               channels=(2, 4), pooled_pixels=2, hidden=(8, 8))).eval()


def test_round_trip_rebuilds_identical_model(tmp_path):
    net = _resnet()
    scaling = LabelScaling.from_bounds(BOUNDS)
    path = save_checkpoint(tmp_path / "m.pt", "resnet", net, label_scaling=scaling,
                           temperature=torch.tensor([1.0, 1.2, 0.9, 1.1]),
                           data={"snr": 20.0}, training={"epoch": 3})
    # plain weights_only loading works: nothing but tensors and containers inside
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "resnet"
    ck = load_checkpoint(path)
    assert ck.kind == "resnet" and ck.data == {"snr": 20.0} and ck.training == {"epoch": 3}
    assert ck.label_scaling.names == ("teff", "logg", "feh", "vsini")
    torch.testing.assert_close(ck.temperature, torch.tensor([1.0, 1.2, 0.9, 1.1]))
    mu0, l0, _ = net(X)
    mu1, l1, _ = ck.model(X)
    torch.testing.assert_close(mu0, mu1)
    torch.testing.assert_close(l0, l1)


def test_label_scaling_round_trip():
    s = LabelScaling.from_bounds(BOUNDS)
    y = torch.tensor([[5750.0, 4.44, 0.0, 2.0]])
    z = s.scale_labels(y)
    assert torch.all(z.abs() <= 1)
    mu, tril = s.unscale(z, torch.eye(4).unsqueeze(0))
    torch.testing.assert_close(mu, y)
    torch.testing.assert_close(torch.diagonal(tril[0]), s.scale)


def test_dae_estimator_round_trip(tmp_path):
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(DAEConfig(n_pixels=256, channels=(2, 2)))
    est = AttentionNet(AttentionConfig(n_pixels=256, channels=(2, 2, 2, 2), intermediate=2))
    model = DenoisedEstimator(dae, est).eval()
    path = save_checkpoint(tmp_path / "m.pt", "attention", model)
    ck = load_checkpoint(path)
    assert isinstance(ck.model, DenoisedEstimator)
    torch.testing.assert_close(model(X)[0], ck.model(X)[0])


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="photosphere nn train"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "resnet", _resnet())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


def test_flipped_weight_bytes_detected(tmp_path):
    net = _resnet()
    path = save_checkpoint(tmp_path / "m.pt", "resnet", net)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.linear.bias"][0] += 1.0  # silent damage to one weight
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_garbage_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match=r"not a photosphere\.nn checkpoint"):
        load_checkpoint(foreign)


def test_arbitrary_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "photosphere.nn", "x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(evil)


def test_config_weight_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "resnet", _resnet())
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden"] = [16, 8]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match the stored config"):
        load_checkpoint(path)


def test_float16_storage_round_trip(tmp_path):
    net = _resnet()
    full = save_checkpoint(tmp_path / "full.pt", "resnet", net)
    half = save_checkpoint(tmp_path / "half.pt", "resnet", net, precision="float16")
    ck = load_checkpoint(half)
    assert ck.precision == "float16" and load_checkpoint(full).precision == "float32"
    raw = torch.load(half, weights_only=True)["state_dict"]
    assert raw["head.linear.bias"].dtype == torch.float16
    # integer buffers (batch-norm counters) are stored as they are
    assert all(v.dtype == torch.int64 for k, v in raw.items() if k.endswith("num_batches_tracked"))
    for name, p in ck.model.state_dict().items():  # loaded back into a float32 network
        ref = net.state_dict()[name]
        assert p.dtype == ref.dtype
        if p.is_floating_point():
            torch.testing.assert_close(p, ref.half().float())
    # re-saving a loaded model keeps its precision, and damage is still caught
    again = save_checkpoint(tmp_path / "again.pt", "resnet", ck.model, precision=ck.precision)
    assert load_checkpoint(again).precision == "float16"
    payload = torch.load(again, weights_only=True)
    payload["state_dict"]["head.linear.bias"][0] += 1.0
    torch.save(payload, again)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(again)
    with pytest.raises(CheckpointError, match="precision 'bfloat8'"):
        save_checkpoint(tmp_path / "x.pt", "resnet", net, precision="bfloat8")
    assert not (tmp_path / "x.pt").exists()
