"""Coverage of the emulator's calibrated σ on held-out nodes of a region of the embedded grid.

    python benchmarks/emulator_calibration.py --teff 5000 6500 --logg 3 5 --feh -1.5 0.5 \\
        --wavelength 5160 5200

The nodes of the region with odd indices along every axis (interior, neighbours kept) are held
out; a PCAGPEmulator is trained on the others (``--iterations`` optimiser steps) and predicts
them. Prints the calibration factor s and the fraction of held-out pixels whose error lies within
1σ and 2σ, with the calibrated σ and with s = 1 (Gaussian: 68.3 %, 95.4 %).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from photosphere.grids.emulator import PCAGPEmulator
from photosphere.grids.presets import require_default_grid
from photosphere.grids.store import GridStore


def region(teff, logg, feh, wavelength):
    """Labels (N, 3), index tuples (N, 3), flux (N, n_pix), wavelength, axes of a grid region."""
    with GridStore.open(require_default_grid()) as store:
        names = store.label_names
        limits = dict(zip(names, (teff, logg, feh), strict=True))
        sub = {n: a[(a >= limits[n][0] - 1e-9) & (a <= limits[n][1] + 1e-9)]
               for n, a in store.axes.items()}
        pix = (store.wavelength > wavelength[0]) & (store.wavelength < wavelength[1])
        idx = np.stack(np.meshgrid(*(np.arange(sub[n].size) for n in names), indexing="ij"),
                       -1).reshape(-1, len(names))
        labels = np.array([[sub[n][j] for n, j in zip(names, row, strict=True)] for row in idx])
        flat = [store.node_index(tuple(int(np.argmin(np.abs(store.axes[n] - v)))
                                       for n, v in zip(names, row, strict=True)))
                for row in labels]
        flux = store.flux_all()[flat][:, pix].astype(np.float64)
        return names, labels, idx, flux, store.wavelength[pix], sub


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teff", nargs=2, type=float, default=(5000, 6500), metavar=("MIN", "MAX"))
    ap.add_argument("--logg", nargs=2, type=float, default=(3.0, 5.0), metavar=("MIN", "MAX"))
    ap.add_argument("--feh", nargs=2, type=float, default=(-1.5, 0.5), metavar=("MIN", "MAX"))
    ap.add_argument("--wavelength", nargs=2, type=float, default=(5160, 5200),
                    metavar=("MIN", "MAX"))
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names, labels, idx, flux, wave, sub = region(args.teff, args.logg, args.feh, args.wavelength)
    shape = np.array([sub[n].size for n in names])
    held = np.all((idx % 2 == 1) & (idx < shape - 1), axis=1)
    em = PCAGPEmulator(n_iter=args.iterations).fit_arrays(
        labels[~held], flux[~held], label_names=names, wavelength=wave,
        bounds={n: (float(sub[n][0]), float(sub[n][-1])) for n in names})
    with torch.no_grad():
        x = torch.as_tensor(labels[held])
        z = np.abs(em.predict(x).numpy() - flux[held]) / em.predict_variance(x).sqrt().numpy()
    raw = z * em.sigma_scale_
    out = {"held_out": int(held.sum()), "trained": int((~held).sum()),
           "n_pixels": int(wave.size), "components": em.n_components_,
           "sigma_scale": em.sigma_scale_, "within_1sigma": float(np.mean(z < 1)),
           "within_2sigma": float(np.mean(z < 2)),
           "uncalibrated_within_1sigma": float(np.mean(raw < 1)),
           "uncalibrated_within_2sigma": float(np.mean(raw < 2))}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['held_out']} held out / {out['trained']} trained, {out['n_pixels']} px, "
          f"{out['components']} components; s = {out['sigma_scale']:.3f}: within 1σ / 2σ "
          f"{out['within_1sigma']:.1%} / {out['within_2sigma']:.1%}; uncalibrated (s = 1) "
          f"{out['uncalibrated_within_1sigma']:.1%} / {out['uncalibrated_within_2sigma']:.1%} "
          "(Gaussian 68.3 % / 95.4 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
