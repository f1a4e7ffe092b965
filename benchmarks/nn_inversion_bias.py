"""A grid-trained network's own inversion bias removed with its grid, on the real benchmark
stars: is the bias the network shows on syntheses also its error on real stars?

For every high-resolution star whose reference lies inside the model's training box (read
exactly as ``photosphere nn predict FILE`` reads it), the network's μ, then θ with
N(T(θ)) = μ (``photosphere.nn.inversion_bias``: T the model's grid with its line strengths,
imaged at the star's R, the training range's middle ζ, the star's S/N per row and blank rows),
and the errors of both against the references. Networks trained on the calibrated optical
emulator do this inside ``nn predict`` (``nn_optical.py`` measures them).

    PYTHONPATH=src PHOTOSPHERE_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/nn_inversion_bias.py [--model default] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from _shared import SHARED
from photosphere.datasets.reference_stars import LABELS, read_stars
from photosphere.nn.data import DataConfig, labels_in_bounds, normalise_orders
from photosphere.nn.inversion_bias import remove_inversion_bias
from photosphere.nn.predict import _grid_simulator, load_model, model_grid, network
from photosphere.nn.real_stars import calibrate, read_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="checkpoint or shipped model name")
    ap.add_argument("--json", help="write the errors per star and the means here")
    args = ap.parse_args()
    ck = load_model(args.model)
    readings, _ = read_all(ck, read_stars(SHARED / "stars" / "labels.csv"))
    calibrate(readings)
    chosen = [r for r in readings if r.high_resolution and r.in_box]
    sim = _grid_simulator(ck, model_grid(ck))
    cfg = DataConfig.from_dict(ck.data)
    zeta = float(np.mean(cfg.macroturbulence))
    names = ck.label_scaling.names
    run = network([ck])

    def image_at(theta: np.ndarray, resolution: float) -> np.ndarray:
        labels = labels_in_bounds(np.asarray(theta, float), cfg, sim.source.bounds)
        kw = {"resolution": torch.tensor([float(resolution)])}
        if zeta > 0:
            kw["macroturbulence"] = torch.tensor([zeta])
        with torch.no_grad():
            return normalise_orders(sim.images(labels, **kw)).numpy()[0]

    before, after = [], []
    print(f"model {args.model}: error before / after removing the inversion bias "
          f"({', '.join(LABELS)})")
    for r in chosen:
        mu = np.array([r.mu[n] for n in names])
        theta = remove_inversion_bias(mu, r.image, run, lambda t, r=r: image_at(t, r.resolution))
        before.append([mu[names.index(n)] - r.star.reference[n][0] for n in LABELS])
        after.append([theta[names.index(n)] - r.star.reference[n][0] for n in LABELS])
        print(f"  {r.star.star[:30]:<30} {r.star.tier(r.resolution):<6} "
              + " ".join(f"{v:+.3g}" for v in before[-1]) + "  ->  "
              + " ".join(f"{v:+.3g}" for v in after[-1]))
    means = {}
    for tier in ("FGK", "all"):
        idx = [i for i, r in enumerate(chosen)
               if tier == "all" or r.star.tier(r.resolution) == tier]
        b = np.abs(np.array(before)[idx]).mean(axis=0)
        a = np.abs(np.array(after)[idx]).mean(axis=0)
        means[tier] = {"stars": len(idx), "before": dict(zip(LABELS, b.tolist(), strict=True)),
                       "after": dict(zip(LABELS, a.tolist(), strict=True))}
        print(f"mean |error| {tier} ({len(idx)} stars): before "
              + " / ".join(f"{v:.3g}" for v in b) + "; after " + " / ".join(f"{v:.3g}" for v in a))
    if args.json:
        rows = [{"star": r.star.star, "tier": r.star.tier(r.resolution),
                 "error_before": dict(zip(LABELS, e0, strict=True)),
                 "error_after": dict(zip(LABELS, e1, strict=True))}
                for r, e0, e1 in zip(chosen, before, after, strict=True)]
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "stars": rows, "mean_abs_error": means}, f, indent=1)


if __name__ == "__main__":
    main()
