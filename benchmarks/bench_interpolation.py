"""Grid interpolation and emulator speed, and their error on held-out grid nodes.

    python benchmarks/bench_interpolation.py [GRID] [--batch 256] [--json]
        [--starfish-python PATH] [--starfish-subset]

GRID defaults to the embedded default grid. Prints:
* GridInterpolator: batched calls per second (and spectra per second), single-spectrum calls/s;
* PCAGPEmulator: training time, single-spectrum calls/s (mean only, and with variance), batched;
* held-out nodes: the interior nodes whose indices are odd along every axis (6.8 % of the
  embedded grid; each one's 26 neighbours are kept) are removed and predicted, and median and
  95th percentile of |predicted - true| normalised flux over all their pixels are reported for
  (a) the PCA+GP emulator trained on every other node, (b) multilinear interpolation on the
  sub-lattice of even indices (twice the steps; each held-out node is a cell centre there), and
  (c) the emulator trained on that same sub-lattice; plus the fraction of pixels whose emulator
  error lies within its predicted 1σ and 2σ (Gaussian: 68.3 %, 95.4 %);
* the peer: Starfish's PCA+GP emulator (``astrostarfish``, Python 3.9 only), run by
  ``benchmarks/_starfish_peer.py`` under ``--starfish-python PATH`` (e.g. made by
  ``python3.9 -m venv sf && sf/bin/pip install astrostarfish``) on the same grid file with the
  same number of components as ours. Starfish's emulator conditions one dense GP on
  (nodes x components)^2, too large for the whole embedded grid (702 x 40 -> 28 080^2), so with
  ``--starfish-subset`` both ours and Starfish's run on the documented subset SUBSET (below) and
  the per-call speeds of both are printed from this run. Without a peer interpreter the figure
  measured earlier is printed, labelled as quoted.
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

from _starfish_peer import rate  # the same timer the peer uses (plain Python, no Starfish)
from photosphere.errors import OutOfGridError
from photosphere.grids.emulator import PCAGPEmulator
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import require_default_grid
from photosphere.grids.store import GridStore

STARFISH_QUOTED_S_PER_CALL = 0.27  # measured earlier: 450 nodes x 4 components (not this run)
#: the subset of the embedded grid on which ours and Starfish's emulators are timed together:
#: 7 x 4 x 4 = 112 nodes, all 17 302 pixels
SUBSET = {"teff": (5000, 5250, 5500, 5750, 6000, 6250, 6500), "logg": (3.5, 4.0, 4.5, 5.0),
          "feh": (-1.0, -0.5, 0.0, 0.5)}


def _rate(fn) -> float:
    """Calls per second of ``fn`` (at least 1 s of calls after one warm-up call)."""
    return rate(fn, min_seconds=1.0)


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
    return {"n_nodes": len(em.train_labels_), "n_pixels": int(model.wavelength.size),
            "batch": batch,
            "interpolator_batched_calls_per_s": interp_batched,
            "interpolator_spectra_per_s": interp_batched * batch,
            "interpolator_single_calls_per_s": interp_single,
            "emulator_train_s": train_s, "emulator_components": em.n_components_,
            "emulator_single_calls_per_s": emu_single,
            "emulator_single_with_variance_calls_per_s": emu_single_var,
            "emulator_batched_calls_per_s": emu_batched,
            "emulator_spectra_per_s": emu_batched * batch,
            "emulator_loo_abs_error_median": em.loo_abs_error_median_,
            "emulator_loo_abs_error_p95": em.loo_abs_error_p95_}


def held_out_nodes(store: GridStore) -> np.ndarray:
    """Flat indices of the present interior nodes with odd indices along every axis whose
    neighbours (the 3^d block around them) are all present."""
    present = store.present.reshape(store.shape)
    out = []
    for i in np.flatnonzero(present.ravel()):
        idx = np.unravel_index(i, store.shape)
        if all(j % 2 == 1 and j < n - 1 for j, n in zip(idx, store.shape, strict=True)) and \
                present[tuple(slice(j - 1, j + 2) for j in idx)].all():
            out.append(int(i))
    return np.array(out, dtype=int)


def _scores(pred: np.ndarray, truth: np.ndarray, sigma: np.ndarray | None = None) -> dict:
    err = np.abs(pred - truth)
    out = {"abs_error_median": float(np.median(err)),
           "abs_error_p95": float(np.percentile(err, 95))}
    if sigma is not None:
        z = err / sigma
        out.update({"within_1sigma": float(np.mean(z < 1)), "within_2sigma": float(np.mean(z < 2))})
    return out


def _emulate(em: PCAGPEmulator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        xt = torch.as_tensor(x)
        return em.predict(xt).numpy(), em.predict_variance(xt).sqrt().numpy()


def held_out(grid: Path, n_iter: int) -> dict:
    with GridStore.open(grid) as store, tempfile.TemporaryDirectory() as tmp:
        names = store.label_names
        held = held_out_nodes(store)
        present = np.flatnonzero(store.present.ravel())
        train = np.setdiff1d(present, held)
        labels = np.array([[store.node_labels(int(i))[n] for n in names] for i in present])
        flux = store.flux_all()[present].astype(np.float64)
        pos = {int(i): k for k, i in enumerate(present)}
        x_held = labels[[pos[i] for i in held]]
        truth = flux[[pos[i] for i in held]]
        bounds = {n: (float(a[0]), float(a[-1])) for n, a in store.axes.items()}
        rows = [pos[int(i)] for i in train]
        start = time.perf_counter()
        em_all = PCAGPEmulator(n_iter=n_iter).fit_arrays(
            labels[rows], flux[rows], label_names=names, wavelength=store.wavelength,
            bounds=bounds)
        train_all_s = time.perf_counter() - start
        sub = store.subset(Path(tmp) / "sub.h5", **{n: a[::2] for n, a in store.axes.items()})
        with torch.no_grad():
            pred_i = GridInterpolator(sub).predict(torch.as_tensor(x_held)).numpy()
        em_sub = PCAGPEmulator(n_iter=n_iter).fit(sub)
        with GridStore.open(sub) as s:
            n_sub = int(s.present.sum())
    pred_all, sigma_all = _emulate(em_all, x_held)
    pred_sub, sigma_sub = _emulate(em_sub, x_held)
    return {"held_out_nodes": int(held.size), "held_out_fraction": held.size / present.size,
            "emulator_all_training_nodes": int(train.size),
            "emulator_all_components": em_all.n_components_,
            "emulator_all_train_s": train_all_s,
            "emulator_all_sigma_scale": em_all.sigma_scale_,
            "emulator_all": _scores(pred_all, truth, sigma_all),
            "sublattice_nodes": n_sub,
            "interpolation_sublattice": _scores(pred_i, truth),
            "emulator_sublattice_sigma_scale": em_sub.sigma_scale_,
            "emulator_sublattice": _scores(pred_sub, truth, sigma_sub)}


def starfish(python: str, grid: Path, components: int, train_maxiter: int) -> dict:
    """Run the Starfish peer script under ``python``; its JSON result."""
    script = Path(__file__).with_name("_starfish_peer.py")
    done = subprocess.run([python, str(script), str(grid), "--components", str(components),
                           "--train-maxiter", str(train_maxiter)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_speed(title: str, sp: dict, batch: int) -> None:
    print(f"{title}: {sp['n_nodes']} nodes, {sp['n_pixels']} px")
    print(f"  interpolator: {sp['interpolator_batched_calls_per_s']:.1f} batched calls/s "
          f"(batch {batch}: {sp['interpolator_spectra_per_s']:.0f} spectra/s), "
          f"{sp['interpolator_single_calls_per_s']:.0f} single calls/s")
    print(f"  emulator ({sp['emulator_components']} components, trained in "
          f"{sp['emulator_train_s']:.1f} s): {sp['emulator_single_calls_per_s']:.0f} calls/s "
          f"({1e3 / sp['emulator_single_calls_per_s']:.2f} ms/call; with variance "
          f"{sp['emulator_single_with_variance_calls_per_s']:.0f} calls/s), "
          f"batched {sp['emulator_spectra_per_s']:.0f} spectra/s; leave-one-out |error| median "
          f"{sp['emulator_loo_abs_error_median']:.2e}, p95 {sp['emulator_loo_abs_error_p95']:.2e}")


def _print_held_out(h: dict) -> None:
    print(f"held-out nodes: {h['held_out_nodes']} ({h['held_out_fraction']:.1%}; interior, odd "
          "index along every axis, all neighbours kept), |predicted - true| normalised flux:")
    for key, what in (("emulator_all", f"emulator trained on the other "
                       f"{h['emulator_all_training_nodes']} nodes"),
                      ("interpolation_sublattice", f"multilinear interpolation, sub-lattice of "
                       f"{h['sublattice_nodes']} nodes (2x steps)"),
                      ("emulator_sublattice", f"emulator trained on the same "
                       f"{h['sublattice_nodes']} nodes")):
        r = h[key]
        line = f"  {what:62s} median {r['abs_error_median']:.2e}, p95 {r['abs_error_p95']:.2e}"
        if "within_1sigma" in r:
            line += (f"; within 1σ / 2σ: {r['within_1sigma']:.1%} / {r['within_2sigma']:.1%} "
                     "(Gaussian 68.3 % / 95.4 %)")
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", nargs="?", help="grid file (default: the embedded default grid)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=150, help="emulator optimiser steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--starfish-python", help="a Python 3.9 with astrostarfish installed")
    ap.add_argument("--starfish-subset", action="store_true",
                    help="time ours and Starfish on SUBSET of the grid (the whole embedded grid is "
                         "too large for Starfish's dense GP)")
    ap.add_argument("--starfish-train-maxiter", type=int, default=0,
                    help="Nelder-Mead iterations for Starfish's training (0: time calls only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = Path(args.grid) if args.grid else require_default_grid()
    with GridStore.open(grid) as store:
        info = store.info()
    out = {"grid": str(grid), "grid_shape": [v["n"] for v in info["labels"].values()],
           "torch_threads": args.threads,
           "speed": speed(grid, args.batch, args.seed, args.iterations),
           "held_out": held_out(grid, args.iterations)}
    if args.starfish_python:
        with tempfile.TemporaryDirectory() as tmp:
            peer_grid = grid
            if args.starfish_subset:
                with GridStore.open(grid) as store:
                    peer_grid = store.subset(Path(tmp) / "subset.h5", **SUBSET)
                out["peer_subset"] = {k: list(v) for k, v in SUBSET.items()}
                out["speed_peer_grid"] = speed(peer_grid, args.batch, args.seed, args.iterations)
            ours = out.get("speed_peer_grid", out["speed"])
            out["starfish"] = starfish(args.starfish_python, peer_grid,
                                       ours["emulator_components"], args.starfish_train_maxiter)
    else:
        out["starfish_s_per_call_quoted"] = STARFISH_QUOTED_S_PER_CALL
        out["starfish_note"] = ("quoted from an earlier measurement (450 nodes x 4 components), "
                                "not measured in this run (pass --starfish-python)")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"grid {grid}: shape {out['grid_shape']}, torch threads {args.threads}")
    _print_speed("whole grid", out["speed"], args.batch)
    _print_held_out(out["held_out"])
    if "error" in out.get("starfish", {}):
        print(f"peer: Starfish failed in this run:\n{out['starfish']['error']}")
    elif "starfish" in out:
        sf = out["starfish"]
        if "speed_peer_grid" in out:
            _print_speed(f"subset {out['peer_subset']}", out["speed_peer_grid"], args.batch)
        ours = out.get("speed_peer_grid", out["speed"])
        print(f"peer: Starfish {sf['starfish_version']} emulator on the same nodes "
              f"({sf['n_nodes']} nodes, {sf['n_components']} components), measured in this run: "
              f"{sf['call_per_s']:.2f} calls/s ({sf['s_per_call'] * 1e3:.1f} ms/call, weights + "
              f"covariance), load_flux {sf['load_flux_per_s']:.2f} calls/s "
              f"({sf['s_per_load_flux'] * 1e3:.1f} ms/call); ours with variance "
              f"{ours['emulator_single_with_variance_calls_per_s']:.0f} calls/s = "
              f"{ours['emulator_single_with_variance_calls_per_s'] / sf['call_per_s']:.0f}x")
    else:
        print(f"peer: Starfish emulator {STARFISH_QUOTED_S_PER_CALL} s/call "
              f"({1 / STARFISH_QUOTED_S_PER_CALL:.1f} calls/s) -- QUOTED, not measured in this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
