"""σ_sys of the shipped optical model from benchmark tables: what `infer.protocol.SYSTEMATIC_FLOOR
["optical"]` holds, and how it was measured.

Reads ECSV tables of `photosphere benchmark --model optical` (any tiers, one or several files)
and prints, per group, the floor that gives the normalised differences a unit mean square
(`benchmark.floor.systematic_floor`, the fits' own σ), the rms of the references' own
uncertainties, and the shipped value, the larger of the two: with a handful of stars whose
references carry ±0.1–0.2 dex, the benchmark cannot show a systematic error smaller than the
references' own, and a floor of 0 would give σ of a few K again.

Groups: high resolution = the FGK and giant tiers (the floor applied to fits with [Fe/H] ≥ −1.5),
metal-poor = that tier (fits with [Fe/H] < −1.5), low resolution = MILES stars inside the model's
Teff (≥ 3800 K). At high resolution only spectra covering at least 4 of the model's 7 windows
count (`grids.default_model.covered_windows`): the metal-poor subgiant's file covers 3 and is
876 K off (docs/benchmark.md).

    PHOTOSPHERE_SHARED_DATA=../shared/data python benchmarks/optical_floor.py opt_*.ecsv
"""
import argparse
import json

import numpy as np
from astropy.table import Table, vstack

from photosphere.benchmark.floor import systematic_floor
from photosphere.datasets.reference_stars import LABELS, default_stars_dir
from photosphere.grids.default_model import (
    FULL_COVERAGE_WINDOWS,
    covered_windows,
    model_windows,
    observed_ranges,
    optical_model_path,
)
from photosphere.infer.batch import prepare_spectrum

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("tables", nargs="+", help="benchmark ECSV tables of the optical model")
args = parser.parse_args()

table = vstack([Table.read(t, format="ascii.ecsv") for t in args.tables])
rows = [{c: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in table.colnames}
        for r in table if r["status"] == "ok"]
windows = model_windows(optical_model_path())
stars_dir = default_stars_dir()
for r in rows:
    if r["tier"] != "MILES":
        r["covered"] = covered_windows(observed_ranges(prepare_spectrum(
            str(stars_dir / r["file"]))), windows)

full = FULL_COVERAGE_WINDOWS
groups = {
    "high_resolution": [r for r in rows if r["tier"] in ("FGK", "giant") and r["covered"] >= full],
    "metal_poor": [r for r in rows if r["tier"] == "metal-poor" and r["covered"] >= full],
    "low_resolution": [r for r in rows if r["tier"] == "MILES" and r["teff_ref"] >= 3800],
}
left_out = [(r["star"], r["covered"]) for r in rows
            if r["tier"] != "MILES" and r.get("covered", 7) < full]
print(f"left out (covering fewer than {full} of {len(windows)} windows): {left_out}")
shipped = {}
print("| group | N | floor (unit mean square) | rms reference σ | shipped |")
print("|---|---|---|---|---|")
for name, members in groups.items():
    floor = systematic_floor(members)
    ref = {k: float(np.sqrt(np.mean([r[f"{k}_ref_err"] ** 2 for r in members]))) for k in LABELS}
    shipped[name] = {k: round(max(floor[k], ref[k]), 3 if k != "teff" else 0) for k in LABELS}
    cells = [" / ".join(f"{v[k]:.3g}" for k in LABELS) for v in (floor, ref, shipped[name])]
    print(f"| {name} | {len(members)} | " + " | ".join(cells) + " |")
print(json.dumps(shipped, indent=1))

# what these σ mean on the same stars (in-sample: the floors were measured on them): the
# fraction within 1 and 2 σ_total = σ_stat ⊕ σ_sys ⊕ σ_ref, every high-resolution star the
# optical model is the default for (the subgiant included) and the MILES stars inside its Teff
print("\n| group | N | label | ≤ 1 σ_total | ≤ 2 σ_total |")
print("|---|---|---|---|---|")
judged = {"high resolution (FGK, giant, metal-poor; all)": [r for r in rows if r["tier"] in (
    "FGK", "giant", "metal-poor")], "low resolution": groups["low_resolution"]}
for name, members in judged.items():
    for k in LABELS:
        z = []
        for r in members:
            key = ("low_resolution" if r["tier"] == "MILES" else
                   "metal_poor" if r["feh"] < -1.5 else "high_resolution")
            total = np.sqrt(r[f"{k}_sigma"] ** 2 + shipped[key][k] ** 2 + r[f"{k}_ref_err"] ** 2)
            z.append(abs(r[f"{k}_diff"]) / total)
        z = np.asarray(z)
        print(f"| {name} | {len(z)} | {k} | {np.mean(z <= 1):.0%} | {np.mean(z <= 2):.0%} |")
