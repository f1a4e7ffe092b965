"""Close the loop through the grid builder: synthesise a held-out star with the Gaia-ESO line list
as shipped and as calibrated on the Sun, and compare both to its real spectrum.

Usage:
    PYTHONPATH=src python benchmarks/close_loop_grid.py CORRECTIONS.ecsv [--data DIR]
        [--teff 6475 --logg 4.1 --feh 0.0] [--resolution 44000] [--max-depth D] [--out DIR]

CORRECTIONS.ecsv: the per-line correction table written by benchmarks/close_loop_lines.py
(``sun_line_corrections.ecsv``: a synthetic-Sun clone trained on the UVES Sun).

1. ``calibrate_linelist`` writes the calibrated Turbospectrum list; a build directory of
   symbolic links (bin/, DATA/ of the installed Turbospectrum, linelists/ with the calibrated
   list) is what ``$PHOTOSPHERE_TURBOSPECTRUM`` points the grid builder (``grids.synth``) at.
2. ``grids.synth.turbospectrum.synthesize`` makes the held-out star (default WASP-14, F5 V:
   Teff 6475 K, log g 4.1, [Fe/H] 0.0) over 5055–5320 Å with each list.
3. Each synthesis is compared with the TRES WASP-14 orders inside that range: rotation (vsini
   scanned 2–14 km/s), Gaussian LSF at R, RV scanned around the star's −4.9 km/s, rebinned onto
   the pixels, times a degree-5 Chebyshev continuum fitted by weighted least squares; the best
   χ²/px of each is printed with the RV and vsini it needs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from _shared import SHARED
from photosphere.io import read
from photosphere.models.lines.calibrate import calibrate_linelist
from photosphere.ops.doppler import doppler_factor
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.ops.lsf import gaussian_broaden
from photosphere.ops.resample import rebin
from photosphere.ops.rotation import rotational_broaden

WINDOW = (5055.0, 5320.0)
VELOCITY_STEP = 0.5  # km/s, the fine grid of the broadening


def calibrated_build(corrections: Path, where: Path, max_depth: float | None) -> Path:
    """A Turbospectrum build layout whose line list is the Sun-calibrated one."""
    from photosphere.grids.synth.build import GES_LINELIST, installation

    inst = installation()
    root = where / "turbospectrum-sun-calibrated"
    (root / "linelists").mkdir(parents=True, exist_ok=True)
    for name in ("bin", "DATA"):
        link = root / name
        if not link.exists():
            link.symlink_to(inst.root / name, target_is_directory=True)
    for stamp in ("BUILD.json",):
        if (inst.root / stamp).exists() and not (root / stamp).exists():
            (root / stamp).symlink_to(inst.root / stamp)
    result = calibrate_linelist(inst.linelist, Table.read(corrections),
                                root / "linelists" / GES_LINELIST, max_depth=max_depth)
    big = np.abs(result.delta_log_gf) > 0.05
    print(f"1. calibrated list (cloned lines deeper than {max_depth} skipped): "
          f"{result.n_corrections} corrections used, {result.n_changed} list lines changed, "
          f"{int(big.sum())} by more than 0.05 dex (median |Δ log gf| of those "
          f"{np.median(np.abs(result.delta_log_gf[big])):.3f}) -> {root}")
    return root


def chi2_best(wave_s: np.ndarray, flux_s: np.ndarray, order, resolution: float
              ) -> tuple[float, float, float]:
    """Best (χ²/px, rv km/s, vsini km/s) of a synthetic spectrum against one order."""
    good = ~np.asarray(order.mask) & (np.asarray(order.sigma) > 0)
    data_w = np.asarray(order.wavelength)
    data_f, data_s = np.asarray(order.flux)[good], np.asarray(order.sigma)[good]
    fine = log_uniform_wavelength(data_w[0] * 0.999, data_w[-1] * 1.001, VELOCITY_STEP)
    base = torch.as_tensor(np.interp(fine, wave_s, flux_s))
    x = 2.0 * (data_w - data_w[0]) / (data_w[-1] - data_w[0]) - 1.0
    cheb = np.polynomial.chebyshev.chebvander(x, 5)[good]
    best = (np.inf, np.nan, np.nan)
    for vsini in np.arange(2.0, 14.1, 1.0):
        broad = gaussian_broaden(rotational_broaden(base, vsini, VELOCITY_STEP), resolution,
                                 VELOCITY_STEP)
        for rv in np.arange(-7.0, -2.9, 0.25):
            m = rebin(torch.as_tensor(fine) * float(doppler_factor(rv)), broad,
                      torch.as_tensor(data_w.copy())).numpy()[good]
            design = cheb * m[:, None] / data_s[:, None]
            coef, *_ = np.linalg.lstsq(design, data_f / data_s, rcond=None)
            chi2 = float(np.sum((data_f / data_s - design @ coef) ** 2) / good.sum())
            if chi2 < best[0]:
                best = (chi2, float(rv), float(vsini))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corrections")
    p.add_argument("--data", default=str(SHARED),
                   help="the shared real-data folder (default: $PHOTOSPHERE_SHARED_DATA or "
                        "../shared/data)")
    p.add_argument("--teff", type=float, default=6475.0)
    p.add_argument("--logg", type=float, default=4.1)
    p.add_argument("--feh", type=float, default=0.0)
    p.add_argument("--resolution", type=float, default=44000.0)
    p.add_argument("--max-depth", type=float, default=None,
                   help="skip corrections of cloned lines deeper than this (saturated lines)")
    p.add_argument("--out", default=None, help="keep the calibrated build here (default: temp)")
    args = p.parse_args()
    torch.set_num_threads(1)
    from photosphere.grids.synth.build import ENV_BUILD
    from photosphere.grids.synth.turbospectrum import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.out or tmp)
        root = calibrated_build(Path(args.corrections), where, args.max_depth)
        spectra = {}
        for label, build in (("shipped", None), ("Sun-calibrated", root)):
            if build is None:
                os.environ.pop(ENV_BUILD, None)
            else:
                os.environ[ENV_BUILD] = str(build)
            s = synthesize(args.teff, args.logg, args.feh, wavelength_min=WINDOW[0],
                           wavelength_max=WINDOW[1])
            spectra[label] = (np.asarray(s.wavelength), np.asarray(s.flux))
        os.environ.pop(ENV_BUILD, None)
    f0 = spectra["shipped"][1]
    print(f"2. synthesised {args.teff:g}/{args.logg:g}/{args.feh:g} over {WINDOW} Å with both "
          f"lists: they differ by max {np.max(np.abs(spectra['Sun-calibrated'][1] - f0)):.3f}")
    tres = read(Path(args.data) / "tres" / "WASP14-2009-06-14.hdf5")
    print("3. held out: TRES WASP-14 orders (χ²/px, rv, vsini at the best scan point)")
    for k in range(tres.n_orders):
        order = tres.order(k)
        lo, hi = order.wavelength_range
        if lo < WINDOW[0] + 3 or hi > WINDOW[1] - 3:
            continue
        row = []
        for label, (w, f) in spectra.items():
            chi2, rv, vsini = chi2_best(w, f, order, args.resolution)
            row.append(f"{label} {chi2:7.2f} (rv {rv:+.2f}, vsini {vsini:.0f})")
        print(f"  order {k} {lo:.0f}-{hi:.0f} Å: " + "  |  ".join(row), flush=True)


if __name__ == "__main__":
    main()
