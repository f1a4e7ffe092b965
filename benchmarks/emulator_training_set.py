"""Held-out error of the PCA+GP emulator on the optical training set, beside two baselines.

The emulator is trained on a random part of the training set's spectra and predicts the others;
the script prints the per-spectrum RMS error (normalised flux) against predicting the mean
spectrum and the nearest training spectrum (labels scaled to the box). It reads the finished
file or, while the build runs, the spectra journalled so far (``OUTPUT.partial/nodes``).

    python benchmarks/emulator_training_set.py                    # the 'optical' preset's output
    python benchmarks/emulator_training_set.py --test-fraction 0.2 --components 30
    python benchmarks/emulator_training_set.py --fit 12      # and fit 12 held-out FGK spectra

``--fit N`` also fits up to N held-out spectra of FGK stars (Teff 4500-6800 K, log g > 3.5,
[Fe/H] > -1.5) with the emulator, as real stars are fitted (the protocol's spline continuum,
clipping and jitter; the model as exact), one echelle order per window, noise at S/N 300: the
label errors the emulator alone makes, with every label free and with [α/Fe] and vmic held at
their true values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from photosphere._files import cache_dir
from photosphere.grids.emulator import PCAGPEmulator
from photosphere.grids.training_set import read_built


def load(preset: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """(labels, flux, wavelength, spec) of the finished file, or of the journal so far."""
    labels, flux, wave, spec, _ = read_built(preset, path)
    return labels, flux, wave, spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="optical")
    p.add_argument("--path", type=Path, help="training set file (default: the preset's output "
                                               "in the photosphere cache)")
    p.add_argument("--test-fraction", type=float, default=1 / 6)
    p.add_argument("--components", type=int, default=30)
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", type=int, default=0, metavar="N",
                   help="also fit up to N held-out FGK spectra (label errors of the emulator)")
    args = p.parse_args()
    path = args.path or cache_dir("grids") / f"{args.preset}.h5"
    labels, flux, wave, spec = load(args.preset, path)
    rng = np.random.default_rng(args.seed)
    n_test = max(5, round(args.test_fraction * len(labels)))
    test = rng.choice(len(labels), size=n_test, replace=False)
    train = np.setdiff1d(np.arange(len(labels)), test)
    t0 = time.perf_counter()
    emu = PCAGPEmulator(max_components=args.components, n_iter=args.iterations).fit_arrays(
        labels[train], flux[train], label_names=spec.label_names, wavelength=wave,
        bounds=spec.box)
    seconds = time.perf_counter() - t0
    pred = emu.predict(torch.as_tensor(labels[test])).numpy()

    def rms(model: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean((model - flux[test]) ** 2, axis=1))

    lo = np.array([spec.box[k][0] for k in spec.label_names])
    span = np.array([max(spec.box[k][1] - spec.box[k][0], 1e-12) for k in spec.label_names])
    x = (labels - lo) / span
    nearest = train[np.argmin(((x[test][:, None] - x[train][None]) ** 2).sum(-1), axis=1)]
    print(f"{path}: {len(labels)} spectra ({len(train)} train, {len(test)} held out), "
          f"{flux.shape[1]} px; emulator {emu.n_components_} components, trained in "
          f"{seconds:.0f} s")
    print(f"{'held-out RMS (normalised flux)':32s} {'median':>8s} {'90 %':>8s} {'max':>8s}")
    for name, err in (("PCA+GP emulator", rms(pred)),
                      ("mean spectrum", rms(np.broadcast_to(flux[train].mean(0), pred.shape))),
                      ("nearest training spectrum", rms(flux[nearest]))):
        print(f"{name:32s} {np.median(err):8.4f} {np.percentile(err, 90):8.4f} "
              f"{err.max():8.4f}")
    if args.fit:
        fgk = test[(labels[test, 0] > 4500) & (labels[test, 0] < 6800)
                   & (labels[test, 1] > 3.5) & (labels[test, 2] > -1.5)][:args.fit]
        fit_held_out(emu, spec, labels[fgk], flux[fgk], wave, rng)


def fit_held_out(emu, spec, truth: np.ndarray, flux: np.ndarray, wave: np.ndarray,
                 rng: np.random.Generator, snr: float = 300.0) -> None:
    """Fit each held-out spectrum (the windows as one 1-D spectrum with gaps, which the chain
    cuts into one segment per window; noise at ``snr``) with every label free, then with
    [α/Fe] and vmic fixed at the truth; print the label errors."""
    from photosphere.infer.optimize import fit
    from photosphere.infer.protocol import merge_defaults
    from photosphere.spectrum import Spectrum

    names = spec.label_names
    errors: dict[str, list[dict[str, float]]] = {"all free": [], "alpha, vmic fixed": []}
    print(f"fitting {len(truth)} held-out FGK spectra (S/N {snr:g}); errors = fit - truth")
    for row, f in zip(truth, flux, strict=True):
        observed = Spectrum.from_arrays(wave, f + rng.normal(0, 1 / snr, f.size),
                                        np.full(f.size, 1 / snr), medium="air")
        for mode, fixed in (("all free", None),
                            ("alpha, vmic fixed", {"alpha": float(row[3]), "vmic": float(row[4])})):
            r = fit(emu, observed, fixed=fixed,
                    **merge_defaults({"model_error": "none", "model_variance": False}))
            d = {n: r.values[n] - row[j] for j, n in enumerate(names)}
            errors[mode].append(d)
            print(f"  truth {' '.join(f'{v:.2f}' for v in row)} {mode:18s} "
                  + " ".join(f"{n} {d[n]:+.3f}" for n in names))
    for mode, rows in errors.items():
        print(f"{mode:18s} mean error  " + " ".join(
            f"{n} {np.mean([r[n] for r in rows]):+.3f}" for n in names))
        print(f"{mode:18s} mean |error| " + " ".join(
            f"{n} {np.mean([abs(r[n]) for r in rows]):.3f}" for n in names))


if __name__ == "__main__":
    main()
