"""The metallicity zero point of the synthesis itself: at which [Fe/H] do Turbospectrum's
spectra of the Sun (Teff 5772 K, log g 4.44, [α/Fe] 0, vmic given) fit the UVES Sun best?

Synthesises the optical windows at [Fe/H] = -0.2, -0.1, 0, +0.1, fits each to the UVES atlas with
`validate-sun`'s fit (vsini fixed, R, macroturbulence and RV free, a continuum per window) and
prints the sum of squared residuals per window and over all, then the minimum of a parabola
through them per window. No emulator and no fit of Teff or log g is involved.

    PHOTOSPHERE_SHARED_DATA=../shared/data python benchmarks/sun_metallicity_zero_point.py \
        [--vmic 1.0] [--atmosphere marcs|atlas9|auto] [--no-molecules]

About 4 x 70 s of syntheses on an idle core.
"""
import argparse
import json
from dataclasses import replace

import numpy as np

from photosphere.grids.synth.validation import _synthetics, validate_star
from photosphere.grids.synth.validation_stars import (
    read_spectrum,
    split_windows,
    validation_star,
    window_set,
)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--vmic", type=float, default=1.0, help="km/s")
parser.add_argument("--atmosphere", default=None, help="default: the optical window set's")
parser.add_argument("--no-molecules", action="store_true")
args = parser.parse_args()
fehs = [-0.2, -0.1, 0.0, 0.1]
star0 = validation_star("sun")
wset = window_set("optical")
atmosphere = args.atmosphere or wset.atmosphere
molecules = wset.molecules and not args.no_molecules
wave, flux = read_spectrum(star0)
covered, pieces, _ = split_windows(wave, flux, wset.windows)
rows = {}
for feh in fehs:
    star = replace(star0, labels={**star0.labels, "feh": feh, "vmic": args.vmic})
    syn = _synthetics(star, covered, atmosphere, molecules, None)
    v = validate_star(star, windows=wset, synthetic=syn, atmosphere=atmosphere,
                      molecules=molecules)
    res = v.observed - v.model
    per = [float(np.sum(res[v.window_index == k] ** 2)) for k in range(len(covered))]
    rows[feh] = per
    print(feh, [round(p, 3) for p in per], round(sum(per), 3), flush=True)
out = {}
for k in range(len(covered) + 1):
    y = np.array([sum(rows[f]) if k == len(covered) else rows[f][k] for f in fehs])
    a, b, c = np.polyfit(fehs, y, 2)
    out["all" if k == len(covered) else str(covered[k])] = round(-b / (2 * a), 3)
print(json.dumps(out, indent=1))
