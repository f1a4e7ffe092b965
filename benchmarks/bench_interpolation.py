"""Grid interpolation and emulator speed, and their error on held-out grid nodes.

    python benchmarks/bench_interpolation.py [GRID] [--batch 256] [--json]

GRID defaults to the embedded default grid. Prints:
* GridInterpolator: batched calls per second (and spectra per second), single-spectrum calls/s;
* PCAGPEmulator: training time, single-spectrum calls/s (mean only, and with variance), batched;
* held-out nodes: every other node along ``--holdout-axis`` (default teff) is removed, the
  interpolator and the emulator are built from the remaining nodes, and both predict the
  removed nodes; median and 95th percentile of |predicted - true| normalised flux over all
  held-out pixels (the removed nodes' true spectra are the synthesised ones);
* the peer: Starfish's PCA+GP emulator (``astrostarfish``, Python 3.9 only) on the same grid file
  with the same number of components, run by ``benchmarks/_starfish_peer.py`` under
  ``--starfish-python PATH`` (a Python 3.9 with astrostarfish, e.g. made by
  ``python3.9 -m venv sf && sf/bin/pip install astrostarfish``); without it the figure measured
  earlier is printed, labelled as quoted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from photosphere.errors import OutOfGridError
from photosphere.grids.emulator import PCAGPEmulator
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import require_default_grid
from photosphere.grids.store import GridStore

STARFISH_QUOTED_S_PER_CALL = 0.27  # measured earlier: 450 nodes x 4 components (not this run)


def _rate(fn, min_seconds: float = 1.0) -> float:
    """Calls per second of ``fn`` (at least ``min_seconds`` of calls after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed


def _valid_points(model: GridInterpolator, n: int, rng: np.random.Generator) -> torch.Tensor:
    lo = np.array([b[0] for b in model.bounds.values()])
    hi = np.array([b[1] for b in model.bounds.values()])
    good = []
    while len(good) < n:
        x = torch.tensor(lo + (hi - lo) * rng.random(lo.size))
        try:
            model.predict(x)
        except OutOfGridError:
            continue
        good.append(x)
    return torch.stack(good)


def speed(grid: Path, batch: int, seed: int, n_iter: int) -> dict:
    rng = np.random.default_rng(seed)
    model = GridInterpolator(grid)
    pts = _valid_points(model, batch, rng)
    with torch.no_grad():
        interp_batched = _rate(lambda: model.predict(pts))
        interp_single = _rate(lambda: model.predict(pts[0]))
    start = time.perf_counter()
    em = PCAGPEmulator(n_iter=n_iter).fit(grid)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        emu_single = _rate(lambda: em.predict(pts[0]))
        emu_single_var = _rate(lambda: (em.predict(pts[0]), em.predict_variance(pts[0])))
        emu_batched = _rate(lambda: em.predict(pts))
    return {"n_pixels": int(model.wavelength.size), "batch": batch,
            "interpolator_batched_calls_per_s": interp_batched,
            "interpolator_spectra_per_s": interp_batched * batch,
            "interpolator_single_calls_per_s": interp_single,
            "emulator_train_s": train_s, "emulator_components": em.n_components_,
            "emulator_training_nodes": len(em.train_labels_),
            "emulator_single_calls_per_s": emu_single,
            "emulator_single_with_variance_calls_per_s": emu_single_var,
            "emulator_batched_calls_per_s": emu_batched,
            "emulator_spectra_per_s": emu_batched * batch,
            "emulator_loo_abs_error_median": em.loo_abs_error_median_,
            "emulator_loo_abs_error_p95": em.loo_abs_error_p95_}


def held_out(grid: Path, axis: str, n_iter: int) -> dict:
    with GridStore.open(grid) as store, tempfile.TemporaryDirectory() as tmp:
        values = store.axes[axis]
        kept = values[::2]
        sub = store.subset(Path(tmp) / "sub.h5", **{axis: kept})
        model = GridInterpolator(sub)
        em = PCAGPEmulator(n_iter=n_iter).fit(sub)
        k = store.label_names.index(axis)
        errors_i, errors_e, z_e, n_nodes, n_refused = [], [], [], 0, 0
        for i in np.flatnonzero(store.present.ravel()):
            idx = np.unravel_index(i, store.shape)
            if idx[k] % 2 == 0 or idx[k] == values.size - 1:
                continue
            lab = store.node_labels(int(i))
            x = torch.tensor([lab[n] for n in store.label_names], dtype=torch.float64)
            truth = store.flux(int(i))
            try:
                pred_i = model.predict(x).numpy()
            except OutOfGridError:
                n_refused += 1  # a neighbour has no model atmosphere
                continue
            with torch.no_grad():
                pred_e = em.predict(x).numpy()
                sigma_e = em.predict_variance(x).sqrt().numpy()
            errors_i.append(np.abs(pred_i - truth))
            errors_e.append(np.abs(pred_e - truth))
            z_e.append(np.abs(pred_e - truth) / sigma_e)
            n_nodes += 1
    ei, ee, ze = np.concatenate(errors_i), np.concatenate(errors_e), np.concatenate(z_e)
    return {"holdout_axis": axis, "held_out_nodes": n_nodes, "refused_nodes": n_refused,
            "training_step": float(np.diff(kept)[0]) if kept.size > 1 else None,
            "interpolation_abs_error_median": float(np.median(ei)),
            "interpolation_abs_error_p95": float(np.percentile(ei, 95)),
            "emulator_abs_error_median": float(np.median(ee)),
            "emulator_abs_error_p95": float(np.percentile(ee, 95)),
            # calibration of the emulator's uncertainty: |error| / predicted sigma per pixel
            "emulator_error_within_1sigma": float(np.mean(ze < 1)),
            "emulator_error_within_2sigma": float(np.mean(ze < 2))}


def starfish(python: str, grid: Path, components: int, train_maxiter: int) -> dict:
    """Run the Starfish peer script under ``python``; its JSON result."""
    script = Path(__file__).with_name("_starfish_peer.py")
    done = subprocess.run([python, str(script), str(grid), "--components", str(components),
                           "--train-maxiter", str(train_maxiter)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the Starfish peer failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", nargs="?", help="grid file (default: the embedded default grid)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--holdout-axis", default="teff")
    ap.add_argument("--iterations", type=int, default=150, help="emulator optimiser steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--starfish-python", help="a Python 3.9 with astrostarfish installed")
    ap.add_argument("--starfish-train-maxiter", type=int, default=0,
                    help="Nelder-Mead iterations for Starfish's training (0: time calls only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = Path(args.grid) if args.grid else require_default_grid()
    with GridStore.open(grid) as store:
        info = store.info()
    out = {"grid": str(grid), "grid_shape": [v["n"] for v in info["labels"].values()],
           "n_present": info["n_present"], "torch_threads": args.threads,
           **speed(grid, args.batch, args.seed, args.iterations),
           **held_out(grid, args.holdout_axis, args.iterations),
           }
    if args.starfish_python:
        out["starfish"] = starfish(args.starfish_python, grid, out["emulator_components"],
                                   args.starfish_train_maxiter)
    else:
        out["starfish_s_per_call_quoted"] = STARFISH_QUOTED_S_PER_CALL
        out["starfish_note"] = ("quoted from an earlier measurement (450 nodes x 4 components), "
                                "not measured in this run (pass --starfish-python)")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"grid {grid}: shape {out['grid_shape']}, {out['n_present']} nodes, "
          f"{out['n_pixels']} px, torch threads {args.threads}")
    print(f"interpolator: {out['interpolator_batched_calls_per_s']:.1f} batched calls/s "
          f"(batch {args.batch}: {out['interpolator_spectra_per_s']:.0f} spectra/s), "
          f"{out['interpolator_single_calls_per_s']:.0f} single calls/s")
    print(f"emulator ({out['emulator_components']} components, "
          f"{out['emulator_training_nodes']} nodes, trained in {out['emulator_train_s']:.1f} s): "
          f"{out['emulator_single_calls_per_s']:.0f} calls/s "
          f"({1e3 / out['emulator_single_calls_per_s']:.2f} ms/call; with variance "
          f"{out['emulator_single_with_variance_calls_per_s']:.0f} calls/s), "
          f"batched {out['emulator_spectra_per_s']:.0f} spectra/s")
    print(f"emulator leave-one-out |error| (all nodes): median "
          f"{out['emulator_loo_abs_error_median']:.2e}, "
          f"p95 {out['emulator_loo_abs_error_p95']:.2e}")
    print(f"held-out nodes ({out['held_out_nodes']} nodes, every other {args.holdout_axis} node, "
          f"trained at step {out['training_step']}; {out['refused_nodes']} refused):")
    print(f"  interpolation |error| median {out['interpolation_abs_error_median']:.2e}, "
          f"p95 {out['interpolation_abs_error_p95']:.2e}")
    print(f"  emulator      |error| median {out['emulator_abs_error_median']:.2e}, "
          f"p95 {out['emulator_abs_error_p95']:.2e}; within its 1σ / 2σ: "
          f"{out['emulator_error_within_1sigma']:.0%} / {out['emulator_error_within_2sigma']:.0%} "
          "of pixels (Gaussian: 68% / 95%)")
    if "starfish" in out:
        sf = out["starfish"]
        print(f"peer: Starfish {sf['starfish_version']} emulator, same grid ({sf['n_nodes']} "
              f"nodes, {sf['n_components']} components), measured in this run: "
              f"{sf['call_per_s']:.1f} calls/s ({sf['s_per_call'] * 1e3:.2f} ms/call, weights + "
              f"covariance), load_flux {sf['load_flux_per_s']:.1f} calls/s "
              f"({sf['s_per_load_flux'] * 1e3:.2f} ms/call)")
    else:
        print(f"peer: Starfish emulator {STARFISH_QUOTED_S_PER_CALL} s/call "
              f"({1 / STARFISH_QUOTED_S_PER_CALL:.1f} calls/s) -- QUOTED, not measured in this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
