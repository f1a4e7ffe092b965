"""ObservationSettings: one frozen, validated observation setup, passed to fit and sample."""

from __future__ import annotations

import dataclasses

import pytest

from analytic_model import AnalyticModel, simulate
from photosphere.errors import FitError
from photosphere.infer.chain import ObservationChain
from photosphere.infer.mcmc import sample
from photosphere.infer.optimize import build_chain, fit
from photosphere.infer.settings import ObservationSettings

TRUTH = {"teff": 5600.0, "logg": 4.2, "feh": -0.1, "rv": 3.0, "vsini": 5.0}


@pytest.fixture(scope="module")
def case():
    model = AnalyticModel(5000, 5030, n_lines=12)
    observed, _ = simulate(model, TRUTH, model.wavelength[300:-300], resolution=50_000, seed=3)
    return model, observed


def test_settings_are_frozen_and_normalised():
    s = ObservationSettings(resolution=60_000, rv_bounds=[-20, 20], macroturbulence=3)
    assert s.rv_bounds == (-20.0, 20.0) and s.macroturbulence == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.resolution = 1  # type: ignore[misc]
    assert s.replace(resolution=50_000).resolution == 50_000 and s.resolution == 60_000


@pytest.mark.parametrize(("change", "message"), [
    ({"rv_bounds": (5, -5)}, "rv_bounds"), ({"vsini_bounds": (-1, 5)}, "vsini_bounds"),
    ({"continuum_degree": 25}, "continuum_degree=25"), ({"macroturbulence": "gray"},
                                                         "not understood"),
    ({"macroturbulence": 80}, "within 0..50"), ({"vmac_bounds": (0, 60)}, "vmac_bounds"),
    ({"rv_bounds": 5}, "pair")])
def test_bad_settings_name_the_value(change, message):
    with pytest.raises(FitError, match=message):
        ObservationSettings(**change)


def test_unknown_keyword_is_refused_with_the_known_ones():
    with pytest.raises(FitError, match="resolutoin"):
        ObservationSettings.of(resolutoin=5)


def test_settings_object_equals_the_keywords(case):
    model, observed = case
    settings = ObservationSettings(resolution=50_000, rv_bounds=(-10.0, 10.0))
    by_object = fit(model, observed, settings=settings, n_grid=2, n_starts=1)
    by_keywords = fit(model, observed, resolution=50_000, rv_bounds=(-10.0, 10.0), n_grid=2,
                      n_starts=1)
    assert by_object.values == by_keywords.values
    # a keyword overrides the object's field
    chain = build_chain(model, observed, settings, continuum_degree=None)
    assert chain.continuum_degree is None and chain.rv_bounds == (-10.0, 10.0)
    assert isinstance(ObservationChain.from_settings(model, observed, settings),
                      ObservationChain)


def test_sample_takes_the_same_settings(case):
    model, observed = case
    settings = ObservationSettings(resolution=50_000, rv_bounds=(-10.0, 10.0))
    start = fit(model, observed, settings=settings, n_grid=2, n_starts=1)
    result = sample(model, observed, settings=settings, initial=start, n_walkers=12,
                    n_steps=20, progress=False)
    assert result.method == "mcmc" and result.provenance["rv_bounds"] == [-10.0, 10.0]
