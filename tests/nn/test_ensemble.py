"""Deep ensembles stored as one model: the mixture's moments, the file round trip, what may be
combined, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from photosphere.cli import main
from photosphere.errors import CheckpointError, ModelError
from photosphere.nn.checkpoint import LabelScaling, load_checkpoint, save_checkpoint
from photosphere.nn.ensemble import DeepEnsemble, EnsembleConfig, combine
from photosphere.nn.evaluate import predict_ensemble, predict_images
from photosphere.nn.predict import network
from photosphere.nn.resnet import ResNet, ResNetConfig

torch.set_num_threads(1)
BOUNDS = {"teff": (3800.0, 7000.0), "logg": (0.5, 5.0), "feh": (-3.0, 0.5), "vsini": (0.0, 30.0)}
X = torch.randn(3, 1, 8, 256, generator=torch.Generator().manual_seed(3))
CONFIG = dict(n_pixels=256, stem_channels=2, channels=(2, 4), pooled_pixels=2, hidden=(8, 8))


def _member(tmp_path, seed: int, temperature=(1.0, 1.2, 0.9, 1.1), data=None, **config):
    torch.manual_seed(seed)
    net = ResNet(ResNetConfig(**{**CONFIG, **config})).eval()
    history = [{"epoch": 0, "val_loss": -1.0 - seed}]
    return save_checkpoint(tmp_path / f"m{seed}.pt", "resnet", net,
                           label_scaling=LabelScaling.from_bounds(BOUNDS),
                           temperature=torch.tensor(temperature),
                           data={"snr": [10.0, 300.0], "seed": 0, "systematic_floor": {"teff": 9.0},
                                 **(data or {})},
                           training={"history": history, "config": {"seed": seed}})


def test_mixture_moments_match_predict_ensemble(tmp_path):
    cks = [load_checkpoint(_member(tmp_path, s, temperature=(1.0 + 0.1 * s,) * 4))
           for s in range(3)]
    model, data = combine(cks)
    scaling = cks[0].label_scaling
    mu, cov = predict_images(model, scaling, X)
    mu_ref, cov_ref = predict_ensemble([(c.model, c.label_scaling, c.temperature) for c in cks],
                                       X)
    torch.testing.assert_close(mu, mu_ref)
    torch.testing.assert_close(cov, cov_ref, rtol=1e-4, atol=1e-3)
    # the members' spread widens Σ beyond the mean of their own Σ
    own = torch.stack([predict_images(c.model, scaling, X, temperature=c.temperature)[1]
                       for c in cks]).mean(0)
    assert torch.all(torch.diagonal(cov, dim1=-2, dim2=-1) > torch.diagonal(own, dim1=-2,
                                                                             dim2=-1))
    # without the members' temperatures: the mixture of their raw Gaussians, weights shared
    raw = model.uncalibrated()
    mu_raw, cov_raw = predict_images(raw, scaling, X)
    mu_ref, cov_ref = predict_ensemble([(c.model, c.label_scaling, None) for c in cks], X)
    torch.testing.assert_close(mu_raw, mu)
    torch.testing.assert_close(cov_raw, cov_ref, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(cov_raw, cov)
    assert raw.members[0].stem is model.members[0].stem and not raw.training
    # nn predict's raw σ (network(..., calibrated=False)) on the stored ensemble: the same
    stored = load_checkpoint(save_checkpoint(tmp_path / "e.pt", "ensemble", model,
                                             label_scaling=scaling, data=data))
    image = X[0, 0].numpy()
    mu_run, cov_run = network([stored], calibrated=False)(image)
    np.testing.assert_allclose(mu_run, mu_raw[0].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cov_run, cov_raw[0].numpy(), rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(model.temperatures[:, 0], torch.tensor([1.0, 1.1, 1.2]))
    # what was combined is recorded; per-network real-star calibration is not carried over
    assert [m["seed"] for m in data["ensemble"]] == [0, 1, 2]
    assert [m["val_nll"] for m in data["ensemble"]] == [-1.0, -2.0, -3.0]
    assert "systematic_floor" not in data and data["snr"] == [10.0, 300.0]


def test_round_trip(tmp_path):
    cks = [load_checkpoint(_member(tmp_path, s)) for s in (4, 5)]
    model, data = combine(cks)
    path = save_checkpoint(tmp_path / "e.pt", "ensemble", model,
                           label_scaling=cks[0].label_scaling, data=data)
    ck = load_checkpoint(path)
    assert ck.kind == "ensemble" and isinstance(ck.model, DeepEnsemble)
    assert ck.model.config.n_members == 2 and ck.model.config.n_orders == 8
    torch.testing.assert_close(ck.model(X)[0], model(X)[0])
    torch.testing.assert_close(ck.model.temperatures[1], torch.tensor([1.0, 1.2, 0.9, 1.1]))
    # a flipped member weight is caught by the file's digest
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["members.1.fc.0.weight"][0, 0] += 1.0
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path / "bad.pt")


def test_invalid_ensemble_configs_refused(tmp_path):
    cks = [load_checkpoint(_member(tmp_path, s)) for s in (0, 1)]
    model, data = combine(cks)
    path = save_checkpoint(tmp_path / "e.pt", "ensemble", model, data=data)
    raw = torch.load(path, weights_only=True)
    for bad, match in (({"n_members": 1}, "n_members"), ({"member_kind": "dae"}, "member_kind"),
                       ({"member": {"n_pixels": -4}}, "image sizes")):
        raw_bad = {**raw, "config": {**raw["config"], **bad}}
        torch.save(raw_bad, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="n_members"):
        EnsembleConfig("resnet", {}, 1)


def test_only_one_recipe_combines(tmp_path):
    base = load_checkpoint(_member(tmp_path, 0))
    with pytest.raises(ModelError, match="at least 2"):
        combine([base])
    wider = load_checkpoint(_member(tmp_path, 1, channels=(2, 8)))
    with pytest.raises(ModelError, match="network kind or size"):
        combine([base, wider])
    other_snr = load_checkpoint(_member(tmp_path, 2, data={"snr": 20.0}))
    with pytest.raises(ModelError, match="'snr'"):
        combine([base, other_snr])
    model, data = combine([base, base])
    with pytest.raises(ModelError, match="kind ensemble cannot be an ensemble member"):
        combine([load_checkpoint(save_checkpoint(tmp_path / "e.pt", "ensemble", model,
                                                 label_scaling=base.label_scaling, data=data)),
                 base])
    # the data seed and per-network calibrations may differ
    other = load_checkpoint(_member(tmp_path, 3, data={"seed": 7, "systematic_floor": {}}))
    assert combine([base, other])[0].config.n_members == 2


def test_cli_ensemble_then_predict_ensemble_file(tmp_path, capsys):
    paths = [str(_member(tmp_path, s)) for s in (0, 1)]
    out = tmp_path / "ens.pt"
    assert main(["nn", "ensemble", *paths, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and [m["seed"] for m in report["members"]] == [0, 1]
    ck = load_checkpoint(out)
    assert ck.kind == "ensemble" and ck.label_scaling.names == tuple(BOUNDS)
    torch.testing.assert_close(ck.temperature, torch.ones(4))
    assert main(["nn", "ensemble", paths[0], "--out", str(tmp_path / "one.pt")]) != 0
    assert "at least 2" in capsys.readouterr().err
    assert not (tmp_path / "one.pt").exists()


def test_cli_ensemble_in_float16_halves_the_file(tmp_path, capsys):
    paths = [str(_member(tmp_path, s)) for s in (0, 1)]
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    assert main(["nn", "ensemble", *paths, "--out", str(full), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "float32"
    assert main(["nn", "ensemble", *paths, "--out", str(half), "--precision", "float16",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "float16" and report["bytes"] == half.stat().st_size
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert (a.precision, b.precision) == ("float32", "float16")
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    x = torch.randn(3, 1, 8, 64, generator=torch.Generator().manual_seed(5))
    mu_a, mu_b = a.model(x)[0], b.model(x)[0]
    assert mu_b.dtype == torch.float32  # computed in float32, from rounded weights
    assert 0 < (mu_a - mu_b).abs().max() < 1e-2
