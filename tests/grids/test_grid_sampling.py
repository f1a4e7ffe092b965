"""Sampling helpers of grid builds: log-uniform wavelengths, flux-conserving rebinning."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.errors import GridError
from photosphere.grids import _sampling


def test_log_uniform_grid_covers_the_range_at_the_velocity_step():
    w = _sampling.log_uniform_wavelength(5050.0, 5350.0, 1.0)
    assert w[0] == 5050.0 and w[-1] >= 5350.0 and w[-2] < 5350.0
    np.testing.assert_allclose(np.log(w[1:] / w[:-1]) * _sampling.C_KMS, 1.0, rtol=1e-9)


def test_rebin_conserves_flux_and_is_exact_for_constants(rng):
    wave_in = np.arange(5000.0, 5010.0, 0.01)
    flux_in = 1 + rng.normal(0, 0.1, wave_in.size)
    wave_out = _sampling.log_uniform_wavelength(5001.0, 5009.0, 1.3)
    out = _sampling.rebin(wave_in, flux_in, wave_out)
    e_in, e_out = _sampling.pixel_edges(wave_in), _sampling.pixel_edges(wave_out)
    # independent integral of the piecewise-constant input over the output range
    fine = np.linspace(e_out[0], e_out[-1], 4_000_001)
    step_flux = flux_in[np.searchsorted(e_in, fine, side="right") - 1]
    expected = np.sum(0.5 * (step_flux[1:] + step_flux[:-1]) * np.diff(fine))
    assert np.sum(out * np.diff(e_out)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(_sampling.rebin(wave_in, np.full(wave_in.size, 3.0), wave_out),
                               3.0, rtol=1e-12)
    batched = _sampling.rebin(wave_in, np.stack([flux_in, 2 * flux_in]), wave_out)
    np.testing.assert_allclose(batched[1], 2 * out, rtol=1e-12)
    with pytest.raises(GridError, match="synthesise a wider range"):
        _sampling.rebin(wave_in, flux_in, np.array([4990.0, 5000.0, 5005.0]))


def test_vacuum_to_air_matches_a_known_line():
    # Na D2: 5891.583 Å vacuum, 5889.951 Å air (NIST)
    assert abs(_sampling.vacuum_to_air(np.array([5891.583]))[0] - 5889.951) < 0.002
