"""sigma_floor: a systematic floor added in quadrature to a Result's σ (docs/fitting.md)."""

from __future__ import annotations

import math

import numpy as np

from photosphere.infer.optimize import sigma_floor
from photosphere.result import Result


def _result() -> Result:
    return Result(values={"teff": 5780.0, "feh": -0.08, "vsini": 1.9},
                  sigma={"teff": 7.0, "feh": 0.008, "vsini": float("nan")},
                  free=("teff", "feh"), covariance=np.diag([49.0, 6.4e-5]), chi2=100.0,
                  n_pixels=120, n_parameters=4, flags={"converged": True})


def test_floor_adds_in_quadrature_and_is_recorded():
    floored = sigma_floor(_result(), {"feh": 0.10})
    assert math.isclose(floored.sigma["feh"], math.hypot(0.008, 0.10))
    assert floored.sigma["teff"] == 7.0 and floored.values == _result().values
    assert floored.flags == {"converged": True, "systematic_floor": {"feh": 0.10},
                             "sigma_stat": {"feh": 0.008}}
    entry = floored.to_dict()["labels"]["feh"]
    assert entry["sigma_stat"] == 0.008 and entry["sigma_sys"] == 0.10
    assert math.isclose(entry["sigma"], math.hypot(0.008, 0.10))
    assert "sigma_stat" not in floored.to_dict()["labels"]["teff"]


def test_fixed_parameters_and_unknown_names_are_left_alone():
    floored = sigma_floor(_result(), {"vsini": 1.0, "logg": 0.1})
    assert math.isnan(floored.sigma["vsini"]) and "logg" not in floored.sigma
    assert _result().sigma["feh"] == 0.008  # the input is not changed
