"""Flags of an estimate and the resolving power an engine uses."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.benchmark.engines import (
    label_flags,
    make_engines,
    reference_flags,
    resolution_of,
)
from photosphere.datasets.reference_stars import Star
from photosphere.errors import BenchmarkError
from photosphere.spectrum import Spectrum, SpectrumMeta

NODES = {"teff": np.arange(4000.0, 7001.0, 250.0), "logg": np.arange(1.0, 5.01, 0.5)}
BOUNDS = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0)}


@pytest.mark.parametrize(("labels", "flags"), [
    ({"teff": (5750.0, 2.0), "logg": (4.3, 0.01)}, ["at_node=teff"]),    # pinned on a node
    ({"teff": (5754.0, 2.0), "logg": (4.3, 0.01)}, ["at_node=teff"]),    # 4 K off: 1.6 % of 250
    ({"teff": (5760.0, 2.0), "logg": (4.3, 0.01)}, []),                  # 10 K off: 4 %
    ({"teff": (5750.0, 40.0), "logg": (4.3, 0.01)}, []),                 # σ 16 % of the spacing
    ({"teff": (5750.0, np.nan), "logg": (4.3, 0.01)}, ["at_node=teff"]),  # no σ at all
    ({"teff": (5750.0, 2.0), "logg": (5.0, 0.001)}, ["at_bound=logg", "at_node=teff"]),
    ({"teff": (6998.0, 50.0), "logg": (4.5, 0.001)}, ["at_bound=teff", "at_node=logg"]),
])
def test_label_flags(labels, flags):
    assert label_flags(labels, BOUNDS, NODES) == flags


def test_label_flags_without_a_grid():
    assert label_flags({"teff": (5750.0, 1.0)}) == []
    assert label_flags({"teff": (4000.0, 1.0)}, BOUNDS) == ["at_bound=teff"]


def _star(resolution=47000.0):
    return Star(star="S", file="s.txt", path=None, instrument="I", resolution=resolution,
                reference={"teff": (5772.0, 20.0), "logg": (4.44, 0.02), "feh": (0.0, 0.05)})


def test_resolution_from_the_header_else_the_table():
    wave = np.linspace(5000.0, 5010.0, 50)
    plain = Spectrum.from_arrays(wave, np.ones(50), medium="air")
    assert resolution_of(plain, _star()) == (47000.0, "table")
    meta = SpectrumMeta(extra={"resolution": 22500})
    assert resolution_of(plain.replace(meta=meta), _star()) == (22500.0, "header")
    meta = SpectrumMeta(extra={"resolution": "n/a", "resolving_power": 0})
    assert resolution_of(plain.replace(meta=meta), _star()) == (47000.0, "table")


def test_engine_names():
    assert [e.name for e in make_engines("all")] == ["fit", "nn"]
    assert [e.name for e in make_engines("nn")] == ["nn"]
    with pytest.raises(BenchmarkError, match="engine 'mcmc' is not known"):
        make_engines("mcmc")


def test_reference_outside_the_box():
    box = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0), "feh": (-2.0, 0.5)}
    assert reference_flags(_star(), box) == []
    cool = Star(star="M", file="m.txt", path=None, instrument="I", resolution=60000.0,
                reference={"teff": (3228.0, 60.0), "logg": (5.09, 0.05), "feh": (-0.4, 0.1)})
    assert reference_flags(cool, box) == ["ref_outside=teff,logg"]
    assert reference_flags(cool, {}) == []


def test_the_fit_engine_judges_a_calibrated_model_without_the_star(tmp_path, monkeypatch):
    """A model calibrated on real stars (``without``) is used without the judged star."""
    from analytic_model import AnalyticModel, simulate
    from photosphere.benchmark.engines import FitEngine

    left_out = []

    class Calibrated(AnalyticModel):
        def without(self, star):
            left_out.append(star)
            return self

    truth = {"teff": 5600.0, "logg": 4.2, "feh": -0.1, "rv": 0.0}
    spec, _ = simulate(AnalyticModel(), truth, np.linspace(5005, 5095, 4000), snr=200.0)
    monkeypatch.setattr("photosphere.infer.batch.prepare_spectrum", lambda path: spec)
    star = Star(star="S", file="s.txt", path=tmp_path / "s.txt", instrument="I",
                resolution=60000.0,
                reference={"teff": (5600.0, 50.0), "logg": (4.2, 0.1), "feh": (-0.1, 0.1)})
    engine = FitEngine("calibrated")
    engine._models["calibrated"] = Calibrated()
    estimate = engine(star)
    assert left_out == ["S"]  # by the star, so every spectrum of it is left out
    assert abs(estimate.labels["teff"][0] - 5600.0) < 100.0
