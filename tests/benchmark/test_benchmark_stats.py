"""Differences, σ_total and the per-tier summary, on rows with known numbers."""

from __future__ import annotations

import math

import pytest

from photosphere.benchmark.stats import add_differences, sigma_total, summarise, summarise_label


def _row(engine, tier, teff, teff_sigma, teff_ref=5000.0, teff_ref_err=30.0, status="ok"):
    row = {"engine": engine, "tier": tier, "status": status,
           "teff": teff, "teff_sigma": teff_sigma, "teff_ref": teff_ref,
           "teff_ref_err": teff_ref_err,
           "logg": 4.5, "logg_sigma": 0.1, "logg_ref": 4.4, "logg_ref_err": 0.0,
           "feh": math.nan, "feh_sigma": math.nan, "feh_ref": 0.0, "feh_ref_err": 0.1}
    return add_differences(row)


def test_differences_and_sigma_total():
    assert sigma_total(40.0, 30.0) == 50.0
    assert math.isnan(sigma_total(math.nan, 30.0))
    row = _row("fit", "FGK", 5100.0, 40.0)
    assert row["teff_diff"] == 100.0 and row["teff_z"] == 2.0
    assert row["logg_diff"] == pytest.approx(0.1) and row["logg_z"] == pytest.approx(1.0)
    assert math.isnan(row["feh_diff"]) and math.isnan(row["feh_z"])


def test_summary_of_one_label():
    rows = [_row("fit", "FGK", 5040.0, 40.0),    # z 0.8
            _row("fit", "FGK", 4920.0, 40.0),    # z -1.6
            _row("fit", "FGK", 5300.0, 40.0),    # z 6
            _row("fit", "FGK", 5010.0, math.nan),  # no σ: not covered
            _row("fit", "FGK", math.nan, math.nan, status="error")]
    got = summarise_label(rows, "teff")
    assert got == {"n": 4, "mean_abs": 107.5, "median_abs": 60.0, "within_1sigma": 0.25,
                   "within_2sigma": 0.5}
    empty = summarise_label(rows[4:], "teff")
    assert empty["n"] == 0 and math.isnan(empty["mean_abs"])


def test_summary_groups_by_engine_tier_and_all():
    rows = [_row("fit", "giant", 5100.0, 40.0), _row("fit", "FGK", 5040.0, 40.0),
            _row("fit", "FGK", 4900.0, 40.0, status="error"), _row("nn", "FGK", 4950.0, 40.0)]
    summary = summarise(rows)
    keys = [(s["engine"], s["tier"], s["label"]) for s in summary]
    assert keys[:6] == [("fit", "FGK", "teff"), ("fit", "FGK", "logg"), ("fit", "FGK", "feh"),
                        ("fit", "giant", "teff"), ("fit", "giant", "logg"),
                        ("fit", "giant", "feh")]
    assert keys[6:9] == [("fit", "all", n) for n in ("teff", "logg", "feh")]
    assert keys[9][:2] == ("nn", "FGK") and len(summary) == 15
    fit_all = summary[6]
    assert (fit_all["n_stars"], fit_all["n_errors"], fit_all["n"]) == (3, 1, 2)
    assert fit_all["mean_abs"] == 70.0 and fit_all["within_2sigma"] == 1.0
    assert fit_all["within_1sigma"] == 0.5
    assert summary[5]["n"] == 0    # [Fe/H] of the giant is NaN
