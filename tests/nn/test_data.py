"""The on-the-fly échelle dataset and its leak-free splits."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from _toy import DATA_BOUNDS, ToyLayout, ToySource

from photosphere.errors import ModelError, OutOfGridError
from photosphere.nn.data import (
    LABELS,
    DataConfig,
    EchelleSimulator,
    build_datasets,
    draw_labels,
    make_splits,
    min_scaled_distance,
    normalise_orders,
    slant_factors,
)

torch.set_num_threads(1)


def _config(**kw):
    base = dict(bounds=DATA_BOUNDS, n_train=24, n_val=8, n_test=8, snr=(20.0, 100.0), seed=5)
    return DataConfig(**{**base, **kw})


def test_images_shape_and_physics():
    sim = EchelleSimulator(ToySource(), ToyLayout())
    labels = torch.tensor([[5500.0, 4.0, 0.0, 0.0], [5500.0, 4.0, 0.0, 25.0]])
    img = sim.images(labels)
    assert img.shape == (2, 8, 256) and img.dtype == torch.float32
    assert torch.all(torch.isfinite(img)) and float(img.max()) <= 1.0 + 1e-5
    # rotation makes lines shallower but keeps their equivalent width (flux conserving)
    assert float(img[1].min()) > float(img[0].min())
    torch.testing.assert_close((1 - img[1]).sum(), (1 - img[0]).sum(), rtol=0.02, atol=0.0)


def test_rv_shift_moves_the_lines():
    sim = EchelleSimulator(ToySource(), ToyLayout())
    labels = torch.tensor([[5000.0, 3.0, 0.0, 0.0]] * 2)
    img = sim.images(labels, rv=torch.tensor([0.0, 10.0]))
    a, b = img[0, 3] - img[0, 3].mean(), img[1, 3] - img[1, 3].mean()
    lags = range(-6, 7)
    best = max(lags, key=lambda k: float((a * torch.roll(b, -k)).sum()))
    # 10 km/s at 5200 Å is 0.173 Å, the layout has 38/255 Å per pixel: about 1.2 pixel redward
    assert best == 1


def test_fixed_source_labels_and_missing_labels():
    src = ToySource()
    sim = EchelleSimulator(src, ToyLayout(), fixed={"alpha": 0.2})
    out = sim.source_labels(torch.tensor([[5000.0, 3.0, -1.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[5000.0, 3.0, -1.0, 0.2]], dtype=torch.float64))

    class NoFeh(ToySource):
        label_names = ("teff", "logg", "alpha", "mh")
        bounds: ClassVar = {"teff": (4000, 7000), "logg": (1, 5), "alpha": (0, 1), "mh": (-1, 0)}

    with pytest.raises(ModelError, match="lacks \\['feh'\\]"):
        EchelleSimulator(NoFeh(), ToyLayout())


def test_source_must_cover_layout():
    class Short(ToySource):
        def __init__(self):
            super().__init__()
            self.wavelength = self.wavelength[self.wavelength < 5300]

    with pytest.raises(ModelError, match="covers"):
        EchelleSimulator(Short(), ToyLayout())


def test_out_of_source_bounds():
    with pytest.raises(OutOfGridError, match="teff"):
        build_datasets(ToySource(), _config(bounds={**DATA_BOUNDS, "teff": (3500.0, 7000.0)}),
                       ToyLayout())


def test_normalise_orders_removes_slant_and_scale():
    torch.manual_seed(0)
    sim = EchelleSimulator(ToySource(), ToyLayout())
    clean = sim.images(torch.tensor([[6000.0, 4.0, -0.5, 3.0]]))
    slanted = 3.7 * clean * slant_factors(torch.full((1, 8), 0.2), 256)
    torch.testing.assert_close(normalise_orders(slanted), normalise_orders(clean))
    assert abs(float(normalise_orders(clean).quantile(0.9)) - 1.0) < 0.01
    # flux in physical units (a flux-calibrated TRES order is ~2e-13 erg/s/cm²/Å) or counts
    for unit in (2e-13, 4e4):
        torch.testing.assert_close(normalise_orders(unit * slanted.double()),
                                   normalise_orders(clean.double()), rtol=1e-6, atol=1e-6)


def test_batches_deterministic_and_augmented_per_epoch():
    ds = build_datasets(ToySource(), _config(), ToyLayout())
    b0 = ds["train"].batch(torch.arange(4), epoch=0)
    assert b0.images.shape == (4, 1, 8, 256)
    assert torch.all((b0.snr >= 20) & (b0.snr <= 100))
    torch.testing.assert_close(b0.images, ds["train"].batch(torch.arange(4), epoch=0).images)
    assert not torch.allclose(b0.images, ds["train"].batch(torch.arange(4), epoch=1).images)
    t0 = ds["test"].batch(torch.arange(4), epoch=0).images
    torch.testing.assert_close(t0, ds["test"].batch(torch.arange(4), epoch=7).images)


def test_noise_matches_snr():
    ds = build_datasets(ToySource(), _config(snr=50.0, slant=0.0), ToyLayout())
    clean = normalise_orders(ds["test"]._clean(torch.arange(8), 0, 64))
    noisy = ds["test"].batch(torch.arange(8)).images[:, 0]
    std = float((noisy - clean).std())
    assert 0.8 / 50 < std < 1.1 / 50


def test_splits_are_seeded_and_disjoint():
    cfg = _config(n_train=500, n_val=200, n_test=200)
    labels = make_splits(cfg)
    torch.testing.assert_close(labels["test"], make_splits(cfg)["test"])
    assert min_scaled_distance(labels["train"], labels["test"], cfg.bounds) > cfg.min_separation
    # growing the training set never changes the test stars
    bigger = make_splits(_config(n_train=900, n_val=200, n_test=200))
    torch.testing.assert_close(bigger["test"], labels["test"])
    torch.testing.assert_close(bigger["train"][:500], labels["train"])
    with pytest.raises(ModelError, match="split"):
        draw_labels(cfg.bounds, 3, 0, "holdout")


def test_no_test_star_reaches_a_training_batch():
    """Leakage test: every spectrum the simulator makes while iterating the training set over
    several augmented epochs (noise, slant and RV augmentation on) comes from training labels,
    and none of those is near a validation or test star."""
    src = ToySource()
    cfg = _config(n_train=16, n_val=8, n_test=8, rv_max=5.0)
    ds = build_datasets(src, cfg, ToyLayout())
    test_labels = torch.cat([ds["val"].labels, ds["test"].labels])
    src.calls.clear()
    seen = []
    for epoch in range(3):
        for batch in ds["train"].batches(6, epoch=epoch, shuffle=True):
            seen.append(batch.labels.double())
    made = torch.cat(src.calls)  # (n, 4) source labels requested while training
    assert len(made) == 3 * 16  # RV augmentation: every star re-simulated every epoch
    train = ds["train"].labels
    made_estimator = torch.cat([made[:, :3], torch.zeros(len(made), 1)], 1)
    train_cols = torch.cat([train[:, :3], torch.zeros(len(train), 1)], 1)
    for row in made_estimator:
        assert min_scaled_distance(row[None], train_cols, cfg.bounds) < 1e-9
    test_cols = torch.cat([test_labels[:, :3], torch.zeros(len(test_labels), 1)], 1)
    assert min_scaled_distance(made_estimator, test_cols, cfg.bounds) > cfg.min_separation
    seen = torch.cat(seen)
    assert min_scaled_distance(seen, test_labels, cfg.bounds) > cfg.min_separation
    # every training star appears exactly once per epoch
    assert sorted(seen[:16, 0].tolist()) == sorted(train[:, 0].float().double().tolist())


def test_data_config_validation_and_round_trip():
    cfg = _config()
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ModelError, match="empty"):
        _config(bounds={**DATA_BOUNDS, "logg": (3.0, 3.0)})
    with pytest.raises(ModelError, match="in that order"):
        _config(bounds={k: DATA_BOUNDS[k] for k in reversed(LABELS)})
    with pytest.raises(ModelError, match="snr"):
        _config(snr=(50.0, 20.0))


def test_disk_cache_is_reused_and_keyed_by_source_and_stars(tmp_path):
    """Noise-free images are simulated once, stored by a digest of the source file, simulator
    settings and the split's labels, and read back unchanged by a later run."""
    grid_file = tmp_path / "source.bin"
    grid_file.write_bytes(b"grid v1")
    src = ToySource()
    src.path = grid_file
    cache = tmp_path / "cache"
    first = build_datasets(src, _config(), ToyLayout(), cache_dir=cache)
    b0 = first["test"].batch(torch.arange(8))
    files = sorted(p.name for p in cache.iterdir())
    assert [f.split("-")[0] for f in files] == ["test"]  # only what was asked for
    src.calls.clear()
    again = build_datasets(src, _config(), ToyLayout(), cache_dir=cache)
    torch.testing.assert_close(again["test"].batch(torch.arange(8)).images, b0.images)
    assert src.calls == []  # read from disk, nothing simulated
    # other stars (another seed) or another source file get other files
    build_datasets(src, _config(seed=6), ToyLayout(), cache_dir=cache)["test"].clean_images()
    grid_file.write_bytes(b"grid v2")
    src2 = ToySource()
    src2.path = grid_file
    build_datasets(src2, _config(), ToyLayout(), cache_dir=cache)["test"].clean_images()
    assert len(list(cache.iterdir())) == 3
    # a source that is not a file is never cached on disk
    plain = build_datasets(ToySource(), _config(), ToyLayout(), cache_dir=tmp_path / "none")
    plain["test"].clean_images()
    assert not (tmp_path / "none").exists()


def test_layout_narrowed_to_the_source():
    from photosphere.nn.data import default_layout

    full = default_layout()
    assert full.wavelength.shape == (8, 4096)
    assert full.wavelength_range == pytest.approx((5050.0, 5350.0))

    class Exact(ToySource):  # covers exactly 5050-5350 Å, like the embedded grid
        def __init__(self):
            super().__init__()
            self.wavelength = 5050.0 * (5350.0 / 5050.0) ** torch.linspace(0, 1, 3000).numpy()

    narrowed = default_layout(Exact())
    lo, hi = narrowed.wavelength_range
    assert narrowed.wavelength.shape == (8, 4096)
    assert 5050.0 < lo < 5051.5 and 5348.5 < hi < 5350.0
    EchelleSimulator(Exact(), narrowed)  # fits with the margin
    with pytest.raises(ModelError, match="covers"):
        EchelleSimulator(Exact(), full)


def test_per_star_resolution_and_macroturbulence():
    """R drawn log-uniformly and ζ uniformly per star, from the star's own stream: the same
    whatever the batch, inside the ranges, different between stars; broader lines are
    shallower, equivalent widths kept."""
    cfg = _config(resolution=(40_000.0, 115_000.0), macroturbulence=(0.0, 6.0))
    assert cfg.draws_broadening and cfg.nominal_resolution == pytest.approx(
        (40_000.0 * 115_000.0) ** 0.5)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    ds = build_datasets(ToySource(), cfg, ToyLayout())["train"]
    b = ds.broadening(torch.arange(len(ds)))
    r, z = b["resolution"], b["macroturbulence"]
    assert float(r.min()) >= 40_000 and float(r.max()) <= 115_000 and float(r.std()) > 1e4
    assert float(z.min()) >= 0 and float(z.max()) <= 6 and float(z.std()) > 1
    one = ds.broadening(torch.tensor([5]))
    assert float(one["resolution"][0]) == float(r[5]) and float(one["macroturbulence"][0]) \
        == float(z[5])
    sim = ds.simulator
    star = torch.tensor([[5500.0, 4.0, 0.0, 2.0]])
    sharp = sim.images(star, resolution=torch.tensor([115_000.0]))[0]
    broad = sim.images(star, resolution=torch.tensor([40_000.0]),
                       macroturbulence=torch.tensor([6.0]))[0]
    assert float(broad.min()) > float(sharp.min()) + 0.03  # toy lines are 3 km/s wide
    assert float((1 - broad).sum()) == pytest.approx(float((1 - sharp).sum()), rel=0.02)
    fixed = build_datasets(ToySource(), _config(macroturbulence=3.0), ToyLayout())["test"]
    assert torch.all(fixed.broadening(torch.arange(3))["macroturbulence"] == 3.0)
    for bad in (dict(resolution=(0.0, 1e5)), dict(resolution=(1e5, 4e4)),
                dict(macroturbulence=-1.0)):
        with pytest.raises(ModelError):
            _config(**bad)
