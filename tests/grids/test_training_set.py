"""Training sets: seeded scattered labels, window syntheses, resumable build, file round trip."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from _analytic import synthesize

from photosphere.errors import GridError, MissingFileError
from photosphere.grids.build import build_grid
from photosphere.grids.training_set import (
    TRAINING_PRESETS,
    TrainingSet,
    TrainingSetSpec,
    WindowSampling,
    draw_labels,
    kiel_envelope,
)

BOX = {"teff": (5000.0, 7000.0), "logg": (1.0, 5.0), "feh": (-2.0, 0.5), "alpha": (0.0, 0.4),
       "vmic": (0.5, 2.5)}


def small(**changes) -> TrainingSetSpec:
    kw = dict(name="test-ts", windows=((5160.0, 5175.0), (5180.0, 5200.0)), box=BOX,
              n_samples=6, seed=3)
    kw.update(changes)
    return TrainingSetSpec(**kw)


def test_labels_are_seeded_inside_the_box_and_envelope():
    spec = small(n_samples=200)
    labels = spec.labels
    assert labels.shape == (200, 5)
    lo = np.array([BOX[k][0] for k in spec.label_names])
    hi = np.array([BOX[k][1] for k in spec.label_names])
    assert np.all(labels >= lo) and np.all(labels <= hi)
    assert np.all(kiel_envelope(labels[:, 0], labels[:, 1]))
    # the same seed draws the same labels; a longer draw extends a shorter one
    np.testing.assert_array_equal(small(n_samples=200).labels, labels)
    np.testing.assert_array_equal(small(n_samples=50).labels, labels[:50])
    assert not np.array_equal(small(n_samples=200, seed=4).labels, labels)


def test_envelope_removes_hot_supergiants_and_the_cool_gap():
    assert kiel_envelope(5772.0, 4.44) and kiel_envelope(4300.0, 1.5)
    assert not kiel_envelope(7000.0, 1.0)  # above the giant branch
    assert not kiel_envelope(4000.0, 3.5)  # between cool giants and dwarfs
    box_draw = draw_labels(BOX, 300, 1, envelope="box")
    assert not np.all(kiel_envelope(box_draw[:, 0], box_draw[:, 1]))


def test_warp_puts_the_requested_fraction_below_a_knot():
    spec = small(n_samples=512, envelope="box",
                 warps={"feh": ((0.0, 0.5, 1.0), (-2.0, -1.5, 0.5))})
    below = np.mean(spec.labels[:, 2] < -1.5)
    assert below == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("change, message", [
    ({"windows": ((5200.0, 5160.0),)}, "increasing"),
    ({"windows": ((5160.0, 5190.0), (5180.0, 5200.0))}, "overlapping"),
    ({"box": {k: v for k, v in BOX.items() if k != "vmic"}}, "exactly the labels"),
    ({"n_samples": 0}, "positive integer"),
    ({"envelope": "cube"}, "envelope"),
    ({"warps": {"feh": ((0.0, 1.0), (-3.0, 0.5))}}, "warp of feh"),
])
def test_bad_specs_are_refused(change, message):
    with pytest.raises(GridError, match=message):
        small(**change)


def test_spec_json_round_trip_keeps_the_labels():
    spec = TRAINING_PRESETS["optical"]()
    again = TrainingSetSpec.from_json(spec.to_json())
    assert again == spec
    np.testing.assert_array_equal(again.labels[:20], spec.labels[:20])
    assert spec.n_nodes == 768 and spec.labels[:, 0].min() >= 3800.0


def test_window_sampling_is_log_uniform_inside_each_window():
    sampling = WindowSampling.from_spec(small())
    for k, (lo, hi) in enumerate(small().windows):
        w = sampling.wavelength[sampling.window == k]
        assert w[0] == pytest.approx(lo) and w[-1] >= hi
        v = np.diff(np.log(w)) * 299792.458
        np.testing.assert_allclose(v, 1.0, rtol=1e-6)
    assert set(sampling.window[sampling.continuum_index]) == {0, 1}


def test_build_writes_a_training_set_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "ts.h5"
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("PHOTOSPHERE_TEST_CALL_LOG", str(log))
    spec = small()
    report = build_grid(spec, out, synthesizer=synthesize, scheduler="synchronous",
                        progress=False)
    assert report.n_nodes == 6 and report.n_computed == 6
    assert len(log.read_text().splitlines()) == 6 * 2  # one synthesis per window
    ts = TrainingSet(out)
    assert ts.flux.shape == (6, len(ts.wavelength)) and ts.labels.shape == (6, 5)
    np.testing.assert_allclose(ts.labels, spec.labels)
    # the stored flux is the synthesizer's, rebinned: compare one star at a line-free pixel
    # and in the core of the 5172.7 Å line
    teff, logg, feh, alpha, vmic = spec.labels[0]
    direct = synthesize(teff, logg, feh, alpha, vmic, wavelength_min=5159.0,
                        wavelength_max=5176.0)
    pick = np.flatnonzero(ts.window == 0)
    expect = np.interp(ts.wavelength[pick], direct.wavelength, direct.flux)
    np.testing.assert_allclose(ts.flux[0, pick], expect, atol=0.02)
    assert ts.flux[0, pick].min() < 0.95  # the line is there, not a flat continuum
    info = ts.info()
    assert info["n_spectra"] == 6 and info["windows"] == [[5160.0, 5175.0], [5180.0, 5200.0]]
    # a rebuild over a journal with all nodes done synthesises nothing
    log.write_text("")
    with pytest.raises(GridError, match="already exists"):
        build_grid(spec, out, synthesizer=synthesize, scheduler="synchronous", progress=False)


def _killed_build(spec, out, n_done):
    """Build ``spec`` and interrupt it (Ctrl-C) once ``n_done`` spectra are synthesised."""
    calls = {"n": 0}

    def dies_after(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_done * len(spec.windows):  # one synthesis per window
            raise KeyboardInterrupt
        return synthesize(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        build_grid(spec, out, synthesizer=dies_after, scheduler="synchronous", progress=False)


def test_killed_build_keeps_finished_spectra(tmp_path, monkeypatch):
    out = tmp_path / "ts.h5"
    _killed_build(small(), out, n_done=3)
    assert not out.exists()
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("PHOTOSPHERE_TEST_CALL_LOG", str(log))
    report = build_grid(small(), out, synthesizer=synthesize, scheduler="synchronous",
                        progress=False)
    assert report.n_reused == 3 and report.n_computed == 3
    assert len(log.read_text().splitlines()) == 3 * 2
    assert TrainingSet(out).flux.shape[0] == 6


def test_missing_atmospheres_are_kept_out(tmp_path):
    out = tmp_path / "ts.h5"
    box = dict(BOX, teff=(6700.0, 7000.0), logg=(0.5, 5.0))
    spec = small(box=box, envelope="box", n_samples=12)
    build_grid(spec, out, synthesizer=synthesize, scheduler="synchronous", progress=False)
    ts = TrainingSet(out)
    hole = (spec.labels[:, 0] > 6600) & (spec.labels[:, 1] < 1.5)
    assert hole.any() and ts.n_missing == hole.sum()
    assert len(ts.labels) == 12 - hole.sum()


def test_reader_errors(tmp_path):
    with pytest.raises(MissingFileError, match="grid build --preset optical"):
        TrainingSet(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(GridError, match="cannot be read"):
        TrainingSet(bad)
    out = tmp_path / "ts.h5"
    build_grid(small(), out, synthesizer=synthesize, scheduler="synchronous", progress=False)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(GridError, match="newer than"):
        TrainingSet(out)


def test_grid_info_describes_a_training_set(tmp_path, capsys):
    import json

    from photosphere.cli import main

    out = tmp_path / "ts.h5"
    build_grid(small(), out, synthesizer=synthesize, scheduler="synchronous", progress=False)
    assert main(["grid", "info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "training-set" and doc["n_spectra"] == 6
    assert main(["grid", "info", str(out)]) == 0
    assert "5160-5175, 5180-5200 Å" in capsys.readouterr().out


def test_molecules_are_asked_of_the_synthesizer_only_when_the_spec_says_so(tmp_path):
    seen = []

    def recording(*args, molecules=False, **kwargs):
        seen.append(molecules)
        return synthesize(*args, **kwargs)

    build_grid(small(n_samples=2, molecules=True), tmp_path / "a.h5", synthesizer=recording,
               scheduler="synchronous", progress=False)
    assert seen == [True] * 4
    seen.clear()
    build_grid(small(n_samples=2), tmp_path / "b.h5", synthesizer=recording,
               scheduler="synchronous", progress=False)
    assert seen == [False] * 4
    assert TRAINING_PRESETS["optical"]().molecules


def test_an_emulator_trained_on_a_training_set_predicts_held_out_spectra(tmp_path):
    import torch

    from photosphere.grids.emulator import PCAGPEmulator

    box = dict(BOX, alpha=(0.0, 0.0), vmic=(1.0, 1.0), logg=(3.5, 5.0), teff=(5200.0, 6200.0),
               feh=(-1.0, 0.3))
    spec = small(box=box, n_samples=60, envelope="box")
    out = tmp_path / "ts.h5"
    build_grid(spec, out, synthesizer=synthesize, scheduler="synchronous", progress=False)
    emu = PCAGPEmulator(max_components=8, n_iter=60).fit(out)
    assert emu.bounds["teff"] == (5200.0, 6200.0)
    np.testing.assert_array_equal(emu.wavelength, TrainingSet(out).wavelength)
    truth = np.array([5650.0, 4.3, -0.4, 0.0, 1.0])
    held_out = np.concatenate([
        synthesize(*truth, wavelength_min=lo - 1, wavelength_max=hi + 1).flux for lo, hi in
        spec.windows])
    held_wave = np.concatenate([
        synthesize(*truth, wavelength_min=lo - 1, wavelength_max=hi + 1).wavelength
        for lo, hi in spec.windows])
    expect = np.interp(emu.wavelength, held_wave, held_out)
    pred = emu.predict(torch.as_tensor(truth)).numpy()
    assert np.max(np.abs(pred - expect)) < 0.02


def test_read_built_gives_the_journal_so_far_then_the_finished_file(tmp_path, monkeypatch):
    from photosphere.grids import training_set
    from photosphere.grids.training_set import read_built

    monkeypatch.setitem(training_set.TRAINING_PRESETS, "test-ts",
                        lambda: small(n_samples=12))
    out = tmp_path / "ts.h5"
    _killed_build(small(n_samples=12), out, n_done=6)
    labels, flux, wave, spec, planned = read_built("test-ts", out)
    assert planned == 12 and len(labels) == 6 and flux.shape == (6, len(wave))
    np.testing.assert_allclose(labels, spec.labels[:6])
    build_grid(small(n_samples=12), out, synthesizer=synthesize, scheduler="synchronous",
               progress=False)
    labels, flux, wave, spec, planned = read_built("test-ts", out)
    assert planned == 12 and len(labels) == 12
    with pytest.raises(GridError, match="no training-set preset"):
        read_built("nonsense", out)
    with pytest.raises(GridError, match="build it with"):
        read_built("test-ts", tmp_path / "never.h5")
