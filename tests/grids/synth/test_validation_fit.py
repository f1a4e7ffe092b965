"""Several windows fitted together: shared broadening, one continuum per window, Balmer rule."""

from __future__ import annotations

import numpy as np
import pytest
from _synth_fixtures import analytic_synthetic

from photosphere.errors import FitError
from photosphere.grids.synth.validation_fit import (
    Broadener,
    Continuum,
    fit_windows,
    holds_balmer_line,
)

METALS = ([5101.2, 5102.9, 5104.4, 5105.1, 5107.3, 5108.8], [0.6, 0.3, 0.8, 0.2, 0.5, 0.4])
# a broad shallow "Hα" with a few metal lines on its wings
BALMER = ([6556.0, 6562.8, 6569.1, 6572.4], [0.3, 0.6, 0.4, 0.5], [0.03, 2.5, 0.03, 0.03])


def _windows():
    metal = analytic_synthetic(np.round(np.arange(5098.0, 5112.0, 0.01), 2), *METALS)
    balmer = analytic_synthetic(np.round(np.arange(6548.0, 6577.0, 0.01), 2), *BALMER)
    waves = [np.round(np.arange(5100.0, 5110.0, 0.01), 2),
             np.round(np.arange(6550.0, 6575.0, 0.01), 2)]
    return [metal, balmer], waves


def test_windows_share_broadening_and_keep_their_own_continua(rng):
    synthetics, waves = _windows()
    truth = [Broadener(s, w, 0.5, 1.9)(60000.0, 3.5, -0.6) for s, w in zip(synthetics, waves,
                                                                           strict=True)]
    x0 = (waves[0] - 5105.0) / 5.0
    continua = [0.8 + 0.02 * x0 - 0.01 * x0**2,             # curved: a Legendre 2 window
                1.1 + 0.003 * (waves[1] - 6562.5)]         # straight: the Balmer window
    observed = [(w, t * c + rng.normal(0.0, 1e-3, w.size))
                for w, t, c in zip(waves, truth, continua, strict=True)]
    fits, params = fit_windows(synthetics, observed, vsini=1.9)
    assert params["rv"] == pytest.approx(-0.6, abs=0.05)
    assert params["macroturbulence"] == pytest.approx(3.5, rel=0.15)
    for fit, (_, flux), cont, line in zip(fits, observed, continua, truth, strict=True):
        assert np.std(fit.model - flux) < 1.5e-3
        np.testing.assert_allclose(fit.continuum, cont, atol=3e-3)
        np.testing.assert_allclose(fit.line_flux, line, atol=3e-3)
        np.testing.assert_allclose(fit.model, fit.continuum * fit.line_flux)


def test_fit_windows_checks_its_inputs():
    synthetics, waves = _windows()
    with pytest.raises(FitError, match="one synthetic spectrum per window"):
        fit_windows(synthetics[:1], [(w, np.ones_like(w)) for w in waves], vsini=1.9)


def test_continuum_bases_by_window():
    metal = np.linspace(5140.0, 5340.0, 2001)
    halpha = np.linspace(6510.0, 6610.0, 1001)
    assert holds_balmer_line(halpha) and not holds_balmer_line(metal)
    assert Continuum().basis(metal).shape == (2001, 3)
    assert Continuum().basis(halpha).shape == (1001, 2)
    assert Continuum(balmer_degree=None).basis(halpha).shape == (1001, 3)
    spline = Continuum(knot_spacing=50.0)
    assert spline.basis(metal).shape == (2001, 4 + 3)  # 4 intervals of 50 Å, cubic
    assert spline.describe(metal) == "spline 50 Å"
    assert spline.describe(halpha) == "Legendre 1 (Balmer)"
    # the spline partitions unity: a constant continuum is exactly representable
    np.testing.assert_allclose(spline.basis(metal).sum(axis=1), 1.0)
    with pytest.raises(FitError, match="knot_spacing"):
        Continuum(knot_spacing=0.0)
    with pytest.raises(FitError, match="degree"):
        Continuum(degree=-1)


def test_a_straight_continuum_cannot_absorb_balmer_wings():
    """The reason for the Balmer rule: a symmetric wing across the window is taken up by a
    degree-2 continuum (it bends to follow it) but left in the residual by a straight line."""
    wave = np.linspace(6512.8, 6612.8, 2001)
    wing = 1.0 - 0.15 * np.exp(-0.5 * ((wave - 6562.8) / 20.0) ** 2)

    def left_in_residual(degree: int) -> float:
        basis = Continuum(degree=degree, balmer_degree=None).basis(wave)
        coef, *_ = np.linalg.lstsq(basis, wing, rcond=None)
        return float(np.std(wing - basis @ coef))

    assert left_in_residual(1) > 0.04
    assert left_in_residual(2) < 0.6 * left_in_residual(1)
