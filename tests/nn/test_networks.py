"""Shapes, gradients and valid Gaussian outputs of the ResNet, attention network and DAE."""

from __future__ import annotations

import pytest
import torch

from photosphere.nn.attention import AttentionConfig, AttentionNet
from photosphere.nn.dae import DAEConfig, DenoisedEstimator, DenoisingAutoencoder
from photosphere.nn.resnet import ResNet, ResNetConfig

torch.set_num_threads(1)
FULL_SHAPE = (2, 1, 8, 4096)  # the HARPS-N 5050-5350 Å image


def _tiny_resnet(covariance="diagonal", **kw):
    return ResNet(ResNetConfig(covariance=covariance, stem_channels=2, stem_stride=4,
                               channels=(2, 4, 4, 4, 4), pooled_pixels=2, hidden=(8, 8), **kw))


def _tiny_attention(covariance="diagonal", **kw):
    return AttentionNet(AttentionConfig(covariance=covariance, stem_stride=4,
                                        channels=(2, 4, 4, 4), intermediate=4, **kw))


def _check_gaussian(mu, tril, b, k=4):
    assert mu.shape == (b, k) and tril.shape == (b, k, k)
    assert torch.all(torch.isfinite(mu)) and torch.all(torch.isfinite(tril))
    assert torch.all(torch.diagonal(tril, dim1=-2, dim2=-1) > 0)
    assert torch.all(torch.triu(tril, diagonal=1) == 0)


@pytest.mark.parametrize("make", [_tiny_resnet, _tiny_attention])
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_estimators_full_size_image(make, covariance):
    torch.manual_seed(0)
    net = make(covariance)
    x = torch.randn(FULL_SHAPE)
    target = torch.randn(2, 4)
    mu, tril, loss = net(x, target)
    _check_gaussian(mu, tril, 2)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    mu2, _, loss2 = net(x)
    assert loss2 is None and mu2.shape == (2, 4)


def test_full_covariance_has_off_diagonal_terms():
    torch.manual_seed(0)
    _, tril, _ = _tiny_resnet("full")(torch.randn(3, 1, 8, 4096))
    assert torch.any(torch.tril(tril, diagonal=-1).abs() > 0)


def test_attention_maps_sum_to_one_and_shapes():
    torch.manual_seed(0)
    net = _tiny_attention().eval()
    x = torch.randn(FULL_SHAPE)
    *_, maps = net(x, return_attention=True)
    assert [m.shape for m in maps] == [(2, 8, 1024), (2, 4, 512), (2, 2, 256)]
    for m in maps:
        torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(2))
        assert torch.all(m >= 0)
    up = net.attention_maps(x)
    assert up.shape == (2, 3, 8, 4096)
    # rescaled by the number of positions: the mean over the image is 1 for every block
    torch.testing.assert_close(up.mean(dim=(2, 3)), torch.ones(2, 3))


def test_attention_map_responds_where_the_input_changes():
    """A line added at order 3, pixel 2000 changes each map most at that position."""
    torch.manual_seed(1)
    net = _tiny_attention().eval()
    x = 0.01 * torch.randn(1, 1, 8, 4096)
    *_, maps0 = net(x, return_attention=True)
    x[0, 0, 3, 2000] += 50.0
    x[0, 0, 3, 2001] -= 50.0
    *_, maps1 = net(x, return_attention=True)
    # block n sees orders / 2^n and pixels / (stem_stride 4 * 2^n)
    for n, (a, b) in enumerate(zip(maps0, maps1, strict=True)):
        change = (b - a).abs()[0]
        order, pixel = divmod(int(change.argmax()), change.shape[1])
        assert order == 3 // 2**n
        assert abs(pixel - 500 / 2**n) <= 6


def test_dae_shapes_and_loss():
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(DAEConfig.cpu())
    clean = torch.ones(2, 1, 8, 4096)
    noisy = clean + 0.05 * torch.randn_like(clean)
    out, loss = dae(noisy, clean)
    assert out.shape == noisy.shape
    assert loss.item() > 0
    loss.backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in dae.parameters())


def test_dae_learns_to_denoise():
    torch.manual_seed(0)
    cfg = DAEConfig(n_orders=2, n_pixels=64, channels=(8, 8), residual=True)
    dae = DenoisingAutoencoder(cfg)
    opt = torch.optim.AdamW(dae.parameters(), lr=1e-2)
    x = torch.linspace(0, 6, 64)
    clean = (1 - 0.5 * torch.exp(-0.5 * ((x - 3) / 0.3) ** 2)).expand(32, 1, 2, 64)
    for _ in range(300):
        noisy = clean + 0.05 * torch.randn_like(clean)
        _, loss = dae(noisy, clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
    noisy = clean + 0.05 * torch.randn_like(clean)
    with torch.no_grad():
        _, loss = dae(noisy, clean)
    assert float(loss) < 0.5 * float(((noisy - clean) ** 2).mean())


def test_denoised_estimator_freezes_dae():
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(DAEConfig.cpu())
    model = DenoisedEstimator(dae, _tiny_attention())
    model.train()
    assert not dae.training
    *_, loss = model(torch.randn(FULL_SHAPE), torch.zeros(2, 4))
    loss.backward()
    assert all(p.grad is None for p in dae.parameters())
    assert model.attention_maps(torch.randn(FULL_SHAPE)).shape == (2, 3, 8, 4096)


def test_cpu_presets_build():
    assert ResNet(ResNetConfig.cpu())(torch.randn(1, 1, 8, 4096))[0].shape == (1, 4)
    assert AttentionNet(AttentionConfig.cpu()).eval()(torch.randn(1, 1, 8, 4096))[0].shape == (1, 4)
