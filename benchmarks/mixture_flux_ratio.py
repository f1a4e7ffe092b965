"""How good are the black-body (method 2) and mean-flux-table (method 3) flux ratios against
mixing absolute fluxes (method 1)? Per chunk, as a function of (Teff₁, Teff₂), on a grid.

For every pair Teff₁ > Teff₂ (shared log g and [Fe/H]) and every chunk m of the grid we compare
the continuum ratio r = C₂/C₁ each method uses (method 1: the grid's continua; 2: Planck; 3:
q_m ⟨n₁⟩_m/⟨n₂⟩_m from the smooth ln F̄ table) and the mixed normalised spectrum at filling
factor c = 0.5 (photosphere.models.mixture.flux_ratio):

    ratio_error_<k>  chunk mean of r_k / r_1 − 1
    flux_error_<k>   max |f_mix,k − f_mix,1| over the chunk's pixels (normalised flux units)

On grid nodes method 1 is exact (up to the stored continuum's reduction); between nodes every
method interpolates, so the ``on_node=False`` rows (Teff half-way between nodes) measure the
methods' disagreement, not an error against the truth. ``--synth`` adds that truth at a few
mid-cell temperatures: Turbospectrum spectra (≈12 CPU-s each) whose chunk-mean absolute flux
and continuum are compared with the grid's linear interpolation and with the smooth tables
(ln X − ln B multilinear: MeanFluxTable for method 3, ContinuumTable for method 1).

Writes an ECSV table and a PNG plot (atomically); prints a summary.

Run:  PYTHONPATH=src python benchmarks/mixture_flux_ratio.py [--grid PATH] [--logg 4.5]
      [--feh 0.0] [--out out/mixture_flux_ratio] [--synth]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from photosphere._files import atomic_path
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.models.mixture.flux_ratio import (
    ChunkAverager,
    ContinuumTable,
    MeanFluxTable,
    mean_flux_ratio,
    mix_normalised,
    planck_ratio,
)

C = 0.5


def pairs(teff_axis: np.ndarray) -> list[tuple[float, float, bool]]:
    """(Teff₁, Teff₂, on_node) with Teff₁ > Teff₂: all node pairs, and the mid-cell points
    paired with every node below them."""
    out = [(t1, t2, True) for t1 in teff_axis for t2 in teff_axis if t2 < t1]
    mids = 0.5 * (teff_axis[1:] + teff_axis[:-1])
    out += [(t1, t2, False) for t1 in mids for t2 in teff_axis if t2 < t1]
    out += [(t1, t2, False) for t1 in teff_axis for t2 in mids if t2 < t1]
    return out


def compare(grid: GridInterpolator, logg: float, feh: float) -> dict[str, np.ndarray]:
    averager = ChunkAverager(grid.wavelength, grid.chunk_edges)
    table = MeanFluxTable(grid, averager)
    continua = ContinuumTable(grid)
    wave = torch.as_tensor(grid.wavelength, dtype=torch.float64)
    teff_axis = grid.locator.axes[grid.label_names.index("teff")].numpy()
    rows: dict[str, list] = {k: [] for k in (
        "teff_1", "teff_2", "logg", "feh", "chunk", "wavelength", "on_node", "q_absolute",
        "ratio_error_blackbody", "ratio_error_mean_flux", "flux_error_blackbody",
        "flux_error_mean_flux")}

    def labels(teff: float) -> torch.Tensor:
        values = {"teff": teff, "logg": logg, "feh": feh}
        return torch.tensor([[values[n] for n in grid.label_names]], dtype=torch.float64)

    which = torch.as_tensor(averager.which)
    for t1, t2, on_node in tqdm(pairs(teff_axis), desc="pairs", file=sys.stderr):
        x1, x2 = labels(t1), labels(t2)
        with torch.no_grad():
            n1, n2 = grid.predict(x1).double(), grid.predict(x2).double()
            c1, c2 = continua.continuum(x1), continua.continuum(x2)
            r1 = c2 / c1
            r2 = planck_ratio(wave, x1[:, 0], x2[:, 0])
            q = mean_flux_ratio(table, x1, x2)
            r3 = averager.expand(q * averager.mean(n1) / averager.mean(n2))
            half = torch.tensor([C], dtype=torch.float64)
            f1, f2, f3 = (mix_normalised(n1, n2, r, half) for r in (r1, r2, r3))
            q_abs = averager.mean(n2 * c2) / averager.mean(n1 * c1)
        for m in range(averager.n_chunks):
            sel = which == m
            rows["teff_1"].append(t1)
            rows["teff_2"].append(t2)
            rows["logg"].append(logg)
            rows["feh"].append(feh)
            rows["chunk"].append(m)
            rows["wavelength"].append(float(averager.centres[m]))
            rows["on_node"].append(on_node)
            rows["q_absolute"].append(float(q_abs[0, m]))
            rows["ratio_error_blackbody"].append(float((r2 / r1)[0, sel].mean() - 1))
            rows["ratio_error_mean_flux"].append(float((r3 / r1)[0, sel].mean() - 1))
            rows["flux_error_blackbody"].append(float((f2 - f1)[0, sel].abs().max()))
            rows["flux_error_mean_flux"].append(float((f3 - f1)[0, sel].abs().max()))
    return {k: np.asarray(v) for k, v in rows.items()}


def synth_truth(grid: GridInterpolator, logg: float, feh: float, teffs: list[float]
                ) -> dict[str, np.ndarray]:
    """Chunk-mean absolute flux at mid-cell ``teffs`` from Turbospectrum vs both interpolations
    (relative errors, per chunk)."""
    from photosphere.grids._sampling import chunk_means, rebin
    from photosphere.grids.synth.turbospectrum import synthesize

    averager = ChunkAverager(grid.wavelength, grid.chunk_edges)
    table = MeanFluxTable(grid, averager)
    continua = ContinuumTable(grid)
    out: dict[str, list] = {k: [] for k in ("teff", "chunk", "err_linear", "err_smooth",
                                             "cont_err_linear", "cont_err_smooth")}
    for teff in tqdm(teffs, desc="synthesis", file=sys.stderr):
        s = synthesize(teff, logg, feh, alpha=grid.fixed_labels.get("alpha", 0.0),
                       vmic=grid.fixed_labels.get("vmic", 1.0),
                       wavelength_min=float(grid.wavelength[0]) - 1.0,
                       wavelength_max=float(grid.wavelength[-1]) + 1.0)
        absolute = rebin(s.wavelength, s.flux * s.continuum, grid.wavelength)
        truth = chunk_means(grid.wavelength, absolute, grid.chunk_edges)
        cont_truth = chunk_means(grid.wavelength, rebin(s.wavelength, s.continuum,
                                                        grid.wavelength), grid.chunk_edges)
        x = torch.tensor([[{"teff": teff, "logg": logg, "feh": feh}[n]
                           for n in grid.label_names]], dtype=torch.float64)
        with torch.no_grad():
            linear = grid.predict_mean_flux(x).double().numpy()[0]
            smooth = torch.exp(table.log_mean_flux(x)).numpy()[0]
            cont_linear = averager.mean(grid.predict_continuum(x).double()).numpy()[0]
            cont_smooth = averager.mean(continua.continuum(x)).numpy()[0]
        for m in range(len(truth)):
            out["teff"].append(teff)
            out["chunk"].append(m)
            out["err_linear"].append(linear[m] / truth[m] - 1)
            out["err_smooth"].append(smooth[m] / truth[m] - 1)
            out["cont_err_linear"].append(cont_linear[m] / cont_truth[m] - 1)
            out["cont_err_smooth"].append(cont_smooth[m] / cont_truth[m] - 1)
    return {k: np.asarray(v) for k, v in out.items()}


def plot(rows: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    node = rows["on_node"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, method in zip(axes, ("blackbody", "mean_flux"), strict=True):
        err = np.abs(rows[f"ratio_error_{method}"])
        t1, t2 = rows["teff_1"][node], rows["teff_2"][node]
        keys = sorted(set(zip(t1, t2, strict=True)))
        worst = np.array([err[node][(t1 == a) & (t2 == b)].max() for a, b in keys])
        sc = ax.scatter([k[0] for k in keys], [k[1] for k in keys], c=100 * worst, s=60,
                        marker="s", cmap="viridis")
        fig.colorbar(sc, ax=ax, label="max over chunks |r/r_abs − 1| [%]")
        ax.set_title(f"method {'2 (black body)' if method == 'blackbody' else '3 (mean flux)'}"
                     " vs 1 (absolute)", fontsize=10)
        ax.set_xlabel("Teff₁ [K]")
    axes[0].set_ylabel("Teff₂ [K]")
    fig.suptitle(f"flux-ratio error on grid nodes, log g {rows['logg'][0]:g}, "
                 f"[Fe/H] {rows['feh'][0]:g}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)


def summary(rows: dict[str, np.ndarray]) -> str:
    lines = ["subset            method     |ratio err| median  p95    max   |Δf|@c=0.5 max"]
    for label, sel in (("nodes", rows["on_node"]), ("between nodes", ~rows["on_node"])):
        for method in ("blackbody", "mean_flux"):
            e = 100 * np.abs(rows[f"ratio_error_{method}"][sel])
            f = rows[f"flux_error_{method}"][sel]
            p95 = np.percentile(e, 95)
            lines.append(f"{label:<17} {method:<10} {np.median(e):8.2f} % {p95:6.2f} % "
                         f"{e.max():6.2f} %   {f.max():.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default=None)
    p.add_argument("--logg", type=float, default=4.5)
    p.add_argument("--feh", type=float, default=0.0)
    p.add_argument("--out", default="out/mixture_flux_ratio")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise mid-cell truths with Turbospectrum")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    grid = GridInterpolator(args.grid or default_grid_path())
    rows = compare(grid, args.logg, args.feh)
    from astropy.table import Table

    out = Path(args.out)
    table = Table(rows)
    table.meta["description"] = ("flux-ratio methods 2 (black body) and 3 (mean-flux table) vs "
                                 f"1 (absolute fluxes), c = {C}; {grid!r}")
    with atomic_path(out.with_suffix(".ecsv"), suffix=".ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    plot(rows, out.with_suffix(".png"))
    print(summary(rows))
    if args.synth:
        axis = grid.locator.axes[grid.label_names.index("teff")].numpy()
        mids = list(0.5 * (axis[1:] + axis[:-1])[::2])
        truth = synth_truth(grid, args.logg, args.feh, mids)
        print("\nmid-cell truth (Turbospectrum), chunk means, |interpolated / true − 1| "
              "median / max over chunks [%]")
        print("  teff   F̄ linear      F̄ smooth      C linear      C smooth")
        for t in mids:
            s = truth["teff"] == t
            cols = [np.abs(truth[k][s]) * 100 for k in ("err_linear", "err_smooth",
                                                         "cont_err_linear", "cont_err_smooth")]
            print(f"{t:6.0f}" + "".join(f"  {np.median(c):5.3f}/{c.max():5.3f}" for c in cols))
        with atomic_path(out.parent / (out.name + "_synth.ecsv"), suffix=".ecsv") as tmp:
            Table(truth).write(tmp, format="ascii.ecsv", overwrite=True)
    print(f"\nwrote {out.with_suffix('.ecsv')} and {out.with_suffix('.png')} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
