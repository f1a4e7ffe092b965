"""Interpolation-error templates of GridInterpolator: second derivatives, calibration, shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _analytic import build_small, small_spec, synthesize

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


def test_calibration_of_a_quadratic_is_exact_and_of_a_quartic_is_not():
    flux, _, _ = _quadratic(AXES)
    present = np.ones((5, 4), bool)
    cal = ie.calibrate(flux, AXES, present)
    # the curvature template is the exact error of a quadratic: scale 1, no shift left
    assert cal.n_left_out > 0 and cal.scale == pytest.approx(1.0, rel=1e-6)
    assert cal.shift.shape == (2, 2) and np.abs(cal.shift).max() < 1e-6
    x = np.meshgrid(*AXES, indexing="ij")[0].reshape(-1, 1)
    quartic = ie.calibrate(np.hstack([x ** 4, x ** 3]), AXES, present)
    assert quartic.scale != pytest.approx(1.0, rel=0.05) and quartic.shift[0, 0] > 0
    small = [AXES[0][:3], AXES[1][:3]]  # three nodes per axis: nothing can be left out
    none = ie.calibrate(_quadratic(small)[0], small, present[:3, :3])
    assert (none.scale, none.n_left_out) == (1.0, 0) and not none.shift.any()


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    axes = {"teff": (5500.0, 5750.0, 6000.0, 6250.0, 6500.0), "logg": (2.0, 3.0, 4.0),
            "feh": (-1.0, 0.0)}
    return build_small(tmp_path_factory.mktemp("interr") / "g.h5", axes=axes)


def test_templates_vanish_at_nodes_and_have_two_rows_per_axis(grid_path):
    interp = GridInterpolator(grid_path)
    with GridStore.open(grid_path) as store:
        nodes = [[store.node_labels(n)[k] for k in store.label_names]
                 for n in [(0, 0, 0), (2, 1, 1), (4, 2, 0)]]
    t = interp.predict_error_templates(torch.tensor(nodes))
    assert t.shape == (3, 6, interp.wavelength.size)  # curvature, then label shift
    assert float(t.abs().max()) == 0.0
    mid = interp.predict_error_templates(torch.tensor([[5625.0, 2.5, -0.5]]))
    assert float(mid.abs().max()) > 0
    assert interp.error_calibration.scale > 0


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
    assert np.abs(templates[1:3]).max() == 0.0  # curvature: on-node along logg and [Fe/H]
    t = templates[0] / interp.error_calibration.scale  # ½ h² u(1-u) f_ii, not calibrated
    assert np.corrcoef(error, t)[0, 1] > 0.9
    assert 0.5 < np.linalg.norm(error) / np.linalg.norm(t) < 2.0


CURVED_LINES = np.linspace(5167.0, 5193.0, 12)


def _curved(teff, logg, feh, alpha=0.0, vmic=1.0, **kw):
    """The analytic spectrum times lines whose depth peaks near 6000 K (strongly curved in
    teff, so linear interpolation across 500 K misses a lot)."""
    spec = synthesize(teff, logg, feh, alpha, vmic, **kw)
    depth = 0.6 * np.exp(-((teff - 6000.0 - 40.0 * np.arange(CURVED_LINES.size)) / 450.0) ** 2)
    extra = np.prod(1 - depth * np.exp(-0.5 * ((spec.wavelength[:, None] - CURVED_LINES)
                                               / 0.08) ** 2), axis=1)
    return dataclasses.replace(spec, flux=spec.flux * extra,
                               flux_absolute=spec.flux_absolute * extra)


def test_a_fit_between_nodes_gets_larger_sigma_with_the_templates(tmp_path):
    """The true spectrum of the node (6000, 3, -1), fitted by the grid without the
    teff = 6000 K plane: with the templates marginalised σ(teff) grows and the pull of teff
    falls from tens to a few."""
    from analytic_model import simulate
    from photosphere.grids.build import build_grid
    from photosphere.infer.optimize import fit

    axes = {"teff": (5500.0, 5750.0, 6000.0, 6250.0, 6500.0), "logg": (2.0, 3.0, 4.0),
            "feh": (-1.0, 0.0)}
    full = tmp_path / "curved.h5"
    build_grid(small_spec(axes=axes), full, synthesizer=_curved, scheduler="synchronous",
               progress=False, command="test")
    with GridStore.open(full) as store:
        sub = store.subset(tmp_path / "sub.h5", teff=(5500.0, 5750.0, 6250.0, 6500.0))
    truth = {"teff": 6000.0, "logg": 3.0, "feh": -1.0, "vsini": 3.0, "rv": 5.0}
    obs, _ = simulate(GridInterpolator(full), truth, np.linspace(5165, 5195, 3000),
                      resolution=50000, snr=100)
    interp = GridInterpolator(sub)
    kw = dict(resolution=50000, rv_bounds=(0, 10), n_grid=2, n_starts=2,
              fixed={"logg": 3.0, "feh": -1.0})
    off = fit(interp, obs, model_error="none", **kw)
    on = fit(interp, obs, model_error="auto", **kw)
    assert on.provenance["model_error"] == "templates" and on.flags["model_error_templates"] == 6
    assert on.sigma["teff"] > 5 * off.sigma["teff"]
    pull_on = abs(on.values["teff"] - 6000.0) / on.sigma["teff"]
    pull_off = abs(off.values["teff"] - 6000.0) / off.sigma["teff"]
    assert pull_on < 4 < 10 < pull_off


def test_templates_in_a_cell_with_a_missing_corner(tmp_path):
    """The small grid lacks (7000 K, log g 1): in the valid triangle of that cell the
    label-shift derivative along Teff would need the missing node, so it is left out (zero)
    rather than failing; everything stays finite."""
    interp = GridInterpolator(build_small(tmp_path / "holey.h5"))
    x = torch.tensor([[6600.0, 1.8, -0.5], [5750.0, 2.5, -0.5]])
    t = interp.predict_error_templates(x)
    assert t.shape == (2, 6, interp.wavelength.size) and torch.isfinite(t).all()
    assert float(t[0, 3].abs().max()) == 0.0 and float(t[1, 3].abs().max()) > 0
