"""Networks over line windows: the optical layout, [α/Fe] and vmic from relations, windows
blanked in training and missing in real spectra, the input calibration, real-star σ_sys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _toy import C_KMS, DATA_BOUNDS, TINY_RESNET, ToySource

from photosphere.errors import InvalidSpectrumError, ModelError
from photosphere.grids.calibrated import LineCalibration, zero_point_weight
from photosphere.grids.tied_labels import alpha_trend, vmic_relation
from photosphere.nn.data import (
    DataConfig,
    EchelleSimulator,
    blank_windows,
    build_datasets,
    complete_labels,
    draw_labels,
)
from photosphere.nn.input_calibration import InputCalibration
from photosphere.nn.inputs import prepare_image
from photosphere.nn.layouts import layout_groups, optical_layout, windows_layout
from photosphere.nn.real_stars import mismatch_limit, solve_floor
from photosphere.spectrum import Spectrum

WINDOWS = ((5000.0, 5120.0), (5200.0, 5290.0), (5330.0, 5410.0))


class WindowedSource(ToySource):
    """The toy source sampled only inside three windows (as the optical emulator is), with
    [α/Fe] and vmic labels."""

    label_names = ("teff", "logg", "feh", "alpha", "vmic")

    def __init__(self):
        super().__init__(velocity_step=2.0)
        self.bounds = {**ToySource.bounds, "vmic": (0.5, 2.5)}
        keep = np.zeros(len(self.wavelength), bool)
        for lo, hi in WINDOWS:
            keep |= (self.wavelength >= lo) & (self.wavelength <= hi)
        self.wavelength = self.wavelength[keep]
        self.velocity_step = 2.0


def small_layout():
    return windows_layout(WINDOWS, step_kms=2.5, n_pixels=256)


def test_windows_layout_covers_each_window_inside_its_margins():
    layout = small_layout()
    groups = layout_groups(layout.wavelength)
    assert groups.max() + 1 == len(WINDOWS)
    step = np.expm1(np.diff(np.log(layout.wavelength), axis=1)) * C_KMS
    assert np.allclose(step, 2.5, rtol=1e-6)
    margin = 1 + 50 / C_KMS
    for g, (lo, hi) in enumerate(WINDOWS):
        rows = layout.wavelength[groups == g]
        assert rows.min() == pytest.approx(lo * margin, rel=1e-9)
        assert rows.max() == pytest.approx(hi / margin, rel=1e-9)


def test_optical_layout_is_26_rows_in_7_windows():
    layout = optical_layout()
    assert layout.wavelength.shape == (26, 1024)
    assert layout_groups(layout.wavelength).max() + 1 == 7


def test_a_window_shorter_than_a_row_is_refused():
    with pytest.raises(ModelError, match="shorter than one row"):
        windows_layout(((5000.0, 5010.0),), step_kms=1.0, n_pixels=4096)


def test_relations_draw_alpha_and_vmic_around_the_galactic_relations():
    bounds = {**DATA_BOUNDS, "alpha": (-0.1, 0.5)}
    labels = draw_labels(bounds, 2000, 0, "train", relations=True)
    assert labels.shape == (2000, 6)
    alpha, vmic = labels[:, 4], labels[:, 5]
    inside = (alpha > -0.09) & (alpha < 0.49)  # not clipped
    resid = (alpha - alpha_trend(labels[:, 2]))[inside]
    assert abs(float(resid.mean())) < 0.01 and 0.08 < float(resid.std()) < 0.12
    dv = (vmic - vmic_relation(labels[:, 0], labels[:, 1]))[(vmic > 0.51) & (vmic < 2.49)]
    assert 0.25 < float(dv.std()) < 0.35
    assert float(alpha.min()) >= -0.1 and float(vmic.max()) <= 2.5
    config = DataConfig(bounds=bounds, relations=True)
    assert config.label_names[-1] == "alpha" and config.columns[-2:] == ("alpha", "vmic")


def test_complete_labels_fills_the_nuisance_columns_from_the_relations():
    config = DataConfig(bounds=DATA_BOUNDS, relations=True)
    full = complete_labels(np.array([5000.0, 2.5, -1.5, 3.0]), config)
    assert full.shape == (1, 6)
    assert float(full[0, 4]) == pytest.approx(float(alpha_trend(torch.tensor(-1.5))))
    assert float(full[0, 5]) == pytest.approx(float(vmic_relation(torch.tensor(5000.0),
                                                                  torch.tensor(2.5))))


def test_bounds_may_only_add_alpha():
    with pytest.raises(ModelError, match="optionally followed by"):
        DataConfig(bounds={**DATA_BOUNDS, "vmic": (0.5, 2.5)})


def test_blank_windows_keeps_at_least_two_windows_and_blanks_whole_windows():
    groups = torch.tensor([0, 0, 1, 2, 2, 3])
    images = torch.rand(50, 6, 16) * 0.5
    gens = [torch.Generator().manual_seed(i) for i in range(50)]
    out = blank_windows(images, groups, 0.9, gens)
    blank = (out == 1.0).all(-1)  # (B, rows)
    for b in range(50):
        kept = {int(groups[r]) for r in range(6) if not blank[b, r]}
        assert len(kept) >= 2
        for g in range(4):  # a window is blanked whole or not at all
            assert blank[b, groups == g].all() or not blank[b, groups == g].any()
    assert blank.any()


def test_a_windowed_source_simulates_and_trains_with_alpha():
    from photosphere.nn.train import preset, train



    source = WindowedSource()
    cfg = dict(bounds={**DATA_BOUNDS, "alpha": (0.0, 0.4)}, n_train=32, n_val=16, n_test=8,
               snr=50.0, seed=1, relations=True, window_dropout=0.3)
    datasets = build_datasets(source, DataConfig(**cfg), small_layout())
    images = datasets["train"].clean_images()
    assert images.shape[0] == 32 and images.shape[2] == 256 and torch.isfinite(images).all()
    batch = datasets["train"].batch(torch.arange(8), epoch=1)
    assert batch.labels.shape == (8, 5)
    config = preset("cpu", data=cfg, epochs=1, lr_decay_epochs=0, net=TINY_RESNET)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, source, f"{tmp}/m.pt", datasets=datasets, progress=False)
        from photosphere.nn.checkpoint import load_checkpoint

        ck = load_checkpoint(result.path)
    assert ck.label_scaling.names == ("teff", "logg", "feh", "vsini", "alpha")
    assert len(result.temperature) == 5


def test_the_simulator_refuses_a_windowed_layout_the_source_does_not_cover():
    with pytest.raises(ModelError, match="covers"):
        EchelleSimulator(WindowedSource(), windows_layout(((4900.0, 5100.0),), n_pixels=128))


def _spectrum(lo, hi, rng):
    wave = np.exp(np.arange(np.log(lo), np.log(hi), 1.0 / C_KMS))
    flux = 1 - 0.3 * np.exp(-0.5 * ((wave % 3.0) - 1.5) ** 2 / 0.02) \
        + 0.002 * rng.standard_normal(len(wave))
    return Spectrum(wave, flux, np.full(len(wave), 0.002))


def test_prepare_image_by_window_blanks_uncovered_windows(rng):
    layout = small_layout()
    spectrum = _spectrum(4990.0, 5300.0, rng)  # the first two windows only
    prepared = prepare_image(spectrum, layout.wavelength, by_window=True)
    groups = layout_groups(layout.wavelength)
    assert prepared.windows_used == (0, 1)
    assert np.all(prepared.image[groups == 2] == 1.0)
    assert not np.all(prepared.image[groups == 0] == 1.0)
    with pytest.raises(InvalidSpectrumError, match="needs 2"):
        prepare_image(_spectrum(4990.0, 5130.0, rng), layout.wavelength, by_window=True)
    with pytest.raises(InvalidSpectrumError, match="at most 20%"):  # the old rule, whole image
        prepare_image(spectrum, layout.wavelength)


def test_input_calibration_inverts_the_exponent_and_the_zero_point():
    wave = np.linspace(5000.0, 5400.0, 4001)
    c = 1 + 0.5 * np.sin(wave / 7.0) ** 2
    cal = LineCalibration(wave, c, np.zeros(len(wave), bool), (), zero_point=-0.12)
    layout = small_layout().wavelength
    inverse = InputCalibration.of(cal, layout)
    f = np.clip(0.4 + 0.6 * np.random.default_rng(1).random(layout.shape), 0.01, 1.0)
    observed = f ** inverse.exponent
    assert np.allclose(inverse.apply(observed), f, rtol=1e-10)
    for reported in (0.1, -0.5, -1.5, -2.5):
        base = reported + cal.zero_point * float(zero_point_weight(reported))
        assert inverse.reported_feh(base) == pytest.approx(reported, abs=1e-9)


def test_solve_floor_gives_unit_mean_square_z():
    rng = np.random.default_rng(3)
    err = rng.normal(0, 100, 40)
    sigma = np.full(40, 30.0)
    ref = np.full(40, 20.0)
    s = solve_floor(err, sigma, ref)
    assert np.mean(err ** 2 / (sigma ** 2 + s ** 2 + ref ** 2)) == pytest.approx(1, rel=1e-6)
    assert solve_floor(err * 0.01, sigma, ref) == 0.0


class _Reading:
    def __init__(self, mismatch, in_box, resolution=60000.0):
        self.mismatch, self.in_box, self.resolution = mismatch, in_box, resolution

    @property
    def high_resolution(self):
        return self.resolution >= 20000


def test_mismatch_limit_between_inside_and_outside_the_box():
    found = mismatch_limit([_Reading(0.02, True), _Reading(0.03, True), _Reading(0.12, False),
                            _Reading(0.5, True, resolution=2000)])
    assert found["separable"] and found["limit"] == pytest.approx(math.sqrt(0.03 * 0.12))
    found = mismatch_limit([_Reading(0.02, True), _Reading(0.05, True), _Reading(0.04, False)])
    assert not found["separable"] and found["outside_below"] == 1


def test_the_model_refinement_reads_masked_and_clipped_pixels_from_the_bare_model():
    """With the emulators at hand, each round multiplies the input by B(θ)/C(θ) and takes B(θ)
    where the calibration's mask is set or the input is more than CLIP σ from C(θ)."""
    from photosphere.nn.input_calibration import CLIP

    source = WindowedSource()
    layout = small_layout()
    wave = np.asarray(source.wavelength)
    c = 1 + 0.3 * (np.sin(wave / 3.0) > 0)
    mask = np.zeros(len(wave), bool)
    mask[100:140] = True
    cal = LineCalibration(wave, c, mask, ())
    config = DataConfig(bounds=DATA_BOUNDS, relations=True, snr=50.0)

    class Stored:
        wavelength = layout.wavelength
        medium = "air"

    inverse = InputCalibration.with_models(cal, Stored(), source, config, iterations=1)
    theta = np.array([5500.0, 4.0, -0.3, 3.0])
    b, cal_image = inverse.images(theta, None)
    real = cal_image.copy()
    real[3, 10] = 0.2  # a line the model lacks: clipped
    seen = []

    def run(image):
        seen.append(np.array(image))
        return theta, np.eye(4)

    moved, mu, _ = inverse.read(real.astype(np.float32), run, ("teff", "logg", "feh", "vsini"))
    assert len(seen) == 2 and np.allclose(mu, theta)
    assert inverse.mask.any()
    np.testing.assert_allclose(moved[inverse.mask], b[inverse.mask], rtol=1e-5)
    assert moved[3, 10] == pytest.approx(b[3, 10], rel=1e-5)
    keep = ~inverse.mask
    keep[3, 10] = False
    rms = np.sqrt(np.mean((real - cal_image) ** 2))
    keep &= np.abs(real - cal_image) <= CLIP * rms
    np.testing.assert_allclose(moved[keep], (real * b / cal_image)[keep], rtol=1e-4)


def test_a_network_trained_on_the_calibrated_model_reads_a_star_through_its_leave_one_out():
    """Trained on T (the emulator calibrated with every star), a star whose own model is C₋ₖ
    (the calibration without it) is read as input × T(θ)/C₋ₖ(θ): a star that is exactly
    C₋ₖ(θ) reaches the network as T(θ); nothing is inverted, [Fe/H] is not shifted, and the
    pixels either calibration masks are read from T(θ)."""
    source = WindowedSource()
    layout = small_layout()
    wave = np.asarray(source.wavelength)
    mask_all = np.zeros(len(wave), bool)
    mask_all[100:140] = True
    mask_without = np.zeros(len(wave), bool)
    mask_without[300:320] = True
    trained = LineCalibration(wave, 1 + 0.3 * (np.sin(wave / 3.0) > 0), mask_all, (),
                              zero_point=-0.1)
    without = LineCalibration(wave, 1 + 0.2 * (np.cos(wave / 5.0) > 0), mask_without, (),
                              zero_point=-0.05)
    config = DataConfig(bounds=DATA_BOUNDS, relations=True, snr=50.0)

    class Stored:
        wavelength = layout.wavelength
        medium = "air"

    inverse = InputCalibration.with_models(without, Stored(), source, config, iterations=2,
                                           trained=trained)
    assert np.all(inverse.exponent == 1.0) and inverse.zero_point == 0.0
    expected_mask = InputCalibration.of(without, layout.wavelength).mask | InputCalibration.of(
        trained, layout.wavelength).mask
    assert np.array_equal(inverse.mask, expected_mask) and inverse.mask.sum() > 0
    theta = np.array([5500.0, 4.0, -0.3, 3.0])
    target, star_model = inverse.images(theta, None)
    assert np.max(np.abs(target - star_model)) > 0.01  # the two calibrations differ
    seen = []

    def run(image):
        seen.append(np.array(image))
        return theta, np.eye(4)

    moved, mu, _ = inverse.read(star_model.astype(np.float32), run,
                                ("teff", "logg", "feh", "vsini"))
    assert len(seen) == 3 and np.allclose(mu, theta)  # no zero point: μ as the network said
    np.testing.assert_array_equal(seen[0], star_model.astype(np.float32))  # nothing inverted
    np.testing.assert_allclose(moved, target, rtol=1e-4)
    same = InputCalibration.with_models(trained, Stored(), source, config, iterations=1,
                                        trained=trained)
    real = target + 0.004 * np.sin(np.arange(target.size) / 3.0).reshape(target.shape)
    real[2, 40] -= 0.2  # a line the model lacks
    moved, _, _ = same.read(real.astype(np.float32), run, ("teff", "logg", "feh", "vsini"))
    from photosphere.nn.input_calibration import CLIP

    clipped = np.abs(real - target) > CLIP * np.sqrt(np.mean((real - target) ** 2))
    assert clipped[2, 40] and clipped.sum() == 1
    keep = ~(same.mask | clipped)  # the misfit is kept where the model is trusted
    np.testing.assert_allclose(moved[keep], real[keep], rtol=1e-5)
    np.testing.assert_allclose(moved[~keep], target[~keep], rtol=1e-5)
