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
* ``systematic_floor_snr`` (``nn calibrate-stars --snr 20 50 100``): σ_sys measured again on the
  calibration stars' images degraded with white noise to each S/N (``draws`` noise realisations
  each), because a network's σ need not grow with the noise as its error does. ``nn predict``
  estimates the input's S/N and interpolates in log S/N between these floors and σ_sys, which
  belongs to the stars' own S/N (their median, ``native_snr``): :func:`floor_at`.

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
    resolution_outside: bool = False  # R outside the trained range (nn.predict._resolution_check)

    @property
    def high_resolution(self) -> bool:
        return self.resolution >= HIGH_RESOLUTION

    def flag(self, limit: float) -> None:
        """Set ``flags`` for the mismatch ``limit``: ``out_of_distribution`` when the mismatch
        exceeds it, a label sits at the training box's edge or R is outside the trained range."""
        ood = (bool(self.at_edge) or self.resolution_outside
               or (math.isfinite(self.mismatch) and self.mismatch > limit))
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
    run = network([ck])
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
                       list(check.get("at_box_edge", [])), flags, inverse,
                       bool((check.get("resolution") or {}).get("outside")))


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
    """σ_sys per label over ``readings`` (all of them), and leave-one-out per reading: the
    error, σ_total (network ⊕ σ_sys of the other stars' readings ⊕ reference) and whether
    within 1σ / 2σ."""
    out: dict[str, Any] = {"floor": {}, "loo": {}}
    for name in FLOOR_LABELS:
        err = np.array([r.error(name, raw) for r in readings])
        sig = np.array([(r.sigma_raw if raw else r.sigma)[name] for r in readings])
        ref = np.array([r.star.reference[name][1] for r in readings])
        out["floor"][name] = solve_floor(err, sig, ref)
        rows = []
        stars = np.array([r.star.star for r in readings])
        for k in range(len(readings)):
            keep = stars != stars[k]  # every reading of the star out (e.g. its noisy copies)
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


def image_snr(image: np.ndarray) -> float:
    """S/N per pixel of a prepared image: the median over its non-blank rows of DER_SNR."""
    from .inversion_bias import row_noise

    sigma = row_noise(image)
    sigma = sigma[sigma > 0]
    return float(1.0 / np.median(sigma)) if len(sigma) else math.inf


def degraded(reading: StarReading, snr: float, seed: int) -> np.ndarray:
    """``reading``'s prepared image with white noise added to bring each row to ``snr`` (rows
    already noisier keep theirs), rows normalised again. Noise goes only where the image holds
    data, as in a real spectrum of that S/N: blank rows, pixels filled with the continuum by
    ``prepare_image`` (exactly 1) and zero padding (exactly 0: the CCD gap of HARPS s1d files,
    which the default network reads as it is) stay as they are."""
    from .inversion_bias import row_noise
    from .twin import noisy_copies

    img = np.asarray(reading.image, dtype=float)
    add = np.sqrt(np.clip(1.0 / snr ** 2 - row_noise(img) ** 2, 0.0, None))
    return noisy_copies(img, add, [seed], keep=(img != 1.0) & (img != 0.0))[0]


def snr_floors(ck, chosen: list[StarReading], levels: list[float], draws: int = 2,
               progress: bool = True) -> dict[str, Any]:
    """σ_sys per label at each S/N of ``levels``: the ``chosen`` (calibration) stars degraded
    to it, ``draws`` noise realisations each, read as ``nn predict`` reads them (each through
    the input calibration it was read with, made without it), with leave-one-out floors and
    coverage per level (module docstring)."""
    import dataclasses
    import zlib

    from tqdm.auto import tqdm

    from .predict import network, read_image

    run = network([ck])
    names = ck.label_scaling.names
    levels = sorted(float(v) for v in levels)
    out: dict[str, Any] = {"snr": levels, "draws": draws,
                           "native_snr": float(np.median([image_snr(r.image) for r in chosen])),
                           "floor": {n: [] for n in FLOOR_LABELS},
                           "loo_floor": {r.star.star: {n: [] for n in FLOOR_LABELS}
                                         for r in chosen},
                           "loo_coverage": {}}
    for level in tqdm(levels, desc="S/N levels", disable=not progress):
        noisy = []
        for r in chosen:
            for d in range(draws):
                seed = zlib.crc32(f"{r.star.star}|{level:g}|{d}".encode())
                mu, cov, _ = read_image(ck, degraded(r, level, seed), run, r.inverse,
                                        r.resolution, check_grid=False)
                sig = np.sqrt(np.diag(cov))
                noisy.append(dataclasses.replace(
                    r, mu=dict(zip(names, np.asarray(mu, float).tolist(), strict=True)),
                    sigma=dict(zip(names, sig.tolist(), strict=True))))
        found = floors(noisy)
        for n in FLOOR_LABELS:
            out["floor"][n].append(found["floor"][n])
            for row in found["loo"][n][::draws]:
                out["loo_floor"][row["star"]][n].append(row["floor"])
        out["loo_coverage"][f"{level:g}"] = {
            n: [float(np.mean([x["within1"] for x in found["loo"][n]])),
                float(np.mean([x["within2"] for x in found["loo"][n]]))] for n in FLOOR_LABELS}
    return out


def floor_at(native: dict[str, float] | None, by_snr: dict[str, Any] | None,
             snr: float) -> dict[str, float] | None:
    """σ_sys for a spectrum of S/N ``snr`` from ``native`` (measured on the calibration stars at
    their own S/N, ``by_snr["native_snr"]``) and ``by_snr`` ({"snr": levels, "floor": {label:
    values}, "native_snr": S/N}): per label, interpolated in log S/N through the levels and the
    native point, held constant beyond them; where the native S/N is not above the levels, the
    larger of the native floor and the levels' interpolation. ``native`` alone when no S/N
    floors."""
    if not by_snr:
        return native
    native = dict(native or {})
    levels = [float(v) for v in by_snr["snr"]]
    top = float(by_snr.get("native_snr") or 0.0)
    above = top > max(levels)
    x = math.log(snr) if math.isfinite(snr) and snr > 0 else math.log(max([*levels, top]))
    out = dict(native)
    for name, values in by_snr["floor"].items():
        own = float(native.get(name, 0.0))
        xs, ys = [math.log(v) for v in levels], [float(v) for v in values]
        if above:
            xs, ys = [*xs, math.log(top)], [*ys, own]
        at = float(np.interp(x, xs, ys))
        out[name] = at if above else max(own, at)
    return out
