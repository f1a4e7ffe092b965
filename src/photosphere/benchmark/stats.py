"""Benchmark statistics: per-star differences and per-tier summaries.

A row is a flat dict (one star, one engine) with, per label ``L`` in teff, logg, feh:
``L_ref``, ``L_ref_err`` (the reference and its uncertainty), ``L`` and ``L_sigma`` (ours), and the
derived ``L_diff = L - L_ref`` and ``L_z = L_diff / σ_total`` with
``σ_total = sqrt(L_sigma² + L_ref_err²)``; plus ``engine``, ``tier`` and ``status`` ("ok" or
"error").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..datasets.reference_stars import LABELS, TIERS


def sigma_total(sigma: float, reference_err: float) -> float:
    """Our σ and the reference's uncertainty added in quadrature (NaN when ours is unknown)."""
    return math.hypot(sigma, reference_err) if math.isfinite(sigma) else math.nan


def add_differences(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``L_diff`` and ``L_z`` filled in for every label (NaN when not computable)."""
    out = dict(row)
    for name in LABELS:
        ours, ref = float(row.get(name, math.nan)), float(row.get(f"{name}_ref", math.nan))
        diff = ours - ref
        total = sigma_total(float(row.get(f"{name}_sigma", math.nan)),
                            float(row.get(f"{name}_ref_err", math.nan)))
        out[f"{name}_diff"] = diff
        out[f"{name}_z"] = diff / total if total > 0 else math.nan
    return out


def summarise_label(rows: Sequence[dict[str, Any]], name: str) -> dict[str, float]:
    """N, mean and median |L_diff|, and the fractions with |L_z| ≤ 1 and ≤ 2, over the rows
    whose ``status`` is "ok" and whose difference is finite. A row without a finite z (no σ)
    counts as not covered."""
    diffs, zs = [], []
    for row in rows:
        if row.get("status") != "ok":
            continue
        diff = float(row.get(f"{name}_diff", math.nan))
        if math.isfinite(diff):
            diffs.append(abs(diff))
            zs.append(abs(float(row.get(f"{name}_z", math.nan))))
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean_abs": math.nan, "median_abs": math.nan, "within_1sigma": math.nan,
                "within_2sigma": math.nan}
    z = np.array(zs)
    covered = np.isfinite(z)
    return {"n": n, "mean_abs": float(np.mean(diffs)), "median_abs": float(np.median(diffs)),
            "within_1sigma": float(np.sum(covered & (z <= 1)) / n),
            "within_2sigma": float(np.sum(covered & (z <= 2)) / n)}


def _groups(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        for tier in (row["tier"], "all"):
            groups.setdefault((row["engine"], tier), []).append(row)
    return groups


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per engine, tier (in :data:`TIERS` order, then "all") and label:
    ``engine, tier, label, n, n_stars, n_errors, mean_abs, median_abs, within_1sigma,
    within_2sigma`` (see :func:`summarise_label`). Tiers without stars are left out."""
    order = {t: i for i, t in enumerate((*TIERS, "all"))}
    groups = _groups(rows)
    out = []
    for engine, tier in sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1])):
        members = groups[(engine, tier)]
        n_errors = sum(r.get("status") != "ok" for r in members)
        for name in LABELS:
            out.append({"engine": engine, "tier": tier, "label": name,
                        "n_stars": len(members), "n_errors": n_errors,
                        **summarise_label(members, name)})
    return out
