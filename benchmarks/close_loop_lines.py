"""Close the loop: learn per-line corrections of a synthetic Sun on the real UVES Sun, then test
the corrected line list on a star it was not trained on (TRES WASP-14, F5 V).

Usage:
    PYTHONPATH=src python benchmarks/close_loop_lines.py SYNTH_LINES.ecsv [--data DIR]
        [--resolution 80000] [--steps 200] [--out DIR]

SYNTH_LINES.ecsv: a clone of a synthetic solar spectrum covering 5050–5350 Å (air), e.g.
    photosphere lines clone --synthesize 5772 4.44 0.0 --wavelength-min 5050 \
        --wavelength-max 5350 --prominence 0.002 --rounds 3 --steps 150 -o SYNTH_LINES.ecsv

1. Training: fit the clone (lines free, L1/L2 prior) to the UVES Sun 5050–5350 Å; report the
   residual (data − model, normalised flux) before the line corrections (globals only) and after.
2. Correction table: every line with Δ log10 A (= Δ log gf in the weak-line limit), EW before and
   after, flags; written to OUT/sun_line_corrections.ecsv; the corrected line table to
   OUT/sun_corrected_lines.ecsv.
3. Held out: TRES WASP-14 orders inside 5050–5350 Å fitted with the lines FIXED (only rv, vsini,
   continuum), once with the synthetic clone and once with the corrected one; χ²/px and rms/noise.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from _shared import SHARED
from photosphere.infer.lines.fit import FitSettings, fit_lines
from photosphere.infer.lines.table import fitted_line_table
from photosphere.io import read
from photosphere.models.lines.model import read_line_model, write_table


def residual_line(label: str, result) -> str:
    r = result.residual
    return (f"  {label:38s} median |r| {r.median_abs:.4f}  rms {r.rms:.4f}  p95 {r.p95_abs:.4f}"
            f"  chi2/px {result.chi2_per_pixel:7.2f}  rv {result.rv:+.3f}  vsini "
            f"{result.vsini:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lines")
    p.add_argument("--data", default=str(SHARED),
                   help="the shared real-data folder (default: $PHOTOSPHERE_SHARED_DATA or "
                        "../shared/data)")
    p.add_argument("--resolution", type=float, default=80000.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="close_loop_out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    obs = read(data / "optical" / "uves_sun_norm.txt").slice(5050.0, 5350.0)  # no σ: DER_SNR
    base = read_line_model(args.lines, medium="air")
    settings = FitSettings(resolution=args.resolution, continuum_degree=2, n_steps=args.steps,
                           vsini_initial=2.0, rv_search=20.0)
    print(f"1. training on the UVES Sun 5050–5350 Å ({obs.flux.size} px), "
          f"{base.n_lines} cloned lines")
    fixed = fit_lines(copy.deepcopy(base), obs, settings=FitSettings(
        **{**settings.__dict__, "fit_line_parameters": False}), progress=False)
    print(residual_line("synthetic lines (globals fitted)", fixed))
    trained = fit_lines(copy.deepcopy(base), obs, settings=settings, progress=False)
    print(residual_line("corrected lines (trained here)", trained))

    table = fitted_line_table(trained)
    table["delta_log_amplitude"] = np.log10(table["amplitude_fit"] / table["amplitude_initial"])
    table.meta["delta_log_amplitude"] = "log10(A_fit / A_initial) = Δ log gf for weak lines"
    write_table(table, out / "sun_line_corrections.ecsv")
    write_table(trained.model.stellar.to_table(), out / "sun_corrected_lines.ecsv")
    strong = table[table["observed"] & (table["depth_initial"] > 0.1)]
    print(f"2. corrections: {int(table['observed'].sum())} lines observed, "
          f"{int(table['vanished'].sum())} vanished; |Δ log A| median "
          f"{np.median(np.abs(strong['delta_log_amplitude'])):.3f} dex (lines deeper than 0.1)")
    for wl in (5051.28, 5245.63, 5273.63, 5343.4):
        i = int(np.argmin(np.abs(table["centre_initial"] - wl)))
        row = table[i]
        print(f"   {wl:.2f} Å: line at {row['centre_initial']:.3f}, EW "
              f"{1e3 * row['equivalent_width_initial']:.1f} -> "
              f"{1e3 * row['equivalent_width_fit']:.1f} mÅ, Δ log A "
              f"{row['delta_log_amplitude']:+.3f}, σ {row['sigma_initial']:.4f} -> "
              f"{row['sigma_fit']:.4f} Å")

    print("3. held out: TRES WASP-14 (F5 V) orders in 5050–5350 Å, lines fixed")
    tres = read(data / "tres" / "WASP14-2009-06-14.hdf5")
    corrected = trained.model.stellar
    held = FitSettings(resolution=44000, continuum_degree=5, fit_line_parameters=False,
                       vsini_initial=5.0)
    for k in range(tres.n_orders):
        order = tres.order(k)
        lo, hi = order.wavelength_range
        if lo < 5052 or hi > 5348:
            continue
        for label, lines in (("synthetic", base), ("corrected", corrected)):
            r = fit_lines(copy.deepcopy(lines), order, settings=held, progress=False)
            print(f"  order {k} {lo:.0f}-{hi:.0f} Å {label:9s}: chi2/px {r.chi2_per_pixel:6.2f}"
                  f"  rms/noise {r.rms_over_noise:5.2f}  rv {r.rv:+.3f}  vsini {r.vsini:.2f}")


if __name__ == "__main__":
    main()
