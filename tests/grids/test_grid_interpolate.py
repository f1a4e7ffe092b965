"""GridInterpolator: exact at nodes, equal to scipy, batched, differentiable, missing nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _analytic import build_small
from scipy.interpolate import RegularGridInterpolator

from photosphere.errors import ModelError, OutOfGridError
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.store import GridStore


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    return build_small(tmp_path_factory.mktemp("interp") / "small.h5")


@pytest.fixture(scope="module")
def interp(grid_path):
    return GridInterpolator(grid_path)


def test_exact_at_nodes(grid_path, interp):
    with GridStore.open(grid_path) as store:
        for node in [(0, 0, 0), (2, 1, 1), (3, 2, 0), (3, 1, 1)]:
            lab = store.node_labels(node)
            x = torch.tensor([lab["teff"], lab["logg"], lab["feh"]])
            np.testing.assert_array_equal(interp.predict(x).numpy(), store.flux(node))
            np.testing.assert_allclose(interp.predict_absolute(x).numpy(),
                                       store.absolute_flux(node), rtol=1e-5)
            i = store.node_index(node)
            np.testing.assert_allclose(interp.predict_mean_flux(x).numpy(),
                                       store.mean_flux_all()[i], rtol=1e-6)


def test_multilinear_matches_scipy_in_complete_cells(grid_path, interp, rng):
    with GridStore.open(grid_path) as store:
        flux = store.flux_all().reshape(*store.shape, -1)
        axes = tuple(store.axes.values())
    complete = flux[:, 1:]  # logg >= 2: every node present
    ref = RegularGridInterpolator((axes[0], axes[1][1:], axes[2]), complete)
    pts = np.column_stack([rng.uniform(5500, 7000, 20), rng.uniform(2, 3, 20),
                           rng.uniform(-1, 0, 20)])
    np.testing.assert_allclose(interp.predict(torch.tensor(pts)).numpy(), ref(pts), atol=2e-6)


def test_batched_equals_one_at_a_time_and_shapes(interp, rng):
    pts = np.column_stack([rng.uniform(5500, 6500, 6), rng.uniform(1, 3, 6),
                           rng.uniform(-1, 0, 6)]).reshape(2, 3, 3)
    batch = interp.predict(torch.tensor(pts))
    assert batch.shape == (2, 3, interp.wavelength.size)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(batch[i, j].numpy(),
                                          interp.predict(torch.tensor(pts[i, j])).numpy())
    with pytest.raises(ModelError, match="last dimension must hold the 3 labels"):
        interp.predict(torch.zeros(4, 2))


def test_gradient_matches_finite_differences(grid_path):
    model = GridInterpolator(grid_path, dtype=torch.float64)
    # a complete cell, and a cell without (7000, 1) where simplex weights are used
    x = torch.tensor([[5730.0, 2.3, -0.4], [6210.0, 1.2, -0.7], [6600.0, 1.7, -0.3]],
                     dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda lab: model.predict(lab)[..., ::97], (x,),
                                    eps=1e-4, atol=1e-6)


def test_outside_the_grid_names_label_and_range(interp):
    with pytest.raises(OutOfGridError, match=r"teff=2500 is outside the grid \(5500-7000 K\); "
                                             r"pass a grid that covers it or fix teff"):
        interp.predict(torch.tensor([2500.0, 2.0, 0.0]))
    with pytest.raises(OutOfGridError, match=r"feh=0\.3 is outside"):
        interp.predict(torch.tensor([[6000.0, 2.0, 0.0], [6000.0, 2.0, 0.3]]))
    with pytest.raises(OutOfGridError, match="logg=nan"):
        interp.predict(torch.tensor([6000.0, float("nan"), 0.0]))


def test_missing_nodes_use_the_present_triangle(grid_path, interp):
    """Cell teff 6500-7000, logg 1-2 lacks (7000, 1): points in the triangle of the three present
    corners get barycentric weights; points needing the missing node are refused."""
    with GridStore.open(grid_path) as store:
        f00, f01, f11 = (store.flux(n) for n in [(2, 0, 1), (2, 1, 1), (3, 1, 1)])
    x, y = 0.3, 0.7  # fractional teff and logg positions, x <= y
    pred = interp.predict(torch.tensor([6500 + 500 * x, 1 + y, 0.0])).numpy()
    np.testing.assert_allclose(pred, (1 - y) * f00 + (y - x) * f01 + x * f11, atol=2e-6)
    with pytest.raises(OutOfGridError, match=r"needs the node \(teff=7000, logg=1, feh="):
        interp.predict(torch.tensor([6500 + 500 * 0.7, 1.3, 0.0]))
    with pytest.raises(OutOfGridError, match="no model atmosphere"):
        interp.predict(torch.tensor([7000.0, 1.0, -1.0]))
    # the triangle's diagonal edge is inside; the interpolant is continuous across the cell edge
    edge = interp.predict(torch.tensor([[6500 + 250.0, 1.5, -0.5], [6500.0, 1.5, -0.5]]))
    left = interp.predict(torch.tensor([6499.999, 1.5, -0.5]))
    np.testing.assert_allclose(edge[1].numpy(), left.numpy(), atol=1e-5)


def _cool_hole(teff, logg, feh, *args, **kw):
    from _analytic import synthesize

    if teff < 5600 and logg < 1.5:
        raise OutOfGridError("no cool low-gravity model")
    return synthesize(teff, logg, feh, *args, **kw)


def test_hole_on_the_cell_diagonal_is_reflected(tmp_path):
    """Missing corner (5500, 1) lies on the Kuhn diagonal; the cell is reflected so the triangle of
    the three present corners (x + y >= 1 in cell units) stays usable."""
    from _analytic import small_spec

    from photosphere.grids.build import build_grid

    path = tmp_path / "cool.h5"
    build_grid(small_spec(), path, synthesizer=_cool_hole, scheduler="synchronous",
               progress=False)
    model = GridInterpolator(path)
    with GridStore.open(path) as store:
        f10, f01, f11 = (store.flux(n) for n in [(1, 0, 0), (0, 1, 0), (1, 1, 0)])
    x, y = 0.6, 0.7
    pred = model.predict(torch.tensor([5500 + 500 * x, 1 + y, -1.0])).numpy()
    # barycentric in the triangle (1,0), (0,1), (1,1)
    np.testing.assert_allclose(pred, (1 - y) * f10 + (1 - x) * f01 + (x + y - 1) * f11, atol=2e-6)
    with pytest.raises(OutOfGridError, match="teff=5500, logg=1, feh=-1"):
        model.predict(torch.tensor([5500 + 500 * 0.2, 1.3, -1.0]))


def test_observe_equals_the_ops_chain_by_hand(interp):
    from photosphere.ops.doppler import shift_wavelength
    from photosphere.ops.lsf import gaussian_broaden
    from photosphere.ops.resample import rebin
    from photosphere.ops.rotation import rotational_broaden

    labels = torch.tensor([[5800.0, 2.5, -0.3], [6100.0, 1.5, -0.8]], dtype=torch.float64)
    rv = torch.tensor([12.0, -30.0], dtype=torch.float64)
    out_wave = np.linspace(5165.0, 5195.0, 900)
    got = interp.observe(labels, vsini=torch.tensor([4.0, 20.0]), resolution=50_000.0, rv=rv,
                         wavelength=out_wave)
    flux = interp.predict(labels).double()
    flux = rotational_broaden(flux, torch.tensor([4.0, 20.0], dtype=torch.float64),
                              interp.velocity_step)
    flux = gaussian_broaden(flux, 50_000.0, interp.velocity_step)
    shifted = shift_wavelength(torch.tensor(interp.wavelength), rv)
    expected = rebin(shifted, flux, torch.tensor(out_wave))
    assert got.shape == (2, 900)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)
    # the deepest line moves by rv: 5172.7 Å shifted by +12 km/s
    win = np.abs(out_wave - 5172.9) < 1.0
    assert abs(out_wave[win][np.argmin(got[0].numpy()[win])] - 5172.7 * (1 + 12 / 299792.458)) \
        < 0.05
    # identity chain: no broadening, no shift, own wavelengths
    np.testing.assert_allclose(interp.observe(labels[0]).numpy(),
                               interp.predict(labels[0]).double().numpy(), rtol=1e-10)
    x = labels.clone().requires_grad_(True)
    v = torch.tensor([4.0, 20.0], dtype=torch.float64, requires_grad=True)
    r = rv.clone().requires_grad_(True)
    interp.observe(x, vsini=v, rv=r, resolution=50_000.0, wavelength=out_wave).nansum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in (x, v, r))
