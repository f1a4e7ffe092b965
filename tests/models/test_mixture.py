"""Two-component models: the mixing algebra, the three flux ratios, shifts, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere import Spectrum
from photosphere.errors import FitError, ModelError, OutOfGridError
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.grids.store import GridStore
from photosphere.infer.epochs import EpochChain
from photosphere.infer.mixture import check_distinct, fit_mixture, make_model, simulate
from photosphere.model import check_model
from photosphere.models.mixture import BinaryModel, SpotModel
from photosphere.models.mixture.flux_ratio import (
    ChunkAverager,
    ContinuumTable,
    MeanFluxTable,
    log_planck,
    mix_normalised,
    planck_ratio,
)
from photosphere.models.mixture.model import shift_log_uniform

AMBIENT = {"teff": 5500.0, "logg": 4.5, "feh": 0.0}
SPOT = {**AMBIENT, "teff": 4500.0}


@pytest.fixture(scope="module")
def grid():
    torch.set_num_threads(1)
    return GridInterpolator(default_grid_path())


def _spot_labels(model: SpotModel, c: float, teff_spot: float = 4500.0) -> torch.Tensor:
    return model.labels_tensor(teff=5500.0, teff_spot=teff_spot, logg=4.5, feh=0.0,
                               filling_factor=c)


def _binary_labels(model: BinaryModel, **change: float) -> torch.Tensor:
    """A 6000 K + 5000 K pair (radius ratio 0.5, Δrv 10 km/s) with ``change`` applied."""
    labels = dict(teff_a=6000.0, logg_a=4.3, feh_a=0.0, vsini_a=5.0, teff_b=5000.0, logg_b=4.5,
                  feh_b=0.0, vsini_b=5.0, radius_ratio=0.5, delta_rv=10.0)
    return model.labels_tensor(**{**labels, **change})


def test_models_are_forward_models(grid):
    spot = SpotModel(grid)
    binary = BinaryModel(grid, share=("feh",))
    assert check_model(spot) is spot and check_model(binary) is binary
    assert spot.label_names == ("teff", "teff_spot", "logg", "feh", "filling_factor")
    assert binary.label_names == ("teff_a", "logg_a", "vsini_a", "teff_b", "logg_b", "vsini_b",
                                  "feh", "radius_ratio", "delta_rv")
    assert spot.bounds["filling_factor"] == (0.0, 1.0)
    assert spot.bounds["teff_spot"] == (4000.0, 6750.0)
    assert spot.bounds["teff"] == (4250.0, 7000.0)


def test_absolute_mixture_equals_mixed_absolute_fluxes(grid):
    """Method 1 is literally ((1-c) F1 + c F2) / ((1-c) C1 + c C2)."""
    model = SpotModel(grid, ratio="absolute")
    c = 0.35
    x1 = grid.labels_tensor(**AMBIENT)
    x2 = grid.labels_tensor(**SPOT)
    f = (1 - c) * grid.predict_absolute(x1).double() + c * grid.predict_absolute(x2).double()
    cont = ((1 - c) * grid.predict_continuum(x1).double()
            + c * grid.predict_continuum(x2).double())
    np.testing.assert_allclose(model.predict(_spot_labels(model, c)).numpy(),
                               (f / cont).numpy(), rtol=2e-5)


@pytest.mark.parametrize("ratio", ["absolute", "blackbody", "mean_flux"])
def test_filling_factor_limits_give_the_components(grid, ratio):
    model = SpotModel(grid, ratio=ratio)
    n1 = grid.predict(grid.labels_tensor(**AMBIENT)).double().numpy()
    n2 = grid.predict(grid.labels_tensor(**SPOT)).double().numpy()
    np.testing.assert_allclose(model.predict(_spot_labels(model, 0.0)).numpy(), n1, atol=1e-7)
    np.testing.assert_allclose(model.predict(_spot_labels(model, 1.0)).numpy(), n2, atol=1e-7)
    mid = model.predict(_spot_labels(model, 0.5)).numpy()
    lo, hi = np.minimum(n1, n2), np.maximum(n1, n2)
    assert np.all(mid >= lo - 1e-6) and np.all(mid <= hi + 1e-6)


def test_spot_light_fraction_is_below_the_filling_factor(grid):
    """Cool spots are dim: they give less light than their share of the disc, more to the red."""
    model = SpotModel(grid)
    frac = model.spot_light_fraction(_spot_labels(model, 0.4)).numpy()
    assert np.all((frac > 0.05) & (frac < 0.4))
    assert frac[-100:].mean() > frac[:100].mean()


def test_planck_ratio_matches_numpy():
    wave = np.array([5000.0, 6000.0])
    ref = np.exp(log_planck(wave, np.array(4000.0)) - log_planck(wave, np.array(6000.0)))
    got = planck_ratio(torch.as_tensor(wave), torch.tensor(6000.0), torch.tensor(4000.0))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert np.all(ref < 0.3)


def test_mean_flux_table_is_exact_at_nodes_and_smooth(grid):
    averager = ChunkAverager(grid.wavelength, grid.chunk_edges)
    table = MeanFluxTable(grid, averager)
    with GridStore.open(grid.path) as store:
        stored = store.mean_flux_all()
        i = int(np.flatnonzero(store.present.ravel())[100])
        node = store.node_labels(i)
    x = torch.tensor([[node[n] for n in grid.label_names]], dtype=torch.float64)
    np.testing.assert_allclose(torch.exp(table.log_mean_flux(x)).numpy()[0], stored[i],
                               rtol=1e-6)
    # between nodes the smooth table stays below the chord (ln F̄ ~ linear in 1/T, convex in T)
    teff = torch.tensor([[4000.0, 4.5, 0.0], [4125.0, 4.5, 0.0], [4250.0, 4.5, 0.0]],
                        dtype=torch.float64)
    smooth = torch.exp(table.log_mean_flux(teff)).numpy()
    assert np.all(smooth[1] < 0.5 * (smooth[0] + smooth[2]))
    np.testing.assert_allclose(smooth[1], grid.predict_mean_flux(teff[1]).numpy(), rtol=0.03)


def test_continuum_table_is_exact_at_nodes_and_below_the_chord(grid):
    table = ContinuumTable(grid)
    node = torch.tensor([[4500.0, 4.5, 0.0], [5500.0, 4.0, -0.5]], dtype=torch.float64)
    np.testing.assert_allclose(table.continuum(node).numpy(),
                               grid.predict_continuum(node).double().numpy(), rtol=2e-5)
    np.testing.assert_allclose(table.log_ratio(node, node).numpy(), 0.0, atol=1e-12)
    mid = torch.tensor([[4125.0, 4.5, 0.0]], dtype=torch.float64)
    smooth, chord = table.continuum(mid).numpy(), grid.predict_continuum(mid).double().numpy()
    assert np.all(smooth < chord) and np.all(smooth > 0.95 * chord)


def test_chunk_averager_round_trips_constants(grid):
    averager = ChunkAverager(grid.wavelength, grid.chunk_edges)
    ones = torch.ones(2, grid.wavelength.size, dtype=torch.float64)
    np.testing.assert_allclose(averager.mean(3 * ones).numpy(), 3.0)
    np.testing.assert_allclose(averager.expand(torch.full((1, averager.n_chunks), 2.0,
                                                          dtype=torch.float64)).numpy(), 2.0)


def test_mix_normalised_is_a_weighted_mean():
    n1, n2 = torch.tensor([[0.2, 1.0]]), torch.tensor([[0.6, 1.0]])
    out = mix_normalised(n1, n2, torch.tensor([[1.0, 1.0]]), torch.tensor([0.25]))
    np.testing.assert_allclose(out.numpy(), [[0.3, 1.0]])


def test_shift_log_uniform_moves_lines_and_returns():
    step = 1.0 / 299792.458
    x = torch.arange(400, dtype=torch.float64)
    flux = 1 - 0.5 * torch.exp(-0.5 * ((x - 200) / 3) ** 2)
    five = shift_log_uniform(flux, torch.tensor(5.0), step)
    assert int(torch.argmin(five)) == 205
    back = shift_log_uniform(five, torch.tensor(-5.0), step)
    np.testing.assert_allclose(back[20:-20].numpy(), flux[20:-20].numpy(), atol=1e-3)


def test_gradients_flow_to_every_spot_label(grid):
    model = SpotModel(grid, ratio="mean_flux", veiling=True)
    x = model.labels_tensor(teff=5600.0, teff_spot=4600.0, logg=4.4, feh=-0.2,
                            filling_factor=0.3, veiling=0.1).requires_grad_(True)
    model.predict(x).pow(2).sum().backward()
    assert torch.all(torch.isfinite(x.grad)) and torch.all(x.grad != 0)


def test_binary_delta_rv_moves_only_star_b(grid):
    model = BinaryModel(grid, flux_ratio="free")
    base = dict(teff_a=6000.0, logg_a=4.3, feh_a=0.0, vsini_a=0.0, teff_b=4800.0, logg_b=4.6,
                feh_b=0.0, vsini_b=0.0, light_ratio=0.5)
    f0 = model.predict(model.labels_tensor(**base, delta_rv=0.0)).numpy()
    f1 = model.predict(model.labels_tensor(**base, delta_rv=30.0)).numpy()
    n_a = grid.predict(grid.labels_tensor(teff=6000.0, logg=4.3, feh=0.0)).double().numpy()
    n_b = grid.predict(grid.labels_tensor(teff=4800.0, logg=4.6, feh=0.0)).double().numpy()
    np.testing.assert_allclose(f0, (n_a + 0.5 * n_b) / 1.5, atol=1e-6)
    np.testing.assert_allclose(f1[100:-100], (n_a[100:-100] + 0.5 * n_b[70:-130]) / 1.5,
                               atol=2e-3)


def test_multi_epoch_binary_predicts_one_spectrum_per_epoch(grid):
    model = BinaryModel(grid, n_epochs=2, share=("feh", "logg"))
    x = model.labels_tensor(teff_a=6000.0, vsini_a=5.0, teff_b=5000.0, vsini_b=5.0, feh=0.0,
                            logg=4.5, radius_ratio=0.8, delta_rv_0=-40.0, delta_rv_1=40.0)
    flux = model.predict_epochs(torch.stack([x, x]))
    assert flux.shape == (2, 2, grid.wavelength.size)
    assert not torch.allclose(flux[0, 0], flux[0, 1])
    with pytest.raises(ModelError, match="predict_epochs"):
        model.predict(x)


def test_epoch_chain_equals_one_chain_per_epoch(grid):
    """Each exposure of the multi-epoch chain is the single-epoch model at that epoch's
    delta_rv through the ordinary chain."""
    from photosphere.infer.chain import ObservationChain

    labels = dict(teff_a=6000.0, logg_a=4.3, vsini_a=6.0, teff_b=5000.0, logg_b=4.6,
                  vsini_b=3.0, feh=0.0, radius_ratio=0.8)
    wave = np.exp(np.arange(np.log(5180.0), np.log(5200.0), 2.0 / 299792.458))
    obs = Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01))
    two = BinaryModel(grid, n_epochs=2, share=("feh",))
    chain = EpochChain(two, [obs, obs], resolution=40000, continuum_degree=None,
                       rv_bounds=(-60.0, 60.0))
    theta = chain.theta_from({**labels, "delta_rv_0": -30.0, "delta_rv_1": 45.0,
                              "rv_0": 10.0, "rv_1": -20.0})
    got, _ = chain.predict(torch.as_tensor(theta))
    one = BinaryModel(grid, share=("feh",))
    for e, (dv, rv) in enumerate(((-30.0, 10.0), (45.0, -20.0))):
        ref_chain = ObservationChain(one, obs, resolution=40000, continuum_degree=None,
                                     rotation=False, rv_bounds=(-60.0, 60.0))
        ref, _ = ref_chain.predict(torch.as_tensor(ref_chain.theta_from(
            {**labels, "delta_rv": dv, "rv": rv})))
        np.testing.assert_allclose(got[e].numpy(), ref[0].numpy(), rtol=1e-10)


def test_veiling_fills_in_lines(grid):
    plain = SpotModel(grid)
    veiled = SpotModel(grid, veiling=True)
    f = plain.predict(_spot_labels(plain, 0.3)).numpy()
    x = veiled.labels_tensor(teff=5500.0, teff_spot=4500.0, logg=4.5, feh=0.0,
                             filling_factor=0.3, veiling=0.5)
    np.testing.assert_allclose(1 - veiled.predict(x).numpy(), (1 - f) / 1.5, atol=1e-9)


# ------------------------------------------------------------------ bad input
def test_filling_factor_outside_unit_interval_is_refused(grid):
    model = SpotModel(grid)
    for c in (-0.1, 1.2):
        with pytest.raises(OutOfGridError, match=r"filling_factor=.* outside \[0, 1\]"):
            model.predict(_spot_labels(model, c))


def test_spot_outside_grid_is_named(grid):
    model = SpotModel(grid)
    with pytest.raises(OutOfGridError, match=r"the spots: teff_spot=3500 is outside the grid "
                                             r"\(4000-7000 K\).*fix teff_spot"):
        model.predict(_spot_labels(model, 0.2, teff_spot=3500.0))
    binary = BinaryModel(grid)
    with pytest.raises(OutOfGridError, match=r"star b: logg_b=5\.5 is outside"):
        binary.predict(_binary_labels(binary, logg_b=5.5))


def test_spot_must_be_cooler(grid):
    model = SpotModel(grid)
    with pytest.raises(OutOfGridError, match="teff_spot=5500 K is not below teff=5500 K"):
        model.predict(_spot_labels(model, 0.2, teff_spot=5500.0))


def test_identical_components_are_refused(grid):
    spot = SpotModel(grid)
    with pytest.raises(ModelError, match="identical"):
        check_distinct(spot, {"teff": 5000.0, "teff_spot": 5000.0})
    binary = BinaryModel(grid)
    same = dict(teff_a=5000.0, logg_a=4.5, feh_a=0.0, vsini_a=3.0, teff_b=5000.0, logg_b=4.5,
                feh_b=0.0, vsini_b=3.0, delta_rv=0.0)
    with pytest.raises(ModelError, match="indistinguishable"):
        check_distinct(binary, same)
    check_distinct(binary, {**same, "delta_rv": 20.0})
    wave = np.linspace(5150.0, 5160.0, 200)
    obs = Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01))
    with pytest.raises(ModelError, match="identical"):
        fit_mixture(spot, obs, fixed={"teff": 5000.0, "teff_spot": 5000.0})


def test_bad_settings_raise_typed_errors(grid):
    with pytest.raises(ModelError, match="flux-ratio method 'pca'"):
        SpotModel(grid, ratio="pca")
    with pytest.raises(ModelError, match="mixture mode 'triple'"):
        make_model("triple", grid)
    with pytest.raises(ModelError, match="cannot be shared"):
        BinaryModel(grid, share=("teff",))
    with pytest.raises(ModelError, match="flux_ratio='mass'"):
        BinaryModel(grid, flux_ratio="mass")
    binary = BinaryModel(grid)
    with pytest.raises(OutOfGridError, match=r"radius_ratio=1\.5 is outside"):
        binary.predict(_binary_labels(binary, radius_ratio=1.5))


def test_epoch_chain_checks_the_number_of_exposures(grid):
    model = BinaryModel(grid, n_epochs=2)
    wave = np.linspace(5150.0, 5160.0, 200)
    obs = Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01))
    with pytest.raises(FitError, match="2 epochs but 3 exposures"):
        EpochChain(model, [obs, obs, obs], rv_bounds=(-10.0, 10.0))
    with pytest.raises(FitError, match="rotation=False"):
        EpochChain(model, [obs, obs], rotation=True)


def test_simulate_is_seeded(grid):
    model = SpotModel(grid)
    truth = {"teff": 5500.0, "teff_spot": 4500.0, "logg": 4.5, "feh": 0.0,
             "filling_factor": 0.3, "vsini": 5.0, "rv": 3.0}
    wave = np.linspace(5150.0, 5170.0, 500)
    a = simulate(model, truth, wave, resolution=40000, snr=50, seed=4)
    b = simulate(model, truth, wave, resolution=40000, snr=50, seed=4)
    np.testing.assert_array_equal(a.flux, b.flux)
    assert np.std(a.flux - b.flux) == 0 and np.median(a.sigma) == pytest.approx(
        np.abs(a.flux).mean() / 50, rel=0.01)
