"""Training-only augmentation against the synthetic gap (unmodelled lines, continuum bows)."""

from __future__ import annotations

import pytest
import torch
from _toy import DATA_BOUNDS, ToyLayout, ToySource

from photosphere.errors import ModelError
from photosphere.nn.augment import (
    LINE_DEPTH,
    curvature_factors,
    line_strength_jitter,
    pixel_velocity,
    unmodelled_lines,
    veil,
)
from photosphere.nn.data import DataConfig, build_datasets

torch.set_num_threads(1)


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_pixel_velocity_of_a_log_uniform_layout():
    wave = 5000.0 * torch.exp(torch.arange(100, dtype=torch.float64) * 1e-6).repeat(2, 1)
    assert pixel_velocity(wave) == pytest.approx(299_792.458e-6, rel=1e-5)


def test_unmodelled_lines_are_absorption_seeded_and_widen_with_rotation():
    vsini = torch.tensor([0.0, 0.0, 30.0])
    t = unmodelled_lines(8, 4096, vsini, 40.0, 0.5, _gens(3))
    assert t.shape == (3, 8, 4096) and torch.all(t <= 1) and torch.all(t > 0)
    torch.testing.assert_close(t, unmodelled_lines(8, 4096, vsini, 40.0, 0.5, _gens(3)))
    assert not torch.equal(t[0], t[1])  # every sample draws its own lines
    # the deepest central optical depth is LINE_DEPTH[1] (blends can add up)
    assert float(t.min()) > 0.5 * torch.exp(torch.tensor(-LINE_DEPTH[1]))
    # same draws (same generator seed), one star rotating at 30 km/s: wider, shallower lines
    slow = unmodelled_lines(8, 4096, torch.tensor([0.0]), 40.0, 0.5, _gens(1, seed=7))
    fast = unmodelled_lines(8, 4096, torch.tensor([30.0]), 40.0, 0.5, _gens(1, seed=7))
    absorbing = lambda x: float((x < 0.999).float().mean())  # noqa: E731
    assert absorbing(fast) > 3 * absorbing(slow) > 0
    # no lines asked for: transmission 1
    assert torch.all(unmodelled_lines(8, 64, torch.zeros(2), 0.0, 0.5, _gens(2)) == 1)


def test_curvature_factors_bow_the_centre_and_keep_the_ends():
    f = curvature_factors(torch.tensor([[0.02, -0.01]]), 101)
    assert f.shape == (1, 2, 101)
    torch.testing.assert_close(f[0, :, [0, -1]], torch.ones(2, 2))
    torch.testing.assert_close(f[0, :, 50], torch.tensor([1.02, 0.99]))


def test_veil_keeps_the_continuum_and_shrinks_every_line_alike():
    f = torch.tensor([[[1.0, 0.5, 0.9]], [[1.0, 0.5, 0.9]]])
    v = veil(f, torch.tensor([0.0, 0.25]))
    torch.testing.assert_close(v[0], f[0])
    torch.testing.assert_close(1 - v[1], (1 - f[1]) / 1.25)


def test_line_strength_jitter_changes_depths_line_by_line():
    n = 4096
    x = torch.arange(n, dtype=torch.float32)
    centres = torch.arange(40, n, 80, dtype=torch.float32)  # 51 lines, 80 px apart
    f = 1 - 0.4 * torch.exp(-0.5 * ((x - centres[:, None]) / 3) ** 2).sum(0)
    images = f.expand(2, 8, n).clone()
    out = line_strength_jitter(images, torch.tensor([0.0, 0.3]), _gens(2))
    torch.testing.assert_close(out[0], images[0])  # σ = 0: unchanged
    assert torch.all(out >= 0)
    ratio = (1 - out[1, :, centres.long()]) / 0.4  # (8, 51) depth factor at each line centre
    # log-normal with σ 0.3 (knots 16 px apart: line centres 80 px apart are independent) ...
    log_ratio = ratio.log().flatten()
    mad = float((log_ratio - log_ratio.median()).abs().median()) * 1.4826
    # (the robust spread, 0.3 for the log-normal part alone, widens a little with the tail)
    assert 0.27 < mad < 0.45 and -0.15 < float(log_ratio.median()) < 0.05
    # ... plus a tail of lines weakened a lot (≈ 15 % of the knots by a factor 0.02-1)
    assert 0.03 < float((ratio < 0.4).float().mean()) < 0.15
    assert torch.all(out[1][images[1] == 1] == 1)  # the continuum stays at 1


def _config(**kw):
    base = dict(bounds=DATA_BOUNDS, n_train=16, n_val=4, n_test=4, snr=1e4, slant=0.0, seed=3)
    return DataConfig(**{**base, **kw})


def test_augmentation_touches_training_batches_only():
    plain = build_datasets(ToySource(), _config(), ToyLayout())
    aug = build_datasets(ToySource(), _config(unmodelled_lines=30.0, curvature=0.02, veiling=0.1,
                                                line_jitter=0.3),
                         ToyLayout())
    idx = torch.arange(8)
    a, p = aug["train"].batch(idx, epoch=2), plain["train"].batch(idx, epoch=2)
    # the same stars and noise, plus absorption: less flux after normalisation, mostly
    assert float((a.slanted - p.slanted).abs().max()) > 0.01
    assert float(a.slanted.sum()) < float(p.slanted.sum())
    torch.testing.assert_close(a.images, aug["train"].batch(idx, epoch=2).images)
    assert not torch.allclose(a.images, aug["train"].batch(idx, epoch=3).images)
    for split in ("val", "test"):  # validation and test images are never augmented
        torch.testing.assert_close(aug[split].batch(torch.arange(4)).images,
                                   plain[split].batch(torch.arange(4)).images)


def test_augmentation_settings_are_validated_and_stored():
    for name in ("unmodelled_lines", "curvature", "veiling", "line_jitter", "slant", "rv_max"):
        with pytest.raises(ModelError, match=name):
            _config(**{name: -1.0})
    cfg = _config(unmodelled_lines=12.0, curvature=0.01)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    # checkpoints written before these settings existed read back with them off
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("unmodelled_lines", "curvature", "veiling", "line_jitter")}
    assert DataConfig.from_dict(old).unmodelled_lines == 0.0
