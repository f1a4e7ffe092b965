"""Held-out error of the PCA+GP emulator on the optical training set, beside two baselines.

The emulator is trained on a random part of the training set's spectra and predicts the others;
the script prints the per-spectrum RMS error (normalised flux) against predicting the mean
spectrum and the nearest training spectrum (labels scaled to the box). It reads the finished
file or, while the build runs, the spectra journalled so far (``OUTPUT.partial/nodes``).

    python benchmarks/emulator_training_set.py                    # the 'optical' preset's output
    python benchmarks/emulator_training_set.py --test-fraction 0.2 --components 30
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


if __name__ == "__main__":
    main()
