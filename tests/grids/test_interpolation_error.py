"""Interpolation-error templates of GridInterpolator: second derivatives, calibration, shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _analytic import build_small

from photosphere.grids import interpolation_error as ie
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.store import GridStore

AXES = [np.array([0.0, 1.0, 3.0, 4.0, 6.5]), np.array([-1.0, 0.0, 0.5, 2.0])]


def _quadratic(axes, n_pix=5, seed=0):
    """f(x, y) = a x² + b y² + c x y + linear, per pixel: (n_nodes, n_pix) and a, b."""
    rng = np.random.default_rng(seed)
    a, b, c, lin = (rng.normal(size=n_pix) for _ in range(4))
    x, y = np.meshgrid(*axes, indexing="ij")
    f = (a * x[..., None] ** 2 + b * y[..., None] ** 2 + c * (x * y)[..., None]
         + lin * x[..., None])
    return f.reshape(-1, n_pix), a, b


def test_second_derivatives_exact_for_a_quadratic_on_uneven_axes_edges_and_holes():
    flux, a, b = _quadratic(AXES)
    present = np.ones((5, 4), bool)
    present[2, 1] = False  # a hole: its neighbours take the nearest valid value
    d2 = ie.second_derivatives(flux, AXES, present).reshape(2, 5, 4, -1)
    ok = np.broadcast_to(present[..., None], d2.shape[1:])
    np.testing.assert_allclose(d2[0][ok].reshape(-1, 5), np.broadcast_to(2 * a, (19, 5)),
                               rtol=1e-5)
    np.testing.assert_allclose(d2[1][ok].reshape(-1, 5), np.broadcast_to(2 * b, (19, 5)),
                               rtol=1e-5)


def test_leave_one_out_scale_is_one_for_a_quadratic_and_larger_for_a_quartic():
    flux, _, _ = _quadratic(AXES)
    present = np.ones((5, 4), bool)
    scale, count = ie.leave_one_out_scale(flux, AXES, present)
    assert count > 0 and scale == pytest.approx(1.0, rel=1e-6)
    # a quartic along x: the error of a wide cell is underestimated by second derivatives at
    # its ends only in size, so the scale moves away from 1
    x = np.meshgrid(*AXES, indexing="ij")[0].reshape(-1, 1)
    assert ie.leave_one_out_scale(x ** 4, AXES, present)[0] != pytest.approx(1.0, rel=0.05)
    small = [AXES[0][:3], AXES[1][:3]]  # three nodes per axis: nothing can be left out
    assert ie.leave_one_out_scale(_quadratic(small)[0], small, present[:3, :3]) == (1.0, 0)


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    axes = {"teff": (5500.0, 5750.0, 6000.0, 6250.0, 6500.0), "logg": (2.0, 3.0, 4.0),
            "feh": (-1.0, 0.0)}
    return build_small(tmp_path_factory.mktemp("interr") / "g.h5", axes=axes)


def test_templates_vanish_at_nodes_and_have_one_row_per_axis(grid_path):
    interp = GridInterpolator(grid_path)
    with GridStore.open(grid_path) as store:
        nodes = [[store.node_labels(n)[k] for k in store.label_names]
                 for n in [(0, 0, 0), (2, 1, 1), (4, 2, 0)]]
    t = interp.predict_error_templates(torch.tensor(nodes))
    assert t.shape == (3, 3, interp.wavelength.size)
    assert float(t.abs().max()) == 0.0
    mid = interp.predict_error_templates(torch.tensor([[5625.0, 2.5, -0.5]]))
    assert float(mid.abs().max()) > 0
    assert interp.error_scale > 0


def test_template_matches_the_actual_error_at_a_held_out_node(grid_path, tmp_path):
    """Without the teff = 6000 K plane, the node (6000, 3, -1) is a cell centre: the real
    interpolation error there has the template's shape and, within the calibrated scale, its
    size."""
    with GridStore.open(grid_path) as store:
        sub = store.subset(tmp_path / "sub.h5", teff=(5500.0, 5750.0, 6250.0, 6500.0))
        truth = store.flux((2, 1, 0)).astype(np.float64)
    interp = GridInterpolator(sub)
    x = torch.tensor([[6000.0, 3.0, -1.0]])
    error = interp.predict(x)[0].double().numpy() - truth
    templates = interp.predict_error_templates(x)[0].double().numpy()
    assert np.abs(templates[1:]).max() == 0.0  # on-node along logg and [Fe/H]
    t = templates[0] / interp.error_scale        # ½ h² u(1-u) f_ii, the uncalibrated term
    assert np.corrcoef(error, t)[0, 1] > 0.9
    assert 0.5 < np.linalg.norm(error) / np.linalg.norm(t) < 2.0
