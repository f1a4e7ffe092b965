"""Sun validation: UVES reader, and the full bar against the real Sun."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _synth_fixtures import analytic_synthetic, atmospheres_or_skip, turbospectrum_or_skip

from conftest import shared_file
from photosphere.errors import MissingFileError
from photosphere.grids.synth import validation_fit, validation_stars


def test_read_uves_sun_averages_repeated_pixels(tmp_path):
    wave = np.round(np.arange(5040.0, 5360.0, 0.01), 2)
    wave = np.sort(np.concatenate([wave, [5100.0]]))
    flux = np.ones_like(wave)
    flux[np.flatnonzero(wave == 5100.0)] = [0.8, 0.6]
    path = tmp_path / "sun.txt"
    np.savetxt(path, np.column_stack([wave, flux]))
    w, f = validation_stars.read_uves_sun(path)
    assert w[0] >= 5050.0 and w[-1] <= 5350.0 and np.all(np.diff(w) > 0)
    assert f[np.flatnonzero(np.abs(w - 5100.0) < 1e-6)[0]] == pytest.approx(0.7)
    with pytest.raises(MissingFileError, match="--observed"):
        validation_stars.read_uves_sun(tmp_path / "absent.txt")


@pytest.mark.slow
@pytest.mark.turbospectrum
@pytest.mark.realdata
def test_synthetic_sun_meets_the_bar(tmp_path, capsys):
    from photosphere.cli import main

    observed = shared_file(validation_stars.UVES_SUN)
    turbospectrum_or_skip()
    atmospheres_or_skip()
    plot = tmp_path / "sun.png"
    # the 5050-5350 Å window with ATLAS9 and atoms only, as before the optical window set
    status = main(["grid", "validate-sun", "--json", "--windows", "embedded", "--observed",
                   str(observed), "--plot", str(plot)])
    out = json.loads(capsys.readouterr().out)
    assert status == 0 and out["passes"]
    assert out["pearson_r"] >= 0.96
    assert out["median_abs_residual"] <= 0.015
    assert out["p95_abs_residual"] <= 0.09
    assert abs(out["rv_kms"]) < 2.0 and 0.5 < out["macroturbulence_kms"] < 8.0
    assert plot.stat().st_size > 10_000


def _analytic_synthetic(wave: np.ndarray):
    return analytic_synthetic(wave, [5101.2, 5102.9, 5104.4, 5105.1, 5107.3, 5108.8],
                              [0.6, 0.3, 0.8, 0.2, 0.5, 0.4])


def test_fit_recovers_shift_broadening_and_continuum(rng):
    synthetic = _analytic_synthetic(np.round(np.arange(5098.0, 5112.0, 0.01), 2))
    wave_obs = np.round(np.arange(5100.0, 5110.0, 0.01), 2)
    truth = validation_fit.Broadener(synthetic, wave_obs, 0.5, 1.9)(60000.0, 3.5, 0.8)
    x = (wave_obs - 5105.0) / 5.0
    observed = truth * (1.02 + 0.01 * x - 0.005 * x**2) + rng.normal(0.0, 1e-3, wave_obs.size)
    model, params = validation_fit.fit_to_observation(synthetic, wave_obs, observed)
    assert params["rv"] == pytest.approx(0.8, abs=0.05)
    assert params["resolution"] == pytest.approx(60000.0, rel=0.15)
    assert params["macroturbulence"] == pytest.approx(3.5, rel=0.15)
    assert np.std(model - observed) < 1.5e-3
    assert np.corrcoef(model, observed)[0, 1] > 0.999
    # unbroadened model would be far worse: the fit really broadened it
    assert np.std(np.interp(wave_obs, synthetic.wavelength, synthetic.flux) - observed) > 0.02
