"""Predictions, coverage, temperature scaling, MC dropout, ensembles, tables and figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import ModelError
from photosphere.nn.checkpoint import LabelScaling
from photosphere.nn.data import STUDY_BOUNDS
from photosphere.nn.evaluate import (
    Predictions,
    fit_temperature,
    format_table2,
    format_table3,
    plot_attention,
    plot_residuals,
    plot_sigma,
    predict_ensemble,
    predict_images,
)
from photosphere.nn.resnet import ResNet, ResNetConfig

torch.set_num_threads(1)
SCALING = LabelScaling.from_bounds(STUDY_BOUNDS)


def _net(seed=0, dropout=0.3):
    torch.manual_seed(seed)
    return ResNet(ResNetConfig(n_pixels=256, stem_channels=2, channels=(2, 4), pooled_pixels=2,
                               hidden=(16, 16), dropout=dropout)).eval()


def _predictions(rng, scale_true=2.0, n=4000):
    """Residuals drawn with σ_true = scale_true × the reported σ."""
    labels = rng.uniform([3500, 0, -2.5, 0], [9750, 5, 0.5, 30], (n, 4))
    sigma = np.array([100.0, 0.2, 0.1, 1.0]) * rng.uniform(0.5, 1.5, (n, 4))
    mu = labels + scale_true * sigma * rng.standard_normal((n, 4))
    cov = np.einsum("ni,ij->nij", sigma**2, np.eye(4))
    return Predictions(labels, mu, cov, np.full(n, 20.0), SCALING.scale.double().numpy())


def test_mae_and_coverage(rng):
    pred = _predictions(rng, scale_true=1.0)
    cov1, cov2 = pred.coverage(1), pred.coverage(2)
    assert abs(cov1["all"] - 0.683) < 0.02 and abs(cov2["all"] - 0.954) < 0.01
    mae = pred.mae()
    # E|N(0, σ)| = σ sqrt(2/π), σ averaged over U(0.5, 1.5) × base
    assert mae["teff"] == pytest.approx(100 * np.sqrt(2 / np.pi), rel=0.05)


def test_temperature_scaling_restores_coverage(rng):
    pred = _predictions(rng, scale_true=2.0)
    assert pred.coverage(1)["all"] < 0.45  # σ too small by 2: overconfident
    t = fit_temperature(pred.residual_z)
    np.testing.assert_allclose(t.numpy(), 2.0, rtol=0.05)
    fixed = pred.scaled(t)
    np.testing.assert_allclose(fixed.sigma, pred.sigma * t.double().numpy(), rtol=1e-6)
    assert abs(fixed.coverage(1)["all"] - 0.683) < 0.02
    with pytest.raises(ModelError, match="residuals"):
        fit_temperature(torch.zeros(1, 4))


def test_predict_images_units_temperature_and_mc_dropout():
    net = _net()
    x = torch.randn(3, 1, 8, 256, generator=torch.Generator().manual_seed(1))
    mu, cov = predict_images(net, SCALING, x)
    mu_s, _, _ = net(x)
    torch.testing.assert_close(mu, mu_s * SCALING.scale + SCALING.offset)
    t = torch.tensor([2.0, 1.0, 1.0, 0.5])
    _, cov_t = predict_images(net, SCALING, x, temperature=t)
    torch.testing.assert_close(torch.diagonal(cov_t, dim1=-2, dim2=-1),
                               torch.diagonal(cov, dim1=-2, dim2=-1) * t**2)
    mu_mc, cov_mc = predict_images(net, SCALING, x, mc_samples=20)
    torch.testing.assert_close(mu_mc, predict_images(net, SCALING, x, mc_samples=20)[0])
    # reference: law of total variance over 20 dropout draws (same seed as predict_images)
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()
    with torch.no_grad():
        draws = [net(x)[:2] for _ in range(20)]
    net.eval()
    means = torch.stack([d[0] for d in draws])
    aleatoric = torch.stack([d[1] @ d[1].transpose(-1, -2) for d in draws]).mean(0)
    epistemic = torch.einsum("sbi,sbj->bij", means - means.mean(0), means - means.mean(0)) / 19
    s = SCALING.scale
    torch.testing.assert_close(cov_mc, (aleatoric + epistemic) * s[:, None] * s[None, :])
    assert torch.all(torch.diagonal(epistemic, dim1=-2, dim2=-1) > 0)
    assert not net.training and all(not m.training for m in net.modules())
    with pytest.raises(ModelError, match="dropout"):
        predict_images(_net(dropout=0.0).apply(_strip_dropout), SCALING, x, mc_samples=2)


def _strip_dropout(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Dropout):
            setattr(module, name, torch.nn.Identity())


def test_ensemble_adds_spread_of_members():
    x = torch.randn(2, 1, 8, 256, generator=torch.Generator().manual_seed(2))
    members = [(_net(seed), SCALING, None) for seed in (0, 1, 2)]
    mu, cov = predict_ensemble(members, x)
    singles = [predict_images(m, s, x) for m, s, _ in members]
    torch.testing.assert_close(mu, torch.stack([p[0] for p in singles]).mean(0))
    mean_cov = torch.stack([p[1] for p in singles]).mean(0)
    assert torch.all(torch.diagonal(cov - mean_cov, dim1=-2, dim2=-1) > 0)


def test_tables_layout(rng):
    pred = _predictions(rng, 1.0, n=200)
    row = {"snr": 20, "covariance": "diagonal", "model": "Residual-network [m.pt]",
           "mae": pred.mae()}
    t2 = format_table2([row])
    assert t2.splitlines()[1].split() == ["S/N", "Sigma", "Model", "Teff", "log(g)", "Z", "Vsini"]
    assert "[study] DAE Attention-network" in t2 and "70.9" in t2
    t3 = format_table3([{"model": "ours", "coverage1": pred.coverage(1),
                         "coverage2": pred.coverage(2)}])
    assert "[study] Residual-network" in t3 and "79.9" in t3
    assert f"{100 * pred.coverage(1)['all']:.1f}" in t3


def test_figures_written(tmp_path, rng):
    pred = _predictions(rng, 1.0, n=100)
    assert plot_residuals(pred, tmp_path / "r.png").stat().st_size > 10_000
    assert plot_sigma(pred, tmp_path / "s.png").stat().st_size > 10_000
    wave = np.stack([np.linspace(5050 + 37.5 * o, 5087.5 + 37.5 * o, 256) for o in range(8)])
    img = 1 - 0.5 * np.exp(-0.5 * ((wave - 5172.68) / 0.1) ** 2)
    maps = np.ones((3, 8, 256))
    assert plot_attention(img, maps, wave, tmp_path / "a.png").stat().st_size > 10_000
