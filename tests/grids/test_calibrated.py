"""Line data calibrated on stars of known labels (models.calibrated, infer.line_calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModel, simulate
from photosphere.errors import CheckpointError, ModelError
from photosphere.grids.calibrated import (
    CalibratedModel,
    LineCalibration,
    StarResiduals,
    has_calibration,
    read_calibration,
    same_star,
    star_aliases,
    write_calibration,
)
from photosphere.infer.line_calibration import calibrate_lines, star_residuals


class TooStrong(AnalyticModel):
    """The analytic model with its first lines' optical depths up to 15 % too large: a line list
    whose log gf are 0.06 dex too high for a few lines (what the calibration must find; lines
    much further off are clipped, and masked: see the missing-lines test)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        near = torch.zeros(len(self.wavelength), dtype=torch.float64)
        for c in self.centers[:10]:
            near = torch.maximum(near, torch.exp(-0.5 * (torch.as_tensor(self.wavelength) - c)
                                                 ** 2 / 0.15 ** 2))
        self.exponent = 1.0 + 0.15 * near  # up to 1.15 at those lines' centres

    def predict(self, labels):
        return super().predict(labels).clamp(min=1e-3) ** self.exponent


def _stars(truth_model, n=3, seed=0, snr=300.0):
    rng = np.random.default_rng(seed)
    wave = np.linspace(5005.0, 5095.0, 6000)
    out = []
    for i in range(n):
        labels = {"teff": 5000.0 + 800 * rng.random(), "logg": 3.5 + rng.random(),
                  "feh": -0.5 + 0.6 * rng.random()}
        spec, _ = simulate(truth_model, {**labels, "rv": 0.0}, wave, snr=snr, seed=seed + i)
        out.append((f"star{i}", spec, labels, {"continuum_degree": 1}))
    return out


def test_exponents_are_recovered_where_the_model_errs_and_one_elsewhere():
    truth = AnalyticModel()
    wrong = TooStrong()
    cal = calibrate_lines(wrong, _stars(truth, n=8, snr=40.0))
    # where the model's optical depth is 15 % too large, c moves from 1 towards 1/1.15 (the
    # prior c = 1 weighs as much as one star at S/N 100); elsewhere c stays 1
    strong = wrong.exponent.numpy() > 1.13
    line = (1 - truth.predict(torch.tensor([5500.0, 4.0, 0.0])).numpy()) > 0.1
    assert 1 / 1.15 - 0.02 < np.median(cal.exponent[strong & line]) < 0.93
    untouched = (wrong.exponent.numpy() < 1.001) & line
    assert np.median(np.abs(cal.exponent[untouched] - 1)) < 0.03
    # the corrected model is closer to the truth at new labels
    x = torch.tensor([5600.0, 4.2, -0.2])
    before = np.abs(wrong.predict(x).numpy() - truth.predict(x).numpy())[strong].mean()
    after = np.abs(CalibratedModel(wrong, cal).predict(x).numpy()
                   - truth.predict(x).numpy())[strong].mean()
    assert after < 0.6 * before


def test_lines_missing_from_the_model_get_masked():
    truth = AnalyticModel()
    missing = AnalyticModel()
    missing.depth = missing.depth.clone()
    missing.depth[:3] = 0.0  # three lines absent from the "line list"
    cal = calibrate_lines(missing, _stars(truth))
    w = torch.as_tensor(truth.wavelength)
    for c in truth.centers[:3]:
        at = int(torch.argmin(torch.abs(w - c)))
        deep = (1 - truth.predict(torch.tensor([5400.0, 4.0, -0.2])).numpy()[at]) > 0.1
        if deep:
            assert cal.mask[at]
    assert cal.mask.mean() < 0.2


def test_leave_one_out_equals_a_calibration_without_that_star():
    rng = np.random.default_rng(3)
    wave = np.linspace(5000, 5010, 50)
    stars = [StarResiduals(f"s{i}", 1 - rng.random(50) * 0.5, 1 - rng.random(50) * 0.5,
                           np.full(50, 1e4), {"teff": 5000.0}) for i in range(3)]
    full = LineCalibration.from_stars(wave, stars)
    loo = full.without("s1")
    direct = LineCalibration.from_stars(wave, [stars[0], stars[2]])
    np.testing.assert_allclose(loo.exponent, direct.exponent)
    np.testing.assert_array_equal(loo.mask, direct.mask)
    assert full.without("not a star") is full
    assert loo.star_names == ("s0", "s2")


def test_stars_are_told_apart_by_name_not_by_file():
    """One star in several spectra (the Sun from HARPS and UVES, Aldebaran at high and low
    resolution) is one star: leaving it out removes every spectrum of it."""
    assert star_aliases("alf Tau / Aldebaran (K5 III)") == {"alftau", "aldebaran"}
    assert star_aliases("HD009826 (MILES 0063)") == {"hd9826"}
    assert same_star("Sun (light reflected by Ganymede)", "Sun")
    assert same_star("alf Tau (MILES 0157)", "alf Tau / Aldebaran (K5 III)")
    assert not same_star("HD 22072 (G7 IV)", "HD 220009 (MILES 0874)")
    assert not same_star("Gl 15 B (MILES 0012)", "Gl 15 A")
    wave = np.linspace(5000, 5010, 50)
    rng = np.random.default_rng(4)
    names = ["Sun (light reflected by Ganymede)", "Procyon (F5 IV-V)", "Sun"]
    stars = [StarResiduals(n, 1 - rng.random(50) * 0.5, 1 - rng.random(50) * 0.5,
                           np.full(50, 1e4), {"teff": 5000.0}) for n in names]
    loo = LineCalibration.from_stars(wave, stars).without("Sun")
    assert loo.star_names == ("Procyon (F5 IV-V)",)


def test_the_calibration_round_trips_through_a_model_file(tmp_path):
    import h5py

    path = tmp_path / "emulator.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something"
    assert not has_calibration(path)
    wave = np.linspace(5000, 5010, 20)
    star = StarResiduals("a", np.full(20, 0.9), np.full(20, 0.8), np.full(20, 1e4),
                         {"teff": 5777.0})
    cal = LineCalibration.from_stars(wave, [star])
    write_calibration(path, cal)
    write_calibration(path, cal)  # replacing it works
    back = read_calibration(path)
    np.testing.assert_allclose(back.exponent, cal.exponent)
    assert back.star_names == ("a",) and back.stars[0].labels == {"teff": 5777.0}
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "something"  # the rest of the file is kept
    with pytest.raises(CheckpointError, match="no line calibration"):
        other = tmp_path / "other.h5"
        with h5py.File(other, "w"):
            pass
        read_calibration(other)


def test_a_calibration_for_another_grid_is_refused():
    model = AnalyticModel()
    cal = LineCalibration.from_stars(np.linspace(4000, 4100, 10), [])
    with pytest.raises(ModelError, match="another wavelength grid"):
        CalibratedModel(model, cal)


def test_the_model_mask_leaves_those_pixels_out_of_the_fit():
    from photosphere.infer.chain import ObservationChain

    base = AnalyticModel()
    n = len(base.wavelength)
    mask = np.zeros(n, bool)
    mask[n // 2: n // 2 + 200] = True
    model = CalibratedModel(base, LineCalibration(base.wavelength, np.ones(n), mask, ()))
    spec, _ = simulate(base, {"teff": 5500.0, "logg": 4.0, "feh": 0.0, "rv": 0.0},
                    np.linspace(5010, 5090, 4000))
    plain = ObservationChain(base, spec, rv_bounds=(-5.0, 5.0))
    masked = ObservationChain(model, spec, rv_bounds=(-5.0, 5.0))
    lo, hi = base.wavelength[n // 2], base.wavelength[n // 2 + 199]
    inside = (spec.wavelength > lo + 0.05) & (spec.wavelength < hi - 0.05)
    assert masked.n_pixels <= plain.n_pixels - inside.sum()
    assert masked.n_pixels >= plain.n_pixels - inside.sum() - 10


def test_star_residuals_hold_the_reference_labels():
    truth = AnalyticModel()
    name, spec, labels, settings = _stars(truth, n=1)[0]
    res = star_residuals(truth, spec, labels, name, **settings)
    for k in ("teff", "logg", "feh"):
        assert res.labels[k] == pytest.approx(labels[k])
    ok = res.weight > 0
    assert ok.mean() > 0.8
    assert np.median(np.abs(res.data[ok] - res.model[ok])) < 0.005


def _offset_calibration(wave):
    rng = np.random.default_rng(5)
    names = ["Sun (light reflected by Ganymede)", "Procyon (F5 IV-V)", "Sun", "Arcturus",
             "CD-38 245"]
    fehs = [0.0, 0.01, 0.0, -0.52, -4.19]
    stars = [StarResiduals(n, 1 - rng.random(len(wave)) * 0.5, 1 - rng.random(len(wave)) * 0.5,
                           np.full(len(wave), 1e4), {"teff": 5000.0, "feh": f})
             for n, f in zip(names, fehs, strict=True)]
    # offsets[k, j]: star j fitted without j and without k (rows 0 and 2 are the Sun twice);
    # the ultra metal-poor giant's own offsets (last column) never enter the zero point
    offsets = np.array([[-0.10, -0.20, -0.12, 0.30, 0.9],
                        [-0.11, -0.18, -0.13, 0.31, 0.9],
                        [-0.10, -0.20, -0.12, 0.30, 0.9],
                        [-0.09, -0.22, -0.14, 0.28, 0.9],
                        [-0.08, -0.21, -0.15, 0.29, 0.9]])
    return LineCalibration.from_stars(wave, stars).with_offsets(offsets)


def test_the_feh_zero_point_is_the_median_offset_and_left_out_with_the_star():
    wave = np.linspace(5000, 5010, 50)
    cal = _offset_calibration(wave)
    assert cal.zero_point == pytest.approx(np.median([-0.10, -0.18, -0.12, 0.28]))
    # judging Procyon: the others' offsets measured without them and without Procyon
    assert cal.without("Procyon").zero_point == pytest.approx(np.median([-0.11, -0.13, 0.31]))
    # judging the Sun: both its spectra leave; Procyon's and Arcturus's offsets without the Sun
    assert cal.without("Sun").zero_point == pytest.approx(np.median([-0.20, 0.30]))
    assert cal.without("Sun").star_names == ("Procyon (F5 IV-V)", "Arcturus", "CD-38 245")
    assert cal.without("CD-38 245").zero_point == pytest.approx(
        np.median([-0.08, -0.21, -0.15, 0.29]))
    nan = cal.with_offsets(np.full((5, 5), np.nan))
    assert nan.zero_point == 0.0  # every fit failed: no zero point
    with pytest.raises(ModelError, match="one row and column per calibration star"):
        cal.with_offsets(np.zeros((3, 3)))


def test_the_calibrated_model_reports_feh_on_the_stars_scale(tmp_path):
    """The base model is evaluated at [Fe/H] + zero point, and the bounds move with it: a
    star the base fits at [Fe/H] = -0.1 is reported at 0 when the stars say so."""
    base = AnalyticModel()
    n = len(base.wavelength)
    stars = [StarResiduals(name, np.full(n, 0.9), np.full(n, 0.9), np.full(n, 1e4),
                           {"teff": 5000.0, "feh": 0.0}) for name in ("a", "b")]
    cal = LineCalibration.from_stars(base.wavelength, stars).with_offsets(
        np.array([[-0.1, -0.1], [-0.1, -0.1]]))
    model = CalibratedModel(base, cal)
    # in full above [Fe/H] -1, half-way at -1.5, none at -2 and below
    for feh, base_feh in ((0.0, -0.1), (-1.0, -1.1), (-1.5, -1.55), (-2.0, -2.0), (-3.0, -3.0)):
        x = torch.tensor([[5500.0, 4.0, feh]], dtype=torch.float64)
        shifted = torch.tensor([[5500.0, 4.0, base_feh]], dtype=torch.float64)
        np.testing.assert_allclose(
            model.predict(x).numpy(),
            base.predict(shifted).clamp(min=1e-3).numpy() ** cal.exponent, rtol=1e-12)
    lo, hi = base.bounds["feh"]  # the analytic model's -1 .. +0.5
    assert model.bounds["feh"] == pytest.approx((lo + 0.1, hi + 0.1))
    x = torch.tensor([[5500.0, 4.0, model.bounds["feh"][0]]], dtype=torch.float64)
    np.testing.assert_allclose(model.predict(x).numpy(), base.predict(
        torch.tensor([[5500.0, 4.0, lo]], dtype=torch.float64)).clamp(min=1e-3).numpy()
        ** cal.exponent, rtol=1e-9)
    path = tmp_path / "model.h5"
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something"
    write_calibration(path, cal)
    back = read_calibration(path)
    np.testing.assert_allclose(back.offsets, cal.offsets)
    assert back.zero_point == pytest.approx(-0.1)
    assert CalibratedModel(base, back.without("a")).zero_point == pytest.approx(-0.1)


def test_the_offsets_are_measured_once_per_pair_and_resume_from_a_journal(monkeypatch):
    """Each star is fitted without itself and without each other star (not again for another
    spectrum of its own star); finished fits are not repeated; a failed fit is NaN."""
    from photosphere.infer import line_calibration as lc

    wave = np.linspace(5000, 5010, 50)
    cal = _offset_calibration(wave)
    names = cal.star_names
    pairs = lc.offset_pairs(names)
    assert (0, 2) not in pairs and (2, 0) not in pairs  # the Sun's two spectra
    assert (2, 1) not in pairs and (0, 1) in pairs  # leaving out the Sun: fitted once
    assert len(pairs) == 5 + 5 * 3  # the diagonal; each spectrum without each other star
    calls = []

    def fake(model_path, star_name, left_out, spectrum_path, reference_feh, settings):
        calls.append(left_out)
        if star_name == "Arcturus" and "Procyon (F5 IV-V)" in left_out:
            return float("nan")
        return -0.1 * len(left_out) - reference_feh

    monkeypatch.setattr(lc, "offset_of", fake)
    jobs = [(f"{n}.fits", 0.5, {}) for n in names]
    saved = []
    offsets = lc.measure_offsets("model.h5", cal, jobs, journal=saved.append,
                                 done={"0,0": -0.7})
    assert len(calls) == len(pairs) - 1 and ("Sun (light reflected by Ganymede)",) not in calls
    assert offsets[0, 0] == -0.7
    assert offsets[1, 1] == pytest.approx(-0.6) and offsets[0, 1] == pytest.approx(-0.7)
    assert offsets[2, 0] == offsets[0, 0] and offsets[0, 2] == offsets[2, 2]
    assert offsets[2, 1] == offsets[0, 1] and offsets[2, 3] == offsets[0, 3]
    assert np.isnan(offsets[1, 3])
    assert len(saved[-1]) == len(pairs)
    with pytest.raises(ValueError, match="jobs for"):
        lc.measure_offsets("model.h5", cal, jobs[:2])
