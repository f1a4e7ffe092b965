"""A network's σ and out-of-distribution limit, calibrated on real stars with reference labels.

A network's own σ describes its scatter on the syntheses it was trained on. On real stars the
error is larger (the syntheses are not the stars), so two things are measured on the benchmark
stars (``../shared/data/stars``) and stored in the checkpoint, where ``predict_spectrum`` uses
them:

* ``systematic_floor`` {label: σ_sys}: added in quadrature to the network's σ. For each label it
  is the root of  mean[(μ − y)² / (σ² + σ_sys² + σ_ref²)] = 1  over the *calibration stars*:
  high-resolution spectra (R ≥ 20 000) whose reference labels lie inside the training box and
  which the grid check does not flag (σ_ref: the reference's own uncertainty). Its coverage is
  judged leave-one-out: each star with the floor of the others.
* ``mismatch_limit``: the grid-consistency mismatch (:mod:`photosphere.nn.consistency`) above
  which a spectrum is flagged out of distribution: halfway (geometrically) between the largest
  mismatch of a calibration star and the smallest of a high-resolution star outside the box
  (M dwarfs), when those separate; otherwise the largest calibration mismatch × 1.1, with the
  overlap reported.

Every star is read exactly as ``photosphere nn predict FILE`` reads it (RV measured, input
calibration made without the star when the model uses one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.reference_stars import HIGH_RESOLUTION, LABELS, Star

#: σ_sys is measured on these labels (the benchmark's references); others keep the network's σ
FLOOR_LABELS = LABELS


@dataclass
class StarReading:
    """One star read by a network: its labels (value, network σ) with and without the input
    calibration, the grid-check mismatch, and the input image as prepared (before any input
    calibration)."""

    star: Star
    resolution: float
    mu: dict[str, float]
    sigma: dict[str, float]
    mu_raw: dict[str, float]
    sigma_raw: dict[str, float]
    mismatch: float
    in_box: bool
    windows: int
    image: np.ndarray = field(repr=False)
    at_edge: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    inverse: Any = field(default=None, repr=False)  # the input calibration it was read with

    @property
    def high_resolution(self) -> bool:
        return self.resolution >= HIGH_RESOLUTION

    def flag(self, limit: float) -> None:
        """Set ``flags`` for the mismatch ``limit``: ``out_of_distribution`` when the mismatch
        exceeds it or a label sits at the training box's edge."""
        ood = bool(self.at_edge) or (math.isfinite(self.mismatch) and self.mismatch > limit)
        self.flags = ["out_of_distribution"] if ood else []

    def error(self, name: str, raw: bool = False) -> float:
        return (self.mu_raw if raw else self.mu)[name] - self.star.reference[name][0]


def reference_in_box(star: Star, bounds: dict[str, Any]) -> bool:
    """Whether ``star``'s reference Teff, log g and [Fe/H] lie inside the training box."""
    for name in LABELS:
        if name in bounds:
            lo, hi = (float(v) for v in bounds[name])
            if not lo <= star.reference[name][0] <= hi:
                return False
    return True


def read_star(ck, star: Star, inverse) -> StarReading:
    """``star`` read by the network ``ck`` as ``nn predict`` reads it; ``inverse``: the input
    calibration to apply (made without the star), or None."""
    from ..datasets.reference_stars import resolution_of
    from .inputs import prepare_image
    from .predict import network, read_for_prediction, read_image
    from .rv import estimate_rv

    spectrum = read_for_prediction(star.path)
    resolution, _ = resolution_of(spectrum, star)
    rv = estimate_rv(spectrum, resolution)
    prepared = prepare_image(spectrum, np.asarray(ck.data["layout_wavelength"]),
                             ck.data.get("layout_medium", "air"), rv=rv,
                             by_window=ck.data.get("window_dropout", 0.0) > 0)
    names = ck.label_scaling.names
    run = network([(ck.model, ck.label_scaling, ck.temperature)])
    mu_raw, cov_raw = run(prepared.image)
    mu, cov, check = read_image(ck, prepared.image, run, inverse, resolution)
    flags = ["out_of_distribution"] if check.get("out_of_distribution") else []

    def named(values):
        return dict(zip(names, np.asarray(values, dtype=float).tolist(), strict=True))

    return StarReading(star, resolution, named(mu), named(np.sqrt(np.diag(cov))),
                       named(mu_raw), named(np.sqrt(np.diag(cov_raw))),
                       float(check.get("mismatch_rms", math.nan)),
                       reference_in_box(star, ck.data.get("bounds") or {}),
                       len(prepared.windows_used), prepared.image,
                       list(check.get("at_box_edge", [])), flags, inverse)


def solve_floor(error: np.ndarray, sigma: np.ndarray, ref_sigma: np.ndarray) -> float:
    """σ_sys ≥ 0 with mean[error² / (σ² + σ_sys² + ref²)] = 1 (0 when already ≤ 1)."""
    e2 = np.asarray(error, float) ** 2
    base = np.asarray(sigma, float) ** 2 + np.asarray(ref_sigma, float) ** 2
    ok = np.isfinite(e2) & np.isfinite(base)
    e2, base = e2[ok], base[ok]
    if len(e2) == 0 or np.mean(e2 / base) <= 1:
        return 0.0
    lo, hi = 0.0, math.sqrt(float(np.max(e2))) * 2 + 1e-12
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.mean(e2 / (base + mid ** 2)) > 1:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibration_stars(readings: list[StarReading]) -> list[StarReading]:
    """The stars σ_sys is measured on: high-resolution, reference inside the training box, not
    flagged by the grid check (with the limit in force when they were read)."""
    return [r for r in readings if r.high_resolution and r.in_box
            and "out_of_distribution" not in r.flags]


def floors(readings: list[StarReading], raw: bool = False) -> dict[str, Any]:
    """σ_sys per label over ``readings`` (all of them), and leave-one-out per star: the error,
    σ_total (network ⊕ σ_sys of the others ⊕ reference) and whether within 1σ / 2σ."""
    out: dict[str, Any] = {"floor": {}, "loo": {}}
    for name in FLOOR_LABELS:
        err = np.array([r.error(name, raw) for r in readings])
        sig = np.array([(r.sigma_raw if raw else r.sigma)[name] for r in readings])
        ref = np.array([r.star.reference[name][1] for r in readings])
        out["floor"][name] = solve_floor(err, sig, ref)
        rows = []
        for k in range(len(readings)):
            keep = np.arange(len(readings)) != k
            s_k = solve_floor(err[keep], sig[keep], ref[keep])
            total = math.sqrt(sig[k] ** 2 + s_k ** 2 + ref[k] ** 2)
            rows.append({"star": readings[k].star.star, "error": float(err[k]),
                         "sigma_total": total, "floor": s_k,
                         "within1": bool(abs(err[k]) <= total),
                         "within2": bool(abs(err[k]) <= 2 * total)})
        out["loo"][name] = rows
    return out


def mismatch_limit(readings: list[StarReading]) -> dict[str, Any]:
    """The out-of-distribution limit (module docstring) from the stars' mismatches."""
    inside = [r.mismatch for r in readings if r.high_resolution and r.in_box
              and math.isfinite(r.mismatch)]
    outside = [r.mismatch for r in readings if r.high_resolution and not r.in_box
               and math.isfinite(r.mismatch)]
    if not inside:
        return {"limit": None, "reason": "no high-resolution star inside the box"}
    top = max(inside)
    if outside and min(outside) > top:
        limit = math.sqrt(top * min(outside))
        return {"limit": limit, "separable": True, "max_inside": top,
                "min_outside": min(outside)}
    return {"limit": 1.1 * top, "separable": False, "max_inside": top,
            "min_outside": min(outside) if outside else None,
            "outside_below": sum(m <= 1.1 * top for m in outside)}


def read_all(ck, stars: list[Star], progress: bool = True
             ) -> tuple[list[StarReading], list[tuple[Star, str]]]:
    """Every star read by ``ck`` (input calibration made without the star); the stars that
    could not be read, with the reason."""
    from tqdm.auto import tqdm

    from ..errors import PhotosphereError
    from .predict import line_calibration_of, model_grid, model_input_calibration

    calibration = line_calibration_of(ck)
    readings, failed = [], []
    for star in tqdm(stars, desc="stars", disable=not progress):
        inverse = (None if calibration is None else model_input_calibration(
            ck, calibration.without(star.star), model_grid(ck)))
        try:
            readings.append(read_star(ck, star, inverse))
        except PhotosphereError as exc:
            failed.append((star, f"{type(exc).__name__}: {exc}"))
    return readings, failed


def calibrate(readings: list[StarReading]) -> dict[str, Any]:
    """The mismatch limit, then σ_sys on the calibration stars (module docstring): the record
    stored in a checkpoint as ``real_star_calibration`` (``systematic_floor`` and
    ``mismatch_limit`` beside it), with the leave-one-out floors per star."""
    limit = mismatch_limit(readings)
    if limit["limit"] is not None:
        for r in readings:
            r.flag(limit["limit"])
    chosen = calibration_stars(readings)
    found = floors(chosen)
    loo = {row["star"]: {} for row in found["loo"][FLOOR_LABELS[0]]}
    for name in FLOOR_LABELS:
        for row in found["loo"][name]:
            loo[row["star"]][name] = row["floor"]
    coverage = {name: [float(np.mean([r["within1"] for r in found["loo"][name]])),
                       float(np.mean([r["within2"] for r in found["loo"][name]]))]
                for name in FLOOR_LABELS} if chosen else {}
    return {"stars": [r.star.star for r in chosen], "floor": found["floor"],
            "mismatch": limit, "loo_floor": loo, "loo_coverage": coverage,
            "flagged": [r.star.star for r in readings if r.flags]}
