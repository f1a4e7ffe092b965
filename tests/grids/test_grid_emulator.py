"""PCA+GP emulator: reproduces nodes, honest leave-one-out error, variance, HDF5 round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _analytic import build_small

from photosphere.errors import CheckpointError, ModelError, OutOfGridError
from photosphere.grids.emulator import PCAGPEmulator, train_emulator
from photosphere.grids.store import GridStore


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("emu") / "small.h5")


@pytest.fixture(scope="module")
def emulator(grid_path):
    torch.manual_seed(0)
    return PCAGPEmulator(n_iter=60).fit(grid_path)


def test_reproduces_training_nodes_with_small_variance(grid_path, emulator):
    with GridStore.open(grid_path) as store:
        node = (1, 1, 0)
        lab = store.node_labels(node)
        x = torch.tensor([lab["teff"], lab["logg"], lab["feh"]])
        pred = emulator.predict(x).numpy()
        truth = store.flux(node)
    assert pred.shape == truth.shape
    assert np.max(np.abs(pred - truth)) < 5e-3
    var_node = emulator.predict_variance(x)
    var_mid = emulator.predict_variance(torch.tensor([5750.0, 2.5, -0.5]))
    assert torch.all(var_node >= 0) and var_mid.sum() > var_node.sum()


def test_error_templates_are_the_low_rank_form_of_the_gp_variance(emulator):
    x = torch.tensor([[5750.0, 2.5, -0.5], [6000.0, 2.0, 0.0]])
    t = emulator.predict_error_templates(x)
    assert t.shape == (2, emulator.n_components_, emulator.wavelength.size)
    # diag(T Tᵀ) = predict_variance less its per-pixel basis-error term
    basis = emulator.truncation_variance_ * emulator.sigma_scale_ ** 2
    np.testing.assert_allclose((t ** 2).sum(1).numpy(),
                               emulator.predict_variance(x).numpy() - basis, rtol=1e-8,
                               atol=1e-14)
    assert (t[0] ** 2).sum() > (t[1] ** 2).sum()  # larger between nodes than on one


def test_leave_one_out_error_is_reported_and_consistent(grid_path, emulator):
    s = emulator.summary()
    assert emulator.loo_rms_error_.shape == emulator.wavelength.shape
    assert 0 <= s["loo_abs_error_median"] <= s["loo_abs_error_p95"] and s["loo_rms_error_max"] > 0
    # recompute one node's leave-one-out prediction by refitting the GPs without it
    with GridStore.open(grid_path) as store:
        present = np.flatnonzero(store.present.ravel())
        i = 5
        x_all = emulator.train_labels_
        w_all = emulator.train_weights_
        keep = np.arange(len(present)) != i
        from photosphere.grids.emulator import _kernel
        la, ll = torch.tensor(emulator.log_amplitude_), torch.tensor(emulator.log_length_)
        noise = torch.exp(2 * torch.tensor(emulator.log_noise_))
        xt = torch.tensor(x_all[keep])
        K = _kernel(xt, xt, la, ll) + noise[:, None, None] * torch.eye(int(keep.sum()),
                                                                        dtype=torch.float64)
        ks = _kernel(torch.tensor(x_all[i:i + 1]), xt, la, ll)
        w_loo = (ks @ torch.linalg.solve(K, torch.tensor(w_all[keep].T)[..., None]))[:, 0, 0]
        closed = emulator._alpha / torch.diagonal(torch.cholesky_inverse(emulator._L), dim1=-2,
                                                  dim2=-1)
        np.testing.assert_allclose(w_loo.numpy(), w_all[i] - closed[:, i].numpy(), rtol=1e-5,
                                   atol=1e-8)


def test_batched_differentiable_and_bounded(emulator):
    x = torch.tensor([[5750.0, 2.5, -0.5], [6250.0, 1.5, -0.2]], requires_grad=True)
    out = emulator.predict(x.reshape(1, 2, 3))
    assert out.shape == (1, 2, emulator.wavelength.size)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(OutOfGridError, match=r"teff=2500 is outside the grid \(5500-7000 K\)"):
        emulator.predict(torch.tensor([2500.0, 2.0, 0.0]))
    with pytest.raises(ModelError, match="not trained"):
        PCAGPEmulator().predict(torch.zeros(3))


def test_save_load_round_trip(tmp_path, grid_path, emulator):
    path = emulator.save(tmp_path / "emu.h5")
    back = PCAGPEmulator.load(path)
    x = torch.tensor([[5750.0, 2.5, -0.5]])
    np.testing.assert_allclose(back.predict(x).numpy(), emulator.predict(x).numpy(), atol=1e-10)
    np.testing.assert_allclose(back.predict_variance(x).numpy(),
                               emulator.predict_variance(x).numpy(), rtol=1e-6, atol=1e-14)
    assert back.summary() == emulator.summary()
    (tmp_path / "bad.h5").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="corrupt"):
        PCAGPEmulator.load(tmp_path / "bad.h5")
    trained = train_emulator(grid_path, tmp_path / "t.h5", n_components=3, n_iter=5)
    assert trained.n_components_ == 3 and (tmp_path / "t.h5").is_file()


def test_loads_of_one_file_share_its_conditioned_gps_until_the_file_changes(tmp_path, grid_path,
                                                                           emulator):
    """The file holds the GPs' weights, so a load needs no Cholesky factor until a variance is
    asked for; a second load of the same file shares the first's tensors (read only: the same
    predictions); a file written again at the same path is read afresh; a file without the
    weights (written before they were stored) makes them at load, to the same numbers."""
    import h5py

    from photosphere.grids.emulator import GP_WEIGHTS

    path = emulator.save(tmp_path / "emu.h5")
    first, second = PCAGPEmulator.load(path), PCAGPEmulator.load(path)
    assert first._L is None and second._alpha is first._alpha
    x = torch.tensor([[5750.0, 2.5, -0.5]])
    np.testing.assert_array_equal(first.predict(x).numpy(), emulator.predict(x).numpy())
    np.testing.assert_array_equal(second.predict_variance(x).numpy(),
                                  emulator.predict_variance(x).numpy())
    other = PCAGPEmulator(n_components=3, n_iter=5).fit(grid_path)
    other.save(path)
    third = PCAGPEmulator.load(path)
    assert third._alpha is not first._alpha and third.n_components_ == 3
    np.testing.assert_array_equal(third.predict(x).numpy(), other.predict(x).numpy())
    old = emulator.save(tmp_path / "old.h5")
    with h5py.File(old, "a") as f:
        del f[GP_WEIGHTS]
    back = PCAGPEmulator.load(old)
    assert back._L is not None
    np.testing.assert_allclose(back.predict(x).numpy(), emulator.predict(x).numpy(), atol=1e-12)


def test_basis_leave_one_out_matches_an_explicit_svd(rng):
    resid = rng.normal(size=(12, 50))
    resid -= resid.mean(axis=0)
    em = PCAGPEmulator(n_basis_nodes=3, seed=1)
    out, sampled = em._basis_leave_one_out(resid @ resid.T, resid, k=4)
    assert out.shape == (3, 50)
    for row, i in enumerate(sampled):
        others = np.delete(resid, i, axis=0)
        vt = np.linalg.svd(others, full_matrices=False)[2][:4]
        expected = resid[i] - (vt @ resid[i]) @ vt
        np.testing.assert_allclose(out[row], expected, atol=1e-10)


@pytest.mark.slow
def test_sigma_is_calibrated_on_held_out_nodes_of_the_embedded_grid():
    """Nodes of the real embedded grid held out of training (interior, odd index along every
    axis, neighbours kept): the calibrated σ covers about 68 % / 95 % of their pixel errors."""
    from photosphere.grids.presets import require_default_grid

    with GridStore.open(require_default_grid()) as store:
        names = store.label_names
        pix = (store.wavelength > 5160.0) & (store.wavelength < 5200.0)
        sub = {"teff": store.axes["teff"][4:11], "logg": store.axes["logg"][4:9],
               "feh": store.axes["feh"][1:6]}  # 5000-6500 K, 3-5, -1.5..+0.5: 175 nodes
        grids = np.meshgrid(*(sub[n] for n in names), indexing="ij")
        labels = np.stack([g.ravel() for g in grids], axis=1)
        idx = np.stack(np.meshgrid(*(np.arange(len(sub[n])) for n in names), indexing="ij"),
                       -1).reshape(-1, len(names))
        flat = [store.node_index(tuple(int(np.argmin(np.abs(store.axes[n] - v)))
                                       for n, v in zip(names, row, strict=True)))
                for row in labels]
        flux = store.flux_all()[flat][:, pix].astype(np.float64)
        wave = store.wavelength[pix]
    shape = np.array([len(sub[n]) for n in names])
    held = np.all((idx % 2 == 1) & (idx < shape - 1), axis=1)
    em = PCAGPEmulator(n_iter=60).fit_arrays(
        labels[~held], flux[~held], label_names=names, wavelength=wave,
        bounds={n: (float(sub[n][0]), float(sub[n][-1])) for n in names})
    with torch.no_grad():
        pred = em.predict(torch.as_tensor(labels[held])).numpy()
        sigma = em.predict_variance(torch.as_tensor(labels[held])).sqrt().numpy()
    z = np.abs(pred - flux[held]) / sigma
    raw = z * em.sigma_scale_  # the same errors against the uncalibrated σ
    print(f"held out {held.sum()}, scale {em.sigma_scale_:.3f}: {np.mean(z < 1):.3f} / "
          f"{np.mean(z < 2):.3f}; uncalibrated {np.mean(raw < 1):.3f} / {np.mean(raw < 2):.3f}")
    # measured: 72.4 % / 94.7 %, uncalibrated 86.9 % / 98.9 % (Gaussian: 68.3 % / 95.4 %)
    assert held.sum() == 12 and em.sigma_scale_ > 0
    assert 0.60 < np.mean(z < 1) < 0.80
    assert 0.90 < np.mean(z < 2) < 0.98
    assert abs(np.mean(z < 1) - 0.683) < abs(np.mean(raw < 1) - 0.683)


FIVE = ("teff", "logg", "feh", "alpha", "vmic")
FIVE_BOUNDS = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0), "feh": (-2.0, 0.5),
               "alpha": (0.0, 0.4), "vmic": (0.5, 2.5)}


def _five_label_set(n: int = 160):
    """Scattered labels (Sobol) in the five labels of the optical training set and smooth
    one-line spectra of them: (labels (n, 5), flux (n, 60), unit labels (n, 5))."""
    from scipy.stats import qmc

    lo = np.array([FIVE_BOUNDS[k][0] for k in FIVE])
    hi = np.array([FIVE_BOUNDS[k][1] for k in FIVE])
    unit = qmc.Sobol(5, scramble=True, seed=4).random_base2(m=8)[:n]
    pix = np.linspace(0, 1, 60)
    depth = (0.3 + 0.3 * unit[:, :1] - 0.2 * unit[:, 1:2] + 0.25 * unit[:, 2:3]
             + 0.1 * unit[:, 3:4] + 0.05 * unit[:, 4:5])
    flux = 1 - depth * np.exp(-0.5 * ((pix - 0.5) / (0.05 + 0.05 * unit[:, 4:5])) ** 2)
    return lo + unit * (hi - lo), flux, unit


def test_scattered_labels_in_five_dimensions_are_emulated():
    """A training set's labels are scattered (every value unique): the GP must start from the
    typical distance between the points, not from the ~1/n gap between unique values, or it
    predicts the mean spectrum everywhere (a 10 % error on the optical training set)."""
    labels, flux, _ = _five_label_set()
    emu = PCAGPEmulator(max_components=6, n_iter=60).fit_arrays(
        labels[:140], flux[:140], label_names=FIVE, wavelength=5000 + np.linspace(0, 1, 60),
        bounds=FIVE_BOUNDS)
    error = emu.predict(torch.as_tensor(labels[140:])).numpy() - flux[140:]
    baseline = flux[:140].mean(0) - flux[140:]
    assert np.sqrt(np.mean(error**2)) < 0.1 * np.sqrt(np.mean(baseline**2))


def _saved_five_label_emulator(tmp_path):
    """A small five-label emulator (60 px) and the file it is saved in."""
    labels, flux, _ = _five_label_set(80)
    emu = PCAGPEmulator(max_components=4, n_iter=20).fit_arrays(
        labels, flux, label_names=FIVE, wavelength=5000 + np.linspace(0, 1, 60),
        bounds=FIVE_BOUNDS)
    return emu, emu.save(tmp_path / "emu.h5")


def test_a_calibration_made_with_tied_labels_ties_them_when_loaded(tmp_path, capsys):
    """A calibration whose star fits tied [α/Fe] to [Fe/H] gives, loaded, a model fitted in
    Teff, log g, [Fe/H] and vmic with [α/Fe] from the relation; `grid info` says so."""
    from photosphere import cli
    from photosphere.grids.calibrated import LineCalibration, write_calibration
    from photosphere.grids.load import load_emulator
    from photosphere.grids.tied_labels import TiedLabels, alpha_trend

    emu, path = _saved_five_label_emulator(tmp_path)
    n = len(emu.wavelength)
    write_calibration(path, LineCalibration(emu.wavelength, np.full(n, 1.2), np.zeros(n, bool),
                                            (), ("alpha",)))
    model = load_emulator(path)
    assert isinstance(model, TiedLabels)
    assert model.label_names == ("teff", "logg", "feh", "vmic")
    assert model.calibration.tied == ("alpha",)
    x = torch.tensor([5500.0, 4.0, -0.5, 1.2], dtype=torch.float64)
    full = torch.tensor([5500.0, 4.0, -0.5, float(alpha_trend(-0.5)), 1.2], dtype=torch.float64)
    np.testing.assert_allclose(model.predict(x).numpy(),
                               emu.predict(full).clamp(min=1e-3).numpy() ** 1.2, rtol=1e-10)
    assert not hasattr(model, "predict_error_templates")
    assert cli.main(["grid", "info", str(path)]) == 0
    assert "tied labels:  alpha" in capsys.readouterr().out


def test_labels_held_only_in_the_calibration_stay_free_when_loaded(tmp_path, capsys):
    """`calibrate-stars --hold vmic`: the stars' fits took vmic from its relation, but the
    calibrated model is fitted in all five labels; the record survives the file and a
    leave-one-out; `grid info` says so."""
    from photosphere import cli
    from photosphere.grids.calibrated import (
        CalibratedModel,
        LineCalibration,
        StarResiduals,
        write_calibration,
    )
    from photosphere.grids.load import load_emulator

    emu, path = _saved_five_label_emulator(tmp_path)
    n = len(emu.wavelength)
    stars = [StarResiduals(name, np.full(n, 0.9), np.full(n, 0.8), np.full(n, 1e4),
                           {"teff": 5777.0}) for name in ("Sun", "Procyon")]
    write_calibration(path, LineCalibration.from_stars(emu.wavelength, stars, held=("vmic",)))
    model = load_emulator(path)
    assert isinstance(model, CalibratedModel)
    assert model.label_names == FIVE
    assert model.calibration.held == ("vmic",) and model.calibration.tied == ()
    assert model.without("Sun").calibration.held == ("vmic",)
    assert model.without("Sun").calibration.star_names == ("Procyon",)
    assert cli.main(["grid", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "held labels:  vmic" in out and "tied labels" not in out


def test_an_emulator_file_with_a_line_calibration_loads_calibrated(tmp_path, grid_path, emulator):
    import photosphere
    from photosphere.grids.calibrated import CalibratedModel, LineCalibration, write_calibration
    from photosphere.grids.load import load_grid_model

    path = emulator.save(tmp_path / "emu.h5")
    assert isinstance(load_grid_model(str(path)), PCAGPEmulator)
    n = len(emulator.wavelength)
    exponent = np.full(n, 1.5)
    write_calibration(path, LineCalibration(emulator.wavelength, exponent, np.zeros(n, bool), ()))
    for model in (load_grid_model(str(path)), photosphere.load_model(path)):
        assert isinstance(model, CalibratedModel)
        x = torch.tensor([5750.0, 2.5, -0.5])
        np.testing.assert_allclose(model.predict(x).numpy(),
                                   emulator.predict(x).clamp(min=1e-3).numpy() ** 1.5,
                                   rtol=1e-10)
        assert not hasattr(model, "predict_error_templates")
    with pytest.raises(ModelError, match="line calibration"):
        load_grid_model(str(path), line_strengths="table.ecsv")


def test_the_shipped_optical_model_is_loaded_by_name(tmp_path, emulator, monkeypatch):
    """``fit --grid optical`` / ``load_model("optical")``: the emulator shipped in the package's
    data folder; an installation without it says which commands make it."""
    import photosphere
    from photosphere.errors import MissingFileError
    from photosphere.grids import load

    monkeypatch.setattr(load, "DATA_DIR", tmp_path)
    with pytest.raises(MissingFileError, match="grid build --preset optical"):
        load.load_grid_model("optical")
    (tmp_path / "emulators").mkdir()
    emulator.save(tmp_path / "emulators" / "optical.h5")
    for model in (load.load_grid_model("optical"), photosphere.load_model("optical")):
        assert isinstance(model, PCAGPEmulator)
        np.testing.assert_allclose(model.wavelength, emulator.wavelength)
    with pytest.raises(ModelError, match="no shipped model"):
        load.shipped_model_path("infrared")


def test_grid_info_describes_an_emulator_and_its_calibration(tmp_path, emulator, capsys):
    import json

    from photosphere import cli
    from photosphere.grids.calibrated import LineCalibration, StarResiduals, write_calibration

    path = emulator.save(tmp_path / "emu.h5")
    assert cli.main(["grid", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["line_calibration"] is None and info["n_components"] == emulator.n_components_
    assert info["windows"] == [[pytest.approx(emulator.wavelength[0]),
                                pytest.approx(emulator.wavelength[-1])]]
    n = len(emulator.wavelength)
    star = StarResiduals("sun.fits", np.full(n, 0.9), np.full(n, 0.8), np.full(n, 1e4),
                         {"teff": 5772.0})
    write_calibration(path, LineCalibration.from_stars(emulator.wavelength, [star]))
    assert cli.main(["grid", "info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 1 stars" in text and "sun.fits" in text


def test_calibrate_stars_refuses_a_grid_file(grid_path, capsys):
    from photosphere import cli

    assert cli.main(["grid", "calibrate-stars", str(grid_path)]) == 2
    assert "not an emulator" in capsys.readouterr().err


def test_calibrate_stars_writes_a_calibration_into_the_emulator(tmp_path, shared_data, capsys):
    """End to end on one real star (the UVES Sun) with a small analytic emulator around it."""
    import json

    from photosphere import cli
    from photosphere.grids.calibrated import read_calibration

    if not (shared_data / "stars" / "labels.csv").is_file():
        pytest.skip("the benchmark's stars are absent")
    grid = build_small(tmp_path / "sunlike.h5",
                       axes={"teff": (5500.0, 6000.0), "logg": (4.0, 4.5), "feh": (-0.5, 0.0)})
    torch.manual_seed(0)
    path = PCAGPEmulator(n_iter=20).fit(grid).save(tmp_path / "emu.h5")
    assert cli.main(["grid", "calibrate-stars", str(path), "--stars", "uves_sun",
                     "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stars"] == ["Sun"]  # stars by name: leave-one-out takes all their spectra
    cal = read_calibration(path)
    assert cal.star_names == ("Sun",)
    assert np.all(np.isfinite(cal.exponent))
    assert cal.exponent.shape == PCAGPEmulator.load(path).wavelength.shape
    assert cal.stars[0].labels["teff"] == pytest.approx(5772.0)
    # the [Fe/H] zero point: the Sun fitted freely with the calibration made without it
    assert cal.offsets.shape == (1, 1) and np.isfinite(cal.offsets[0, 0])
    assert summary["feh_zero_point"] == pytest.approx(cal.offsets[0, 0])
    assert cal.zero_point == pytest.approx(cal.offsets[0, 0])
    assert not (tmp_path / "emu.h5.offsets.json").exists()  # the journal goes when done


def test_kernel_is_the_squared_exponential_in_place_or_differentiated(rng):
    """The kernel of every component, computed in place (prediction, conditioning) or out of
    place (gradients for the hyperparameters, forward-mode tangents), is
    a² exp(-½ Σ_j (x_j - x'_j)² / ℓ_j²)."""
    import torch.autograd.forward_ad as fwAD

    from photosphere.grids.emulator import _kernel
    from photosphere.infer.optimize import _load_forward_ad

    xa, xb = torch.as_tensor(rng.random((6, 3))), torch.as_tensor(rng.random((9, 3)))
    log_amp, log_len = torch.as_tensor(rng.normal(size=4)), torch.as_tensor(
        rng.normal(size=(4, 3)) - 1.0)
    r2 = (((xa[:, None, :] - xb[None, :, :])[None] / torch.exp(log_len)[:, None, None, :]) ** 2
          ).sum(-1)
    expected = torch.exp(2 * log_amp)[:, None, None] * torch.exp(-0.5 * r2)
    np.testing.assert_allclose(_kernel(xa, xb, log_amp, log_len).numpy(), expected.numpy(),
                               rtol=1e-12)
    ll = log_len.clone().requires_grad_(True)
    out = _kernel(xa, xb, log_amp, ll)
    np.testing.assert_allclose(out.detach().numpy(), expected.numpy(), rtol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), ll)
    assert torch.all(torch.isfinite(grad)) and float(grad.abs().sum()) > 0
    _load_forward_ad()
    with fwAD.dual_level():
        dual = fwAD.make_dual(xa, torch.ones_like(xa))
        primal, tangent = fwAD.unpack_dual(_kernel(dual, xb, log_amp, log_len))
    np.testing.assert_allclose(primal.numpy(), expected.numpy(), rtol=1e-12)
    h = 1e-6
    numeric = (_kernel(xa + h, xb, log_amp, log_len) - _kernel(xa - h, xb, log_amp, log_len)
               ) / (2 * h)
    np.testing.assert_allclose(tangent.numpy(), numeric.numpy(), rtol=1e-5, atol=1e-8)
