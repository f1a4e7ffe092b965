"""MCMC on spotted spectra: a case the data cannot decide vs a clear one.

Both are made like benchmarks/injection_mixture.py (embedded grid, R = 50 000, S/N 100,
vsini 8 km/s, log g 4.5, [Fe/H] 0) and sampled with emcee through
:func:`photosphere.infer.mixture.fit_mixture` (``mcmc=True``):

* ``undetermined``: Teff 5500 K, Teff_spot 5250 K, c = 0.03 (a tiny, barely cooler spot
  coverage: ~2 % of the light, 250 K of contrast);
* ``clear``: Teff 5500 K, Teff_spot 4500 K, c = 0.40.

For each we print the posterior median and 16-84 % / 2.5-97.5 % intervals of c, Teff_spot and
the spot light fraction, the least-squares σ, ΔBIC and the Laplace ln Z ratio against a single
star, and write a corner plot. The point (issue 8): where the data cannot tell, the posterior
must be wide (spanning much of the prior), not a confident wrong answer.

Run:  PYTHONPATH=src python benchmarks/mixture_mcmc.py [--steps 1500] [--walkers 16]
      [--out out/mixture_mcmc]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from injection_mixture import RESOLUTION, SHARED, observation
from photosphere._files import atomic_path
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.infer.mixture import fit_mixture
from photosphere.infer.selection import derived
from photosphere.models.mixture import SpotModel

CASES = {"undetermined": {"teff": 5500.0, "teff_spot": 5250.0, "filling_factor": 0.03},
         "clear": {"teff": 5500.0, "teff_spot": 4500.0, "filling_factor": 0.40}}


def interval(x: np.ndarray) -> dict[str, float]:
    q = np.percentile(x, [2.5, 15.865, 50, 84.135, 97.5])
    return {"median": q[2], "lo68": q[1], "hi68": q[3], "lo95": q[0], "hi95": q[4]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--walkers", type=int, default=16)
    p.add_argument("--snr", type=float, default=100.0)
    p.add_argument("--out", default="out/mixture_mcmc")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = SpotModel(GridInterpolator(default_grid_path()))
    report = {}
    for k, name in enumerate(args.cases):
        truth = {**CASES[name], **SHARED}
        labels = torch.tensor([[truth[n] for n in model.label_names]], dtype=torch.float64)
        light_true = float(model.spot_light_fraction(labels).mean())
        obs = observation(model, truth, args.snr, seed=100 + k)
        t0 = time.perf_counter()
        out = fit_mixture(model, obs, resolution=RESOLUTION, mcmc=True, n_walkers=args.walkers,
                          n_steps=args.steps, seed=k, progress=True)
        elapsed = time.perf_counter() - t0
        r = out.result
        free = list(r.free)
        post = {n: interval(r.samples[:, free.index(n)]) for n in ("filling_factor", "teff_spot")}
        post["spot_light_fraction"] = interval(derived(model, r, out.bounds, n=3000)[
            "spot_light_fraction"])
        ls = r.flags["least_squares"]
        cmp = out.compare()
        report[name] = {"truth": {**truth, "spot_light_fraction": light_true},
                        "posterior": post, "least_squares": ls,
                        "prior": {n: out.bounds[n] for n in ("filling_factor", "teff_spot")},
                        "acceptance": r.flags["acceptance_fraction"],
                        "autocorr_time": r.flags["autocorr_time"],
                        "chain_too_short": r.flags["chain_too_short"],
                        "delta_bic": cmp.delta_bic, "log_evidence_ratio": cmp.log_evidence_ratio,
                        "laplace_reliable": cmp.laplace_reliable, "seconds": elapsed}
        path = Path(f"{args.out}_{name}_corner.png")
        out.corner(path, truths={**truth, "spot_light_fraction": light_true},
                   names=["teff", "teff_spot", "filling_factor"])
        print(f"\n== {name}: truth c={truth['filling_factor']}, Teff_spot={truth['teff_spot']:.0f}"
              f" K, spot light {light_true:.3f}; {args.walkers} walkers × {args.steps} steps, "
              f"{elapsed:.0f} s, acceptance {r.flags['acceptance_fraction']:.2f}, chain too "
              f"short: {r.flags['chain_too_short']}")
        for n, q in post.items():
            lsq = ls.get(n)
            lsq_text = ("" if lsq is None else
                        f"   least squares {lsq['value']:.4g} ± {lsq['sigma']:.2g}")
            print(f"  {n:<20} median {q['median']:.4g}  68 % [{q['lo68']:.4g}, {q['hi68']:.4g}]"
                  f"  95 % [{q['lo95']:.4g}, {q['hi95']:.4g}]{lsq_text}")
        print(f"  ΔBIC (single − two) {cmp.delta_bic:.1f}; ln Z2/Z1 {cmp.log_evidence_ratio:.1f}"
              f" (Laplace {'ok' if cmp.laplace_reliable else 'unreliable'}); corner: {path}")
    with atomic_path(Path(f"{args.out}.json"), suffix=".json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
