"""The optical network on the real benchmark stars: the synthetic-to-real gap, the methods that
close it (compared leave-one-out), σ against S/N, and the out-of-distribution check.

For every star of ``stars/labels.csv`` (read exactly as ``photosphere nn predict FILE`` reads it,
``photosphere.nn.real_stars.read_all``):

* **gap**: the network on the real spectrum against the network on the star's *twin*: the
  emulator the network was trained on (bare or calibrated) at the reference Teff, log g, [Fe/H]
  ([α/Fe] and vmic from the Galactic relations),
  imaged at the star's R with vsini (table, else 2 km/s) and ζ 3.5 km/s (the middle of the
  training range), the same windows blanked, and white noise at the real image's S/N per row
  (DER_SNR), ``--draws`` seeds. gap = real − twin; twin − reference is the network's own error.
* **methods**, each judged leave-one-out on the high-resolution stars inside the training box:
  ``raw`` (the network on the spectrum as read), ``exponent`` (the input moved into the
  syntheses' space by inverting the emulator's line calibration made without the star),
  ``input`` (that, refined by the ratio of the bare to the calibrated emulator imaged at the
  network's labels, masked and clipped pixels read from the bare model: what ``nn predict``
  does, ``photosphere.nn.input_calibration``), ``affine`` (raw, then y = a + b μ per label
  fitted on the other stars' references) and ``input+affine``. For a network trained on the
  *calibrated* emulator there is no exponent to invert: ``ratio`` (the input × T(θ)/C₋ₖ(θ),
  the training model over the calibration made without the star, no pixel masked or clipped)
  takes its place, ``masked`` masks and clips, and ``input`` (what ``nn predict`` does) then
  removes the network's own inversion bias with its training model
  (``photosphere.nn.inversion_bias``); ``raw`` and ``affine`` are then not leave-one-out (the
  training model saw every calibration star).
* **σ vs S/N** (``--snr 20 50 100``): the input-calibrated images degraded with white noise to
  each S/N, ``--draws`` seeds: mean |error|, mean network σ, and the fraction within 1σ / 2σ of
  σ_total = σ ⊕ σ_sys (leave-one-out) ⊕ σ_ref.
* **out of distribution**: every star's grid-consistency mismatch, the limit
  (``real_stars.mismatch_limit``) and which stars it flags.

    PYTHONPATH=src PHOTOSPHERE_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/nn_optical.py --model MODEL.pt [--snr 20 50 100] [--draws 4] \\
        [--markdown] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib

import numpy as np
import torch

from _shared import SHARED
from photosphere.datasets.reference_stars import LABELS, read_stars
from photosphere.nn.data import DataConfig, EchelleSimulator, StoredLayout, complete_labels
from photosphere.nn.inversion_bias import BIAS_ROUNDS, row_noise
from photosphere.nn.predict import (
    line_calibration_of,
    load_model,
    model_grid,
    model_input_calibration,
    network,
    read_image,
    trained_calibrated,
)
from photosphere.nn.real_stars import calibrate, calibration_stars, degraded, read_all
from photosphere.nn.train import source_from_grid

TWIN_VSINI = 2.0  # km/s, when the table gives none
TWIN_ZETA = 3.5  # km/s, the middle of the training range 0-7


def predict(ck, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) μ and σ of the network for images (n, n_orders, n_pixels)."""
    run = network([ck])
    found = [run(img) for img in images]
    return (np.array([m for m, _ in found]),
            np.array([np.sqrt(np.diag(c)) for _, c in found]))


def noisy(image: np.ndarray, snr_rows: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """``draws`` copies of ``image`` with white noise σ = 1 / S/N per row (blank rows kept)."""
    rng = np.random.default_rng(seed)
    blank = np.all(image == 1.0, axis=-1)
    out = image[None] + rng.standard_normal((draws, *image.shape)) / snr_rows[None, :, None]
    out[:, blank] = 1.0
    return out.astype(np.float32)


def row_snr(image: np.ndarray) -> np.ndarray:
    """DER_SNR per row (blank rows: inf)."""
    sigma = row_noise(image)
    return np.where(sigma > 0, 1.0 / np.where(sigma > 0, sigma, 1.0), np.inf)


def twin_images(ck, sim: EchelleSimulator, reading, draws: int) -> np.ndarray:
    """The star's twin, imaged as its real image: (draws, n_orders, n_pixels)."""
    from photosphere.nn.data import normalise_orders

    cfg = DataConfig.from_dict(ck.data)
    star = reading.star
    est = [star.reference["teff"][0], star.reference["logg"][0], star.reference["feh"][0],
           star.vsini if star.vsini is not None else TWIN_VSINI]
    if "alpha" in cfg.label_names:
        est.append(0.0)  # replaced by the trend below
    labels = complete_labels(np.array(est), cfg)
    if "alpha" in cfg.label_names:
        from photosphere.grids.tied_labels import alpha_trend

        labels[0, cfg.columns.index("alpha")] = float(alpha_trend(torch.tensor(est[2])))
    for j, name in enumerate(LABELS):  # inside the source (its bounds)
        lo, hi = sim.source.bounds[name]
        labels[0, j] = min(max(float(labels[0, j]), lo), hi)
    with torch.no_grad():
        clean = sim.images(labels, resolution=torch.tensor([reading.resolution]),
                           macroturbulence=torch.tensor([TWIN_ZETA]))
    image = normalise_orders(clean).numpy()[0]
    blank = np.all(reading.image == 1.0, axis=-1)
    image[blank] = 1.0
    # crc32, not hash(): str hashes change from process to process (PYTHONHASHSEED)
    return noisy(image, row_snr(reading.image), draws, seed=zlib.crc32(star.star.encode()))


def affine_loo(readings, name: str, raw: bool) -> list[float]:
    """Leave-one-out y ≈ a + b μ per star (fitted on the other stars' references)."""
    mu = np.array([(r.mu_raw if raw else r.mu)[name] for r in readings])
    ref = np.array([r.star.reference[name][0] for r in readings])
    out = []
    for k in range(len(readings)):
        keep = np.arange(len(readings)) != k
        b, a = np.polyfit(mu[keep], ref[keep], 1)
        out.append(float(a + b * mu[k]))
    return out


def read_through(ck, chosen, kind: str) -> list[dict[str, float]]:
    """Each star read through a reduced input calibration made without the star: ``exponent``
    (the exponent inversion alone; networks trained on the bare emulator), ``ratio`` (the
    rounds of input × T(θ)/C₋ₖ(θ) with no pixel masked or clipped), ``masked`` (masked and
    clipped, without removing the network's inversion bias: ``input`` of a network trained on
    the calibrated emulator without its last step) or ``input+bias`` (``input`` of a network
    trained on the bare emulator, then that bias removed, ``photosphere.nn.inversion_bias``)."""
    import dataclasses

    from photosphere.nn.input_calibration import InputCalibration
    calibration = line_calibration_of(ck)
    names = ck.label_scaling.names
    run = network([ck])
    out = []
    for r in chosen:
        without = calibration.without(r.star.star)
        if kind == "exponent":
            inv = InputCalibration.of(without, np.asarray(ck.data["layout_wavelength"]))
        else:
            inv = model_input_calibration(ck, without, model_grid(ck))
            rounds = BIAS_ROUNDS if kind == "input+bias" else 0  # ratio, masked: none
            inv = dataclasses.replace(inv, bias_rounds=rounds)
            if kind == "ratio":
                inv = dataclasses.replace(inv, mask=np.zeros_like(inv.mask), clip=math.inf)
        mu = inv.read(r.image, run, names, r.resolution)[1]
        out.append(dict(zip(names, mu.tolist(), strict=True)))
    return out


def method_table(chosen, reduced: dict[str, list]) -> dict[str, dict[str, float]]:
    """Mean |error| per label for each method over ``chosen`` stars; ``reduced``: the readings
    of :func:`read_through` by kind."""
    table: dict[str, dict[str, float]] = {}
    for method in ("raw", *reduced, "input", "affine", "input+affine"):
        row = {}
        for name in LABELS:
            raw = method in ("raw", "affine")
            if "affine" in method:
                values = affine_loo(chosen, name, raw)
            elif method in reduced:
                values = [e[name] for e in reduced[method]]
            else:
                values = [(r.mu_raw if raw else r.mu)[name] for r in chosen]
            ref = [r.star.reference[name][0] for r in chosen]
            row[name] = float(np.mean(np.abs(np.array(values) - np.array(ref))))
        table[method] = row
    return table


def snr_sweep(ck, chosen, record, levels, draws) -> list[dict]:
    """The stars' prepared images degraded to each S/N (``real_stars.degraded``, the noise
    ``nn calibrate-stars --snr`` adds), read as ``nn predict`` reads them."""
    rows = []
    floor_of = record["loo_floor"]
    run = network([ck])
    names = ck.label_scaling.names
    for snr in levels:
        errs, sig, in1, in2 = ({n: [] for n in LABELS} for _ in range(4))
        for r in chosen:
            for d in range(draws):  # the noise of nn calibrate-stars --snr (rows renormalised)
                img = degraded(r, snr, zlib.crc32(f"{r.star.star}|{snr:g}|{d}".encode()))
                mu, cov, _ = read_image(ck, img, run, r.inverse, r.resolution,
                                        check_grid=False)
                s = np.sqrt(np.diag(cov))
                for n in LABELS:
                    i = names.index(n)
                    e = mu[i] - r.star.reference[n][0]
                    total = math.sqrt(s[i] ** 2 + floor_of.get(r.star.star, {}).get(n, 0.0) ** 2
                                      + r.star.reference[n][1] ** 2)
                    errs[n].append(abs(e))
                    sig[n].append(s[i])
                    in1[n].append(abs(e) <= total)
                    in2[n].append(abs(e) <= 2 * total)
        rows.append({"snr": snr, **{f"{n}_mae": float(np.mean(errs[n])) for n in LABELS},
                     **{f"{n}_sigma": float(np.mean(sig[n])) for n in LABELS},
                     **{f"{n}_in1": float(np.mean(in1[n])) for n in LABELS},
                     **{f"{n}_in2": float(np.mean(in2[n])) for n in LABELS}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint or shipped model name")
    ap.add_argument("--snr", type=float, nargs="*", default=[])
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write everything measured here")
    args = ap.parse_args()
    ck = load_model(args.model)
    stars = read_stars(SHARED / "stars" / "labels.csv")
    t0 = time.time()
    readings, failed = read_all(ck, stars)
    record = calibrate(readings)
    chosen = calibration_stars(readings)
    sep = "|" if args.markdown else " "
    print(f"model {args.model}; {len(readings)} stars read ({len(failed)} not) in "
          f"{time.time() - t0:.0f} s; calibration stars: {len(chosen)}")
    for s, why in failed:
        print(f"  not read: {s.star}: {why[:120]}")

    # per star
    source = source_from_grid(model_grid(ck), calibrated=trained_calibrated(ck))
    cfg = DataConfig.from_dict(ck.data)
    sim = EchelleSimulator(source, StoredLayout.of(ck), cfg.nominal_resolution, cfg.epsilon,
                           cfg.fixed, cfg.columns)
    print(sep.join(["star", "tier", "R", "win", "mismatch", "flags",
                    *(f"{n} ref/raw/input/twin" for n in LABELS)]))
    gaps = []
    for r in readings:
        twin = None
        if r.high_resolution and r.in_box:
            mu_t, _ = predict(ck, twin_images(ck, sim, r, args.draws))
            twin = mu_t.mean(axis=0)
            names = ck.label_scaling.names
            gaps.append({n: (r.mu_raw[n] - twin[names.index(n)],
                             twin[names.index(n)] - r.star.reference[n][0]) for n in LABELS})
        cells = [r.star.star[:28], r.star.tier(r.resolution), f"{r.resolution:.0f}",
                 str(r.windows), f"{r.mismatch:.4f}", " ".join(r.flags) or "-"]
        for n in LABELS:
            fmt = "{:.0f}" if n == "teff" else "{:.2f}"
            t = fmt.format(twin[ck.label_scaling.names.index(n)]) if twin is not None else "-"
            cells.append("/".join([fmt.format(r.star.reference[n][0]), fmt.format(r.mu_raw[n]),
                                   fmt.format(r.mu[n]), t]))
        print(sep.join(cells))

    print("\nmean |error| on the calibration stars (high-res, inside the box, not flagged), "
          "leave-one-out:")
    calibrated = trained_calibrated(ck)
    reduced = {kind: read_through(ck, chosen, kind)
               for kind in (("ratio", "masked") if calibrated else ("exponent", "input+bias"))}
    table = method_table(chosen, reduced)
    for k, r in enumerate(chosen):
        print(f"  {r.star.star[:28]:<28} " + "  ".join(
            f"{n} {r.star.reference[n][0]:.4g}: input {r.mu[n]:.4g}, " + ", ".join(
                f"{kind} {reduced[kind][k][n]:.4g}" for kind in reduced) for n in LABELS))
    if calibrated:
        print("  (raw and affine read the spectrum through the network trained on the "
              "calibration made with every star: not leave-one-out)")
    for method, row in table.items():
        print(f"  {method:<13}" + "  ".join(f"{n} {v:.3g}" for n, v in row.items()))
    if gaps:
        print("\nsynthetic-to-real gap (mean over the calibration-box stars): "
              "mean |real − twin| / mean |twin − reference| / rms gap")
        for n in LABELS:
            g = np.array([x[n][0] for x in gaps])
            e = np.array([x[n][1] for x in gaps])
            print(f"  {n}: {np.mean(np.abs(g)):.3g} / {np.mean(np.abs(e)):.3g} / "
                  f"{np.sqrt(np.mean(g ** 2)):.3g} (mean gap {np.mean(g):+.3g})")
    m = record["mismatch"]
    print(f"\nσ_sys {record['floor']}; leave-one-out coverage {record['loo_coverage']}")
    print(f"mismatch limit {m}; flagged: {record['flagged']}")
    sweep = snr_sweep(ck, chosen, record, args.snr, args.draws) if args.snr else []
    for row in sweep:
        print(f"S/N {row['snr']:g}: " + "; ".join(
            f"{n} |e| {row[f'{n}_mae']:.3g} σ {row[f'{n}_sigma']:.3g} "
            f"in1 {100 * row[f'{n}_in1']:.0f}% in2 {100 * row[f'{n}_in2']:.0f}%" for n in LABELS))
    if args.json:
        out = {"model": args.model, "methods": table, "record": record, "sweep": sweep,
               "reduced": {kind: dict(zip([r.star.star for r in chosen], rows, strict=True))
                           for kind, rows in reduced.items()},
               "stars": [{"star": r.star.star, "tier": r.star.tier(r.resolution),
                          "resolution": r.resolution, "mismatch": r.mismatch,
                          "flags": r.flags, "mu": r.mu, "mu_raw": r.mu_raw, "sigma": r.sigma,
                          "in_box": r.in_box, "windows": r.windows} for r in readings]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=lambda o: None if isinstance(o, float)
                      and not math.isfinite(o) else str(o))


if __name__ == "__main__":
    main()
