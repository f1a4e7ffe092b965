"""The systematic floor σ_sys: what a model's own σ miss on real stars, measured on the benchmark.

A fit's σ (even with the misfit jitter and the model error marginalised) describe the noise and
the misfit of one spectrum; the errors real stars show also come from the physics (line data,
1D LTE, the atmosphere grid) and are shared by all stars. σ_sys is the amount that, added in
quadrature to our σ and the reference's uncertainty, gives the normalised differences
``Δ / sqrt(σ² + σ_ref² + σ_sys²)`` a unit mean square over the stars:

    mean_i  Δ_i² / (σ_i² + σ_ref,i² + σ_sys²) = 1        (σ_sys = 0 when already ≤ 1)

solved by bisection (the left side falls monotonically in σ_sys). Judged leave-one-out: the floor
applied to star i is measured on the other stars only, so no star calibrates its own σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..datasets.reference_stars import LABELS


def floor_for(diff: Sequence[float], sigma: Sequence[float], reference_err: Sequence[float]
              ) -> float:
    """σ_sys (label units) for the given differences, our σ and the reference uncertainties
    (equal-length sequences; non-finite entries are skipped). NaN with fewer than 2 stars."""
    d, s, r = (np.asarray(x, float) for x in (diff, sigma, reference_err))
    ok = np.isfinite(d) & np.isfinite(s) & np.isfinite(r)
    d, var = d[ok], s[ok] ** 2 + r[ok] ** 2
    if d.size < 2:
        return math.nan

    def excess(floor: float) -> float:
        return float(np.mean(d**2 / (var + floor**2))) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, float(np.max(np.abs(d))) + 1e-12
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _columns(rows: Sequence[dict[str, Any]], name: str) -> tuple[np.ndarray, ...]:
    ok = [r for r in rows if r.get("status") == "ok"]
    return (np.array([float(r.get(f"{name}_diff", math.nan)) for r in ok]),
            np.array([float(r.get(f"{name}_sigma", math.nan)) for r in ok]),
            np.array([float(r.get(f"{name}_ref_err", math.nan)) for r in ok]))


def systematic_floor(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``{label: σ_sys}`` from every "ok" row (rows as in :mod:`.stats`, with ``L_diff``)."""
    return {name: floor_for(*_columns(rows, name)) for name in LABELS}


def with_leave_one_out_floor(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with ``L_sigma_stat`` (the engine's σ), ``L_sigma_sys`` (the floor measured on
    the OTHER ok rows) and ``L_sigma`` replaced by ``σ_stat ⊕ σ_sys``, then the differences and
    z recomputed (:func:`.stats.add_differences`). Error rows pass unchanged."""
    from .stats import add_differences

    ok_index = [i for i, r in enumerate(rows) if r.get("status") == "ok"]
    out = [dict(r) for r in rows]
    for i in ok_index:
        others = [rows[j] for j in ok_index if j != i]
        for name in LABELS:
            stat = float(rows[i].get(f"{name}_sigma", math.nan))
            floor = floor_for(*_columns(others, name)) if others else math.nan
            out[i][f"{name}_sigma_stat"] = stat
            out[i][f"{name}_sigma_sys"] = floor
            out[i][f"{name}_sigma"] = math.hypot(stat, floor) if math.isfinite(floor) else stat
        out[i] = add_differences(out[i])
    return out


def leave_one_out_by_group(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`with_leave_one_out_floor` within each (engine, tier) group (the physics misses
    differently in dwarfs, giants and M dwarfs); the row order is kept."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((str(r.get("engine")), str(r.get("tier"))), []).append(i)
    out = list(rows)
    for members in groups.values():
        for i, row in zip(members, with_leave_one_out_floor([rows[i] for i in members]),
                          strict=True):
            out[i] = row
    return out
