"""Networks of one recipe, alone and in every deep ensemble of them, on the real benchmark stars.

Every star of ``stars/labels.csv`` is read as ``photosphere nn predict`` reads it with the first
model (``photosphere.nn.real_stars.read_all``); the calibration stars (high resolution, inside
the training box, not flagged) are then read by each model and by each ensemble of two or more
of them (the equal-weight mixture of ``photosphere.nn.predict.network``, what ``nn predict
--model A --model B`` and a stored ``nn ensemble`` file compute), each star through the input
calibration made without it (leave-one-out). Prints mean |error| and mean error per label, and
per ensemble size the mean and range of those over the ensembles of that size. With many
members, ``--sizes`` and ``--max-per-size`` read only some sizes, and a seeded random choice of
at most N ensembles of each (every ensemble of a size when it has no more than N).

    PYTHONPATH=src PHOTOSPHERE_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/nn_ensemble_members.py A.pt B.pt [C.pt ...] [--sizes 1 2 4 8] \\
        [--max-per-size 8] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from _shared import SHARED
from photosphere.datasets.reference_stars import LABELS, read_stars
from photosphere.nn.predict import (
    line_calibration_of,
    load_model,
    model_grid,
    model_input_calibration,
    network,
)
from photosphere.nn.real_stars import calibration_stars, read_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="checkpoints of one recipe (2 or more)")
    ap.add_argument("--sizes", type=int, nargs="+", help="ensemble sizes to read (default all)")
    ap.add_argument("--max-per-size", type=int, help="at most this many ensembles per size")
    ap.add_argument("--seed", type=int, default=0, help="seed of the choice of ensembles")
    ap.add_argument("--json", help="write every reading here")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least 2 models")
    sizes = args.sizes or range(1, len(args.models) + 1)
    if any(not 1 <= k <= len(args.models) for k in sizes):
        ap.error(f"--sizes must lie in 1..{len(args.models)}")
    cks = [load_model(m) for m in args.models]
    t0 = time.time()
    readings, _ = read_all(cks[0], read_stars(SHARED / "stars" / "labels.csv"))
    chosen = calibration_stars(readings)
    print(f"{len(chosen)} calibration stars (read in {time.time() - t0:.0f} s): "
          + "; ".join(r.star.star for r in chosen))
    calibration = line_calibration_of(cks[0])
    names = cks[0].label_scaling.names
    inverses = [model_input_calibration(cks[0], calibration.without(r.star.star),
                                        model_grid(cks[0])) for r in chosen]
    groups = [combo for k in sizes
              for combo in _some(list(itertools.combinations(range(len(cks)), k)),
                                 args.max_per_size, args.seed)]
    out = {}
    print(f"{'models':28s} " + "  ".join(f"{n}: mean |e| (mean e)" for n in LABELS))
    for combo in groups:
        run = network([cks[i] for i in combo])
        rows = []
        for r, inverse in zip(chosen, inverses, strict=True):
            mu = inverse.read(r.image, run, names, r.resolution)[1]
            rows.append({"star": r.star.star,
                         **{n: float(mu[names.index(n)]) for n in names}})
        errors = {n: np.array([row[n] - r.star.reference[n][0]
                               for row, r in zip(rows, chosen, strict=True)]) for n in LABELS}
        key = "+".join(Path(args.models[i]).stem for i in combo)
        out[key] = {"rows": rows, "size": len(combo),
                    **{f"{n}_mae": float(np.mean(np.abs(errors[n]))) for n in LABELS}}
        print(f"{key[:28]:28s} " + "  ".join(
            f"{n} {np.mean(np.abs(errors[n])):.3g} ({np.mean(errors[n]):+.3g})" for n in LABELS),
            flush=True)
    print(f"\n{'size':5s} {'ensembles':>9s}  " + "  ".join(
        f"{n}: mean (range) of mean |e|" for n in LABELS))
    for k in sizes:
        runs = [v for v in out.values() if v["size"] == k]
        print(f"{k:<5d} {len(runs):9d}  " + "  ".join(
            f"{n} {np.mean([v[f'{n}_mae'] for v in runs]):.3g} "
            f"({min(v[f'{n}_mae'] for v in runs):.3g}-{max(v[f'{n}_mae'] for v in runs):.3g})"
            for n in LABELS))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def _some(combos: list[tuple[int, ...]], at_most: int | None, seed: int) -> list[tuple[int, ...]]:
    """``combos``, or a seeded random choice of ``at_most`` of them (in their order)."""
    if at_most is None or len(combos) <= at_most:
        return combos
    keep = np.random.default_rng(seed + len(combos[0])).choice(len(combos), at_most,
                                                                 replace=False)
    return [combos[i] for i in sorted(keep)]


if __name__ == "__main__":
    main()
