"""Peer measurement for bench_interpolation.py: Starfish's emulator on the same grid file.

Runs under the Python 3.9 interpreter that has ``astrostarfish`` installed (it does not import
photosphere): converts a photosphere grid file into Starfish's HDF5 grid layout, builds
``Starfish.emulator.Emulator.from_grid`` with the given number of PCA components, times its calls
and prints one JSON document.

    /path/to/py39/bin/python benchmarks/_starfish_peer.py GRID --components K [--train-maxiter N]

With ``--likelihood-pixels N [N ...]`` (used by bench_fit.py) it times instead Starfish's
``SpectrumModel.log_likelihood`` (emulator reconstruction, rotation, Doppler shift, resampling,
Chebyshev continuum, dense N×N covariance with its global kernel, Cholesky) on N-pixel
observations made from the grid, one call after another, and prints seconds per call per N.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np


def to_starfish(grid: Path, out: Path) -> np.ndarray:
    """Write the present nodes of a photosphere grid in Starfish's layout; returns grid points."""
    with h5py.File(grid, "r") as f:
        names = json.loads(f.attrs["label_names"])
        axes = [f["labels"][n][:] for n in names]
        present = f["present"][:]
        fl = f["flux"]
        scale = float(fl.attrs.get("scale_factor", 1.0))
        offset = float(fl.attrs.get("add_offset", 0.0))
        flux = fl[:].astype(np.float64) * scale + offset
        wave = f["wavelength"][:]
        dv = float(f.attrs["velocity_step"])
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(names))
    points = mesh[present]
    key = "".join(f"{n}{{{i}:.3f}}" for i, n in enumerate(names))
    with h5py.File(out, "w") as h:
        w = h.create_dataset("wl", data=wave)
        w.attrs.update({"units": "AA", "dv": dv})
        g = h.create_dataset("grid_points", data=points)
        g.attrs["names"] = names
        fg = h.create_group("flux")
        fg.attrs.update({"key_name": key, "units": "normalized"})
        kept = flux[present]
        for i in range(len(points)):  # Python 3.9: no zip(strict=)
            fg.create_dataset(key.format(*points[i]), data=kept[i])
    return points


def rate(fn, min_seconds: float = 2.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed


def likelihood_timing(emu, pixels: list[int], min_seconds: float) -> dict:
    """Seconds per SpectrumModel.log_likelihood call for N-pixel data in the grid window."""
    from Starfish import Spectrum
    from Starfish.models import SpectrumModel

    lo, hi = float(emu.wl.min()), float(emu.wl.max())
    centre = emu.grid_points.mean(0)
    out = {}
    for n in pixels:
        # a log-uniform window of n pixels at ~1 km/s, centred in the grid's range
        half = 0.5 * n * 1.0 / 299792.458
        mid = np.sqrt(lo * hi)
        wave = mid * np.exp(np.linspace(-half, half, n))
        flux = np.ones(n) + 0.01 * np.random.default_rng(n).normal(size=n)
        data = Spectrum(wave, flux, np.full(n, 0.01), name="bench")
        model = SpectrumModel(emu, data, grid_params=list(centre), vz=0.0, vsini=4.0,
                              cheb=[0.0, 0.0], global_cov={"log_amp": -8.0, "log_ls": 1.0})
        out[str(n)] = 1.0 / rate(model.log_likelihood, min_seconds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--components", type=int, default=4)
    ap.add_argument("--train-maxiter", type=int, default=0,
                    help="Nelder-Mead iterations of Starfish's training (0: untrained)")
    ap.add_argument("--likelihood-pixels", type=int, nargs="+",
                    help="time SpectrumModel.log_likelihood at these numbers of pixels")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    args = ap.parse_args()
    import Starfish
    from Starfish.emulator import Emulator

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "starfish_grid.hdf5"
        points = to_starfish(Path(args.grid), path)
        start = time.perf_counter()
        emu = Emulator.from_grid(str(path), n_components=args.components)
        build_s = time.perf_counter() - start
    if args.likelihood_pixels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = likelihood_timing(emu, args.likelihood_pixels, args.min_seconds)
        from _shared import environment  # this script's folder: stdlib + threadpoolctl only

        print(json.dumps({"starfish_version": getattr(Starfish, "__version__", "?"),
                          "n_components": emu.ncomps, "pca_s": build_s,
                          "log_likelihood_s": seconds, "environment": environment()}))
        return
    train_s = None
    if args.train_maxiter:
        start = time.perf_counter()
        emu.train(options={"maxiter": args.train_maxiter})
        train_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    lo, hi = points.min(0), points.max(0)
    params = lo + (hi - lo) * rng.random(points.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not trained" when --train-maxiter is 0
        call = rate(lambda: emu(params))
        flux = rate(lambda: emu.load_flux(params))
    print(json.dumps({"starfish_version": getattr(Starfish, "__version__", "?"),
                      "n_nodes": len(points), "n_components": emu.ncomps,
                      "pca_s": build_s, "train_s": train_s, "train_maxiter": args.train_maxiter,
                      "call_per_s": call, "s_per_call": 1 / call,
                      "load_flux_per_s": flux, "s_per_load_flux": 1 / flux}))


if __name__ == "__main__":
    main()
