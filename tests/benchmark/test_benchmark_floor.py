"""The systematic floor: unit mean-square normalised errors, leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from photosphere.benchmark.floor import floor_for, systematic_floor, with_leave_one_out_floor
from photosphere.benchmark.stats import add_differences


def test_floor_gives_unit_mean_square_z():
    rng = np.random.default_rng(1)
    diff = rng.normal(0, 100.0, 400)            # errors of 100 K
    sigma = np.full(400, 10.0)                   # formal σ of 10 K
    ref = np.full(400, 20.0)
    floor = floor_for(diff, sigma, ref)
    z2 = diff**2 / (sigma**2 + ref**2 + floor**2)
    assert np.mean(z2) == pytest.approx(1.0, abs=1e-6)
    assert floor == pytest.approx(np.sqrt(100.0**2 - 10.0**2 - 20.0**2), rel=0.1)


def test_no_floor_when_sigma_already_cover_and_nan_without_enough_stars():
    assert floor_for([1.0, -1.0, 0.5], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]) == 0.0
    assert math.isnan(floor_for([100.0], [1.0], [1.0]))
    assert math.isnan(floor_for([100.0, math.nan], [1.0, 1.0], [1.0, 1.0]))


def _row(i, teff_diff, sigma=5.0, status="ok"):
    row = {"star": f"s{i}", "engine": "fit", "tier": "FGK", "status": status}
    for name, d, ref_err in (("teff", teff_diff, 20.0), ("logg", 0.1, 0.05), ("feh", 0.05, 0.05)):
        row.update({f"{name}_ref": 1.0, f"{name}_ref_err": ref_err, name: 1.0 + d,
                    f"{name}_sigma": sigma if name == "teff" else 0.01})
    return add_differences(row)


def test_leave_one_out_never_uses_the_star_itself():
    rows = [_row(0, 300.0), _row(1, 50.0), _row(2, -60.0), _row(3, 40.0),
            _row(4, 0.0, status="error")]
    out = with_leave_one_out_floor(rows)
    # star 0's floor comes from stars 1-3 (errors ~50 K): small, so star 0 stays far off
    others = floor_for([50.0, -60.0, 40.0], [5.0] * 3, [20.0] * 3)
    assert out[0]["teff_sigma_sys"] == pytest.approx(others)
    assert out[0]["teff_sigma"] == pytest.approx(math.hypot(5.0, others))
    assert abs(out[0]["teff_z"]) > 3
    # star 1's floor includes star 0's 300 K error: large
    assert out[1]["teff_sigma_sys"] > 100
    assert out[0]["teff_sigma_stat"] == 5.0
    assert out[4] == rows[4]
    whole = systematic_floor(rows)
    assert whole["teff"] > others and set(whole) == {"teff", "logg", "feh"}
