"""Priors: uniform, Gaussian and the MIST isochrone prior."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.errors import FitError
from photosphere.infer.priors import Gaussian, IsochronePrior, Uniform, kroupa_imf, log_prior_sum


def test_uniform_is_normalised_and_minus_inf_outside():
    prior = Uniform({"teff": (4000.0, 6000.0)})
    out = prior.log_prior({"teff": np.array([5000.0, 3999.0])})
    assert out[0] == pytest.approx(-np.log(2000.0))
    assert out[1] == -np.inf


def test_gaussian_density():
    prior = Gaussian("logg", 4.4, 0.1)
    assert float(prior.log_prior({"logg": np.array(4.4)})) == pytest.approx(
        -np.log(0.1 * np.sqrt(2 * np.pi)))
    with pytest.raises(FitError, match="sigma=0"):
        Gaussian("logg", 4.4, 0.0)


def test_sum_names_missing_labels():
    with pytest.raises(FitError, match="alpha"):
        log_prior_sum([Gaussian("alpha", 0.0, 0.1)], {"teff": np.array([5000.0])})


def test_kroupa_imf_is_continuous():
    for m in (0.08, 0.5):
        assert kroupa_imf(m * (1 - 1e-9)) == pytest.approx(kroupa_imf(m * (1 + 1e-9)), rel=1e-6)


@pytest.mark.slow
def test_isochrone_prior_prefers_the_main_sequence(tmp_path, monkeypatch):
    """At solar Teff and [Fe/H], a dwarf (log g 4.44) is far more common than a star at
    log g 3.0 (the Hertzsprung gap); the table is cached and reloaded identically."""
    monkeypatch.setenv("PHOTOSPHERE_CACHE", str(tmp_path))
    prior = IsochronePrior(teff_step=100.0, logg_step=0.1)
    values = {"teff": np.array([5772.0, 5772.0]), "logg": np.array([4.44, 3.0]),
              "feh": np.array([0.0, 0.0])}
    lp = prior.log_prior(values)
    assert np.all(np.isfinite(lp))
    assert lp[0] - lp[1] > 3.0
    again = IsochronePrior(teff_step=100.0, logg_step=0.1).log_prior(values)
    np.testing.assert_allclose(again, lp)
    assert list(tmp_path.glob("priors/*.npz"))
