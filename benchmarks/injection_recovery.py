"""Injection–recovery: are the fitted uncertainties calibrated?

Synthetic observations are made through the same observation chain from random labels inside
the model's box (10-90 % of each range), at S/N 20, 50 and 100 with a quadratic continuum, then
fitted with the default :func:`photosphere.infer.optimize.fit` (RV by cross-correlation,
multi-start). Per label and S/N we print the bias (median of fit − truth), the scatter (robust σ
of fit − truth) and the fraction of truths within 1σ and 2σ (goal 68 ± 5 % and 95 ± 3 %).

The model is the grid given with ``--grid`` (or the embedded grid), else The Payne's APOGEE
emulator from the shared data (see bench_fit.py).

``--truth`` says what the observations are made of:

* ``model``: the fitted model itself at random labels. The fit can then be perfect, so this
  tests only the noise part of the uncertainties.
* ``node`` (grids only, the default for them): the TRUE synthetic spectrum of a random interior
  grid node, fitted with an interpolator built WITHOUT that node's plane along one axis (chosen
  at random: the node's Teff column, log g row or [Fe/H] layer), so the truth lies mid-cell in
  a cell twice the grid step along that axis. The fit then also meets interpolation error, as a
  real star between nodes does (pessimistic along the dropped axis: the error of linear
  interpolation grows as the step squared; on-node along the other two).
* ``emulator`` (grids only): the TRUE spectrum of a held-out node of the box EMULATOR_BOX of the
  grid (the interior nodes with odd indices along every axis), fitted with a PCAGPEmulator
  trained on the other nodes of the box (trained once, ``--emulator-iterations`` optimiser
  steps); the held-out nodes are used in turn.

``--model-error auto|none`` is passed to ``fit``: ``auto`` marginalises the model's error
templates (the grid's interpolation error, the emulator's GP error), ``none`` fits the model as
exact.

Run:  PYTHONPATH=src python benchmarks/injection_recovery.py [--grid PATH] [--n 30] \
          [--truth node|model|emulator] [--model-error auto|none]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from bench_fit import PayneEmulator, load_model
from photosphere import EchelleSpectrum, Spectrum
from photosphere.infer.chain import ObservationChain
from photosphere.infer.optimize import fit

#: the region of the embedded grid used for ``--truth emulator`` (7 × 5 × 5 nodes)
EMULATOR_BOX = {"teff": (5000.0, 6500.0), "logg": (3.0, 5.0), "feh": (-1.5, 0.5)}


def synthetic(model, truth: dict, snr: float, rng: np.random.Generator):
    """An observation of ``model`` at ``truth`` (15 000 px in total) with noise σ = 1/S/N."""
    w = model.wavelength
    if isinstance(model, PayneEmulator):
        wave = np.stack([np.linspace(w[a + 20], w[b - 20], 3000)
                         for a, b in ((322, 3242), (3648, 6048), (6412, 8306))])
        kw = {"resolution": None, "rotation": False}
    else:
        wave = np.linspace(w[0] * 1.002, w[-1] * 0.998, 15000)[None]
        kw = {"resolution": 50000.0, "rotation": True}
    rv = truth["rv"]
    dummy = EchelleSpectrum(wave, np.ones_like(wave), np.ones_like(wave), medium=model.medium)
    chain = ObservationChain(model, dummy, continuum_degree=None, rv_bounds=(rv - 1, rv + 1),
                             vsini_bounds=(0.0, truth.get("vsini", 0.0) + 1.0), **kw)
    with torch.no_grad():
        flux = np.stack([f.numpy() for f in chain.predict(
            torch.as_tensor(chain.theta_from(truth)))[0]])
    x = (wave - wave.mean(1, keepdims=True)) / np.ptp(wave, axis=1, keepdims=True)
    flux = flux * (1.0 + rng.normal(0, 0.05) * x + rng.normal(0, 0.03) * x ** 2)
    sigma = np.full_like(flux, 1.0 / snr)
    noisy = flux + rng.normal(size=flux.shape) * sigma
    if wave.shape[0] == 1:
        return Spectrum(wave[0], noisy[0], sigma[0], medium=model.medium), kw
    return EchelleSpectrum(wave, noisy, sigma, medium=model.medium), kw


def without_plane(model, axis: int, index: int):
    """A copy of a GridInterpolator whose node plane ``index`` along label ``axis`` is removed
    (the interpolation then spans the two neighbouring planes)."""
    from photosphere.grids.interpolate import CellLocator

    loc = model.locator
    axes = [a.numpy() for a in loc.axes]
    keep = np.flatnonzero(np.arange(len(axes[axis])) != index)
    nodes = np.take(np.arange(int(np.prod(loc.shape))).reshape(loc.shape), keep, axis=axis)
    present = np.take(loc.present.numpy().reshape(loc.shape), keep, axis=axis)
    axes[axis] = axes[axis][keep]
    sub = copy.copy(model)
    sub.locator = CellLocator(model.label_names, axes, present)
    sub._flux = model._flux[torch.as_tensor(nodes.ravel())]
    return sub


def node_truth(model, rng: np.random.Generator):
    """Labels of a random interior node, and the interpolator without one of its planes."""
    axes = [a.numpy() for a in model.locator.axes]
    index = [int(rng.integers(1, len(a) - 1)) for a in axes]
    axis = int(rng.integers(len(axes)))
    truth = {n: float(a[i]) for n, a, i in zip(model.label_names, axes, index, strict=True)}
    return truth, without_plane(model, axis, index[axis]), model.label_names[axis]


def held_out_emulator(model, iterations: int, seed: int):
    """Labels of the held-out nodes of EMULATOR_BOX (odd indices along every axis, interior)
    and a PCAGPEmulator trained on the other nodes of the box."""
    from photosphere.grids.emulator import PCAGPEmulator

    axes = [a.numpy() for a in model.locator.axes]
    box = [np.flatnonzero((a >= EMULATOR_BOX[n][0] - 1e-9) & (a <= EMULATOR_BOX[n][1] + 1e-9))
           for n, a in zip(model.label_names, axes, strict=True)]
    index = np.stack(np.meshgrid(*box, indexing="ij"), -1).reshape(-1, len(axes))
    local = np.stack(np.meshgrid(*(np.arange(b.size) for b in box), indexing="ij"),
                     -1).reshape(-1, len(axes))
    held = np.all((local % 2 == 1) & (local < np.array([b.size for b in box]) - 1), axis=1)
    flat = np.ravel_multi_index(index.T, model.locator.shape)
    labels = np.stack([a[i] for a, i in zip(axes, index.T, strict=True)], -1)
    flux = model._flux[torch.as_tensor(flat[~held])].double().numpy()
    em = PCAGPEmulator(n_iter=iterations, seed=seed)
    em.medium, em.velocity_step = model.medium, model.velocity_step
    em.fit_arrays(labels[~held], flux, label_names=model.label_names,
                  wavelength=model.wavelength,
                  bounds={n: (float(axes[k][box[k][0]]), float(axes[k][box[k][-1]]))
                          for k, n in enumerate(model.label_names)})
    return [dict(zip(model.label_names, map(float, row), strict=True))
            for row in labels[held]], em


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid")
    p.add_argument("--n", type=int, default=30, help="stars per S/N")
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 50.0, 100.0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--truth", choices=("node", "model", "emulator"),
                   help="node: true node spectra fitted without that node's plane (grids; "
                        "default for them); model: the fitted model itself; emulator: held-out "
                        "node spectra fitted with an emulator trained without them")
    p.add_argument("--model-error", choices=("auto", "none"), default="auto",
                   help="fit(model_error=...): marginalise the model's error templates or not")
    p.add_argument("--emulator-iterations", type=int, default=150)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, what = load_model(args.grid)
    truth_mode = args.truth or ("model" if isinstance(model, PayneEmulator) else "node")
    if truth_mode in ("node", "emulator") and isinstance(model, PayneEmulator):
        raise SystemExit(f"--truth {truth_mode} needs a grid (--grid or the embedded grid)")
    rng = np.random.default_rng(args.seed)
    held, emulator = [], None
    if truth_mode == "emulator":
        t_train = time.perf_counter()
        held, emulator = held_out_emulator(model, args.emulator_iterations, args.seed)
        print(f"emulator: {emulator.n_components_} components, trained on "
              f"{len(emulator.train_labels_)} nodes of {EMULATOR_BOX} in "
              f"{time.perf_counter() - t_train:.0f} s (sigma_scale {emulator.sigma_scale_:.2f});"
              f" {len(held)} held-out nodes")
    print(f"model: {what}; truth: {truth_mode}; {args.n} stars per S/N; default fit (RV by "
          f"CCF, multi-start), model_error={args.model_error}")
    summary = {}
    pooled: list[np.ndarray] = []
    t0 = time.perf_counter()
    for snr in args.snr:
        pulls, errors, failures = [], [], 0
        names = None
        for star in tqdm(range(args.n), desc=f"S/N {snr:g}", file=sys.stderr):
            fit_model = model
            if truth_mode == "node":
                truth, fit_model, _ = node_truth(model, rng)
            elif truth_mode == "emulator":
                truth, fit_model = dict(held[star % len(held)]), emulator
            else:
                truth = {n: lo + (0.1 + 0.8 * rng.random()) * (hi - lo)
                         for n, (lo, hi) in model.bounds.items()}
            truth["rv"] = float(rng.uniform(-60, 60))
            if not isinstance(model, PayneEmulator):
                truth["vsini"] = float(rng.uniform(1, 15))
            spec, kw = synthetic(model, truth, snr, rng)
            res = fit(fit_model, spec, model_error=args.model_error, **kw)
            if not res.converged:
                failures += 1
            names = [n for n in res.free if n in truth]
            errors.append([res.values[n] - truth[n] for n in names])
            pulls.append([(res.values[n] - truth[n]) / res.sigma[n] for n in names])
        err, pull = np.array(errors), np.abs(np.array(pulls))
        pooled.append(pull.ravel())
        rows = {}
        print(f"\nS/N {snr:g}  ({failures} of {args.n} fits flagged not converged)")
        print(f"{'label':8s} {'bias':>10s} {'scatter':>10s} {'in 1σ':>7s} {'in 2σ':>7s}")
        for j, n in enumerate(names):
            mad = 1.4826 * np.median(np.abs(err[:, j] - np.median(err[:, j])))
            rows[n] = {"bias": float(np.median(err[:, j])), "scatter": float(mad),
                       "in_1sigma": float(np.mean(pull[:, j] < 1)),
                       "in_2sigma": float(np.mean(pull[:, j] < 2))}
            r = rows[n]
            print(f"{n:8s} {r['bias']:10.4g} {r['scatter']:10.4g} {r['in_1sigma']:7.0%} "
                  f"{r['in_2sigma']:7.0%}")
        summary[str(snr)] = {"labels": rows, "not_converged": failures}
    allp = np.concatenate(pooled)
    summary["pooled"] = {"in_1sigma": float(np.mean(allp < 1)),
                         "in_2sigma": float(np.mean(allp < 2))}
    print(f"\npooled over labels and S/N: {np.mean(allp < 1):.0%} within 1σ, "
          f"{np.mean(allp < 2):.0%} within 2σ (goal 68 ± 5 %, 95 ± 3 %)")
    print(f"{time.perf_counter() - t0:.0f} s in all")
    print(json.dumps({"model": what, "truth": truth_mode, "n": args.n,
                      "model_error": args.model_error, "summary": summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
