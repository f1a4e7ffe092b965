"""Real spectra, checked as a user would: the Sun (UVES) and WASP-14 (TRES echelle).

Fits with a photosphere grid (``--grid``, default the embedded grid) and prints the labels with
their formal 1σ, the 1σ after scaling by χ²_red, and with the correlated-noise kernel estimated
from the residuals (``noise="auto"``), beside the reference values:

* UVES Sun (``optical/uves_sun_norm.txt``): Teff 5772 K, log g 4.44, [Fe/H] 0.00; targets
  |ΔTeff| < 100 K, |Δlog g| < 0.2, |Δ[Fe/H]| < 0.1. The line broadening is modelled as a solar
  analysis does it: the Sun's rotation fixed at vsini = 1.9 km/s, the radial-tangential
  macroturbulence ζ fitted (``macroturbulence="fit"``), the instrument at R (``--resolution-uves``).
* WASP-14 TRES (``tres/WASP14-2009-06-14.hdf5``): Teff 6475 ± 100 K, log g 4.07 ± 0.2,
  [M/H] 0.0 ± 0.2, vsini 4.9 km/s (Joshi et al. 2009); the orders inside the grid window are
  fitted jointly. Printed beside it: Starfish (PHOENIX emulator, orders 21-24 of the same
  file; gully/starfish-demo, demo2/theta.json): 6304 K, 4.16, −0.31, vsini 6.7 km/s.

Both are fitted with ``clip=3`` by default (pixels the model cannot make, e.g. lines missing from
the grid's line list, are masked iteratively; ``--clip 0`` turns it off).

Run:  PYTHONPATH=src python benchmarks/validate_real.py [--grid GRID.h5] [--resolution-uves R]
          [--clip K] [--noise-auto]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from _shared import SHARED
from photosphere.infer.batch import load_grid_model, with_uncertainty
from photosphere.infer.optimize import fit
from photosphere.io import read

SUN = {"teff": 5772.0, "logg": 4.44, "feh": 0.0}
SUN_VSINI = 1.9  # km/s, the Sun's equatorial rotation
WASP14 = {"teff": 6475.0, "logg": 4.07, "feh": 0.0, "vsini": 4.9}
WASP14_STARFISH = {"teff": 6303.7, "logg": 4.16, "feh": -0.31, "vsini": 6.68}


def _report(name: str, result, reference: dict, floor: dict | None = None) -> dict:
    scale = np.sqrt(max(result.chi2_reduced, 1.0))
    print(f"\n{name}: χ²_red {result.chi2_reduced:.2f} over {result.n_pixels} px in "
          f"{len(result.segments)} segment(s) ({result.flags.get('clipped', 0)} clipped); "
          f"converged {result.converged}; vsini {result.values.get('vsini', 0):.2f} km/s")
    print(f"{'label':6s} {'ref':>8s} {'fit':>9s} {'σ formal':>9s} {'σ·√χ²':>8s} {'|Δ|/σ·√χ²':>9s}")
    out = {}
    for n, ref in reference.items():
        if n not in result.values:
            continue
        v, s = result.labels[n]
        d = abs(v - ref) / (s * scale) if s > 0 else float("inf")
        print(f"{n:6s} {ref:8.4g} {v:9.5g} {s:9.3g} {s * scale:8.3g} {d:9.2f}")
        out[n] = {"reference": ref, "value": v, "sigma": s, "sigma_scaled": s * scale}
    return out


SUN_BROADENING = {"fixed": {"vsini": SUN_VSINI}, "macroturbulence": "fit"}
VARIANTS = {
    "vsini 1.9, ζ fitted (the protocol above)": {"clip": 3.0, **SUN_BROADENING},
    "vsini 1.9, ζ fitted, R 80 000": {"clip": 3.0, "resolution": 80000.0, **SUN_BROADENING},
    "vsini and ζ both fitted": {"clip": 3.0, "macroturbulence": "fit"},
    "vsini fitted, ζ Doyle et al. (2014)": {"clip": 3.0, "macroturbulence": "auto"},
    "vsini fitted, no ζ (session 2 protocol)": {"clip": 3.0},
    "no clipping": {"clip": None},
    "clip 3": {"clip": 3.0},
    "clip 2.5": {"clip": 2.5},
    "clip 4": {"clip": 4.0},
    "clip 3, R 80 000": {"clip": 3.0, "resolution": 80000.0},
    "clip 3, no continuum (data normalised)": {"clip": 3.0, "continuum_degree": None},
    "clip 3, continuum degree 5": {"clip": 3.0, "continuum_degree": 5},
    "clip 3, Teff and log g fixed at the Sun's": {"clip": 3.0,
                                                  "fixed": {"teff": 5772.0, "logg": 4.44}},
}


def _sun_variants(model, sun, resolution: float, model_error: str) -> dict:
    """The Sun under several defensible analysis choices: how much the labels move."""
    print("\nUVES Sun under other analysis choices")
    print(f"{'choice':40s} {'Teff':>6s} {'log g':>6s} {'[Fe/H]':>7s} {'vsini':>6s} {'χ²_red':>7s}")
    out = {}
    for name, kw in VARIANTS.items():
        res = fit(model, sun, **{"resolution": resolution, "model_error": model_error, **kw})
        v = res.values
        print(f"{name:40s} {v['teff']:6.0f} {v['logg']:6.3f} {v['feh']:7.3f} {v['vsini']:6.2f} "
              f"{res.chi2_reduced:7.1f}")
        out[name] = {n: v[n] for n in ("teff", "logg", "feh", "vsini")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", help="HDF5 grid (default: the embedded grid)")
    p.add_argument("--resolution-uves", type=float, default=60000.0)
    p.add_argument("--resolution-tres", type=float, default=44000.0)
    p.add_argument("--noise-auto", action="store_true", help="also fit with noise='auto'")
    p.add_argument("--sun-variants", action="store_true",
                   help="also fit the Sun under other analysis choices (R, continuum degree, "
                        "clipping) and print how the labels move")
    p.add_argument("--model-error", choices=("auto", "none"), default="auto",
                   help="fit(model_error=...): marginalise the grid's interpolation error or "
                        "treat the grid as exact (the figures quoted before it existed)")
    p.add_argument("--line-strengths", metavar="ECSV",
                   help="fit through the grid corrected by these empirical line strengths "
                        "(`photosphere grid calibrate-lines`; made on the Sun, so the Sun is "
                        "then in-sample and WASP-14 is the test)")
    p.add_argument("--clip", type=float, default=3.0,
                   help="robust clipping threshold in σ (default 3; 0: no clipping)")
    args = p.parse_args(argv)
    clip = args.clip if args.clip > 0 else None
    torch.set_num_threads(1)
    model = load_grid_model(args.grid)
    if args.line_strengths:
        from photosphere.grids.line_strengths import CorrectedSource, LineStrengths

        model = CorrectedSource(model, LineStrengths.read(args.line_strengths))
        print(f"line strengths {args.line_strengths} (digest {model.cache_token[:12]})")
    lo, hi = float(model.wavelength[0]), float(model.wavelength[-1])
    print(f"grid {args.grid or 'default'}: {lo:.1f}-{hi:.1f} Å, bounds {model.bounds}")
    report = {}

    sun = with_uncertainty(read(SHARED / "optical" / "uves_sun_norm.txt").slice(lo, hi))
    res = fit(model, sun, resolution=args.resolution_uves, clip=clip,
              source="uves_sun_norm.txt", model_error=args.model_error, **SUN_BROADENING)
    report["sun"] = _report("UVES Sun", res, SUN)
    print(f"ζ (vmac) {res.values['vmac']:.2f} km/s, vsini fixed at {SUN_VSINI}")
    if args.noise_auto:
        res = fit(model, sun, resolution=args.resolution_uves, noise="auto", clip=clip,
                  **SUN_BROADENING)
        report["sun_noise_auto"] = _report("UVES Sun, noise='auto'", res, SUN)
        print(f"kernel: {res.flags.get('noise')}")

    if args.sun_variants:
        report["sun_variants"] = _sun_variants(model, sun, args.resolution_uves,
                                               args.model_error)

    tres = read(SHARED / "tres" / "WASP14-2009-06-14.hdf5")
    inside = (tres.wavelength[:, -1] > lo) & (tres.wavelength[:, 0] < hi)
    tres = with_uncertainty(tres.select_orders(np.flatnonzero(inside)))
    res = fit(model, tres, resolution=args.resolution_tres, clip=clip,
              source="WASP14-2009-06-14.hdf5", model_error=args.model_error)
    report["wasp14"] = _report(f"WASP-14 TRES ({int(inside.sum())} orders)", res, WASP14)
    print("Starfish on the same file (orders 21-24): "
          + ", ".join(f"{k} {v:g}" for k, v in WASP14_STARFISH.items()))
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
