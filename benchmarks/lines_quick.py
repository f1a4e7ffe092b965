"""The quick real-data figures of docs/lines.md in one run (about a minute on one thread).

Usage:
    PYTHONPATH=src python benchmarks/lines_quick.py --data ../shared/data [--out lines_quick]

1. Levenberg–Marquardt clone (one round, 40 iterations) of the UVES Sun 5150–5200 Å, prominence
   0.002, and (30 iterations) of 5100–5300 Å, prominence 0.001: lines, residual rms, iterations.
2. The UVES Sun 5125–5245 Å cloned with Adam (prominence 0.003, 2 × 150 epochs; kept in ``--out``
   and reused) fitted to TRES WASP-14 order 22 (R 44 000, continuum degree 5, 100 + 150 epochs,
   lines free): the scan's starting RV, then rv, vsini, rms/noise and χ²/px of the fit.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from photosphere.infer.lines.fit import FitSettings, fit_lines, initial_rv_of
from photosphere.io import read
from photosphere.models.lines.clone import clone_spectrum
from photosphere.models.lines.model import read_line_model, write_table


def _lm_clone(sun, lo: float, hi: float, prominence: float, n_steps: int) -> dict:
    part = sun.slice(lo, hi)
    t0 = time.process_time()
    r = clone_spectrum(part.wavelength, part.flux, prominence=prominence, optimizer="lm",
                       n_rounds=1, n_steps=n_steps, progress=False)
    return {"n_lines": r.model.n_lines, "rms": r.final.rms, "iterations": len(r.history) - 1,
            "final_loss": r.history[-1], "cpu_s": time.process_time() - t0}


#: The TRES WASP-14 order 22 fit: R 44 000, continuum degree 5, 100 + 150 epochs.
TRES_SETTINGS = FitSettings(resolution=44000, continuum_degree=5, n_global_steps=100,
                            n_steps=150)


def adam_clone(sun, out: Path):
    """The UVES Sun 5125–5245 Å cloned with Adam (prominence 0.003, 2 × 150 epochs) as a
    LineModel (air), cached as an ECSV table in ``out`` and read from there when present."""
    table = out / "uves_sun_5125_5245_lines.ecsv"
    if not table.exists():
        part = sun.slice(5125.0, 5245.0)
        clone = clone_spectrum(part.wavelength, part.flux, prominence=0.003, n_rounds=2,
                               n_steps=150, progress=False)
        lines_table = clone.model.to_table()
        lines_table.meta["medium"] = "air"
        write_table(lines_table, table)
    return read_line_model(table, medium="air")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the shared data folder")
    p.add_argument("--out", default="lines_quick", help="folder for the cached Adam clone")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sun = read(data / "optical" / "uves_sun_norm.txt")
    report = {"lm_clone_5150_5200": _lm_clone(sun, 5150.0, 5200.0, 0.002, 40),
              "lm_clone_5100_5300": _lm_clone(sun, 5100.0, 5300.0, 0.001, 30)}
    lines = adam_clone(sun, out)
    order = read(data / "tres" / "WASP14-2009-06-14.hdf5").order(22)
    settings = TRES_SETTINGS
    report["tres_order22_scan_rv"] = initial_rv_of(copy.deepcopy(lines), order, settings)
    t0 = time.perf_counter()
    fit = fit_lines(copy.deepcopy(lines), order, settings=settings, progress=False)
    report["tres_order22_fit"] = {"n_lines": lines.n_lines, "rv": fit.rv, "vsini": fit.vsini,
                                  "rms_over_noise": fit.rms_over_noise,
                                  "chi2_per_pixel": fit.chi2_per_pixel,
                                  "wall_s": time.perf_counter() - t0}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
