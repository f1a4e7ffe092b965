"""The synthetic-to-real gap of a neural model, measured on the real benchmark stars.

For every star of ``stars/labels.csv`` whose file reads today, whose spectrum is high-resolution
(R ≥ 20 000) and whose reference labels lie inside the model's training box:

* **real**: the network on the file, exactly as ``photosphere nn predict FILE`` and the
  benchmark's ``nn`` engine run it (``read_for_prediction``, ``prepare_image``, rv 0);
* **synthetic**: the network on the star's *twin*: Turbospectrum at the reference labels with the
  grid's own settings (``nn.twin.synthesize_twin``; ATLAS9, [α/Fe] 0, vmic 1 km/s), through the
  model's line strengths, layout and image maker (``nn.twin.twin_simulator``) at the star's R
  (file header, else the table), its vsini (table, else ``--vsini``) and a radial-tangential
  macroturbulence ζ_RT fitted to the real spectrum (0-10 km/s; or ``--zeta``), with white
  noise at the real image's own S/N per order (DER_SNR), ``--draws`` seeded draws, normalised
  as training images; also at ζ = the training range's ends, and from the grid interpolated at
  the reference labels instead of a fresh synthesis;
* **gap** = real − synthetic, split into an *input* part (real as read − real with the input
  fixed: 1D pixels of zero flux masked, e.g. the HARPS s1d CCD gap, and the rv of its lines
  against the twin's removed), a *spectral* part (fixed real − twin filled with the continuum
  where the fixed real input is) and a *coverage* part (filled twin − complete twin); the total
  error real − reference = gap + (synthetic − reference) exactly, and the share of the squared
  total error carried by each part is Σ part·total / Σ total² over the stars;
* the real image against the noise-free twin: rms per order (noise removed) and the largest
  residuals, named by the strongest line of the Gaia-ESO list nearby.

``--snr 20 50 100`` adds the second measurement: the real images degraded with white noise on
the network's pixels to each S/N (``--draws`` seeds), predicted, and per S/N the mean |error|,
mean σ and the fractions with |error| ≤ 1σ_total and ≤ 2σ_total (σ_total = σ ⊕ reference σ);
the twins degraded the same way are the synthetic baseline.

    PYTHONPATH=src PHOTOSPHERE_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/nn_real_gap.py [--model default] [--plot docs/nn-real-gap.png] \\
        [--snr 20 50 100] [--draws 8] [--markdown]

Turbospectrum runs once per distinct reference label set (a minute or more each on a loaded
core) and is cached in ``$PHOTOSPHERE_CACHE/nn/twins``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from _shared import SHARED
from nn_sun_gap import depth_ratios
from photosphere._files import atomic_path, cache_dir
from photosphere.benchmark.engines import resolution_of
from photosphere.datasets.reference_stars import HIGH_RESOLUTION, LABELS, Star, read_stars, select
from photosphere.errors import PhotosphereError
from photosphere.grids.store import GridStore
from photosphere.nn.augment import pixel_velocity
from photosphere.nn.data import DataConfig, normalise_orders
from photosphere.nn.evaluate import predict_ensemble
from photosphere.nn.inputs import prepare_image
from photosphere.nn.predict import load_model, model_grid, predict_spectrum, read_for_prediction
from photosphere.nn.train import source_from_grid
from photosphere.nn.twin import (
    FixedSource,
    added_sigma,
    line_shift,
    noisy_copies,
    order_mismatch,
    residual_peaks,
    synthesize_twin,
    twin_simulator,
)
from photosphere.ops.noise import estimate_snr
from photosphere.spectrum import EchelleSpectrum

NAMES = {"teff": "Teff", "logg": "log g", "feh": "[Fe/H]"}
UNITS = {"teff": "K", "logg": "dex", "feh": "dex"}
DIFF = {"teff": "{:+.0f}", "logg": "{:+.2f}", "feh": "{:+.2f}"}
VALUE = {"teff": "{:.0f}", "logg": "{:.2f}", "feh": "{:+.2f}"}
# A(X) of Grevesse, Asplund & Sauval (2007), for ranking line-list entries near a residual only
ABUNDANCE = {3: 1.05, 6: 8.39, 7: 7.78, 8: 8.66, 11: 6.17, 12: 7.53, 13: 6.37, 14: 7.51,
             16: 7.14, 19: 5.08, 20: 6.31, 21: 3.17, 22: 4.90, 23: 4.00, 24: 5.64, 25: 5.39,
             26: 7.45, 27: 4.92, 28: 6.23, 29: 4.21, 30: 4.60, 38: 2.92, 39: 2.21, 40: 2.58,
             56: 2.17, 57: 1.13, 58: 1.58, 60: 1.45, 62: 1.01, 63: 0.52}


# ------------------------------------------------------------------------------ twins (cached)
def twin_source(labels: dict[str, float], spec) -> FixedSource:
    """Turbospectrum at ``labels`` with the grid's settings, cached on disk."""
    key = json.dumps([labels, spec.to_json()], sort_keys=True)
    path = cache_dir("nn", "twins") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    if path.is_file():
        d = np.load(path, allow_pickle=False)
        return FixedSource(d["wavelength"], d["flux"], labels, str(d["medium"]),
                           json.loads(str(d["provenance"])))
    t0 = time.perf_counter()
    src = synthesize_twin(labels, spec)
    print(f"  synthesised {labels} in {time.perf_counter() - t0:.0f} s", flush=True)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, wavelength=src.wavelength, flux=src.flux, medium=src.medium,
                 provenance=json.dumps(src.provenance, default=str))
    return src


# ------------------------------------------------------------------------------ predictions
def predict(ck, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ, σ (N, 4) of the calibrated network for images (N, n_orders, n_pixels), as
    ``predict_spectrum`` runs it."""
    mu, cov = predict_ensemble([(ck.model, ck.label_scaling, ck.temperature)],
                               torch.from_numpy(np.ascontiguousarray(images)))
    return mu.double().numpy(), cov.diagonal(dim1=-2, dim2=-1).sqrt().double().numpy()


@dataclass
class StarGap:
    """What the script measures on one star (labels in order teff, logg, feh, vsini)."""

    star: Star
    resolution: float
    resolution_source: str
    vsini: float
    vsini_source: str
    zeta: float  # ζ_RT km/s of the twin
    zeta_source: str
    snr: np.ndarray  # (n_orders,) DER_SNR of the real image (pixels it covers)
    real: np.ndarray  # (4,) μ on the real file as read (predict_spectrum)
    real_sigma: np.ndarray
    out_of_distribution: bool
    fixed: np.ndarray  # μ on the real file, input fixed: zero-flux pixels masked, rv removed
    syn: np.ndarray  # (4,) mean μ over the noise draws of the twin (every layout pixel)
    syn_filled: np.ndarray  # the same with the twin filled where the real input is filled
    syn_sigma: np.ndarray  # mean σ
    syn_spread: np.ndarray  # std of μ over the draws
    syn_zeta: dict[float, np.ndarray]  # ζ -> mean μ (the training range's ends)
    grid: np.ndarray  # mean μ of the twin made from the grid interpolated at the labels
    syn_vsini0: np.ndarray  # mean μ of the twin without rotation
    rv: float  # km/s, real lines relative to the twin's
    filled: float  # fraction of the fixed input's layout pixels filled (not covered)
    mismatch: object  # nn.twin.OrderMismatch (fixed real image vs noise-free twin)
    peaks: list = field(default_factory=list)  # (λ Å, residual, twin depth, line id)
    real_image: np.ndarray | None = None  # the fixed real image
    twin_image: np.ndarray | None = None  # noise-free, not normalised, filled like the real
    keep: np.ndarray | None = None  # pixels the real spectrum covers

    def ref(self, name: str) -> tuple[float, float]:
        return self.star.reference[name]


def line_finder(teff: float):
    """λ -> the line-list entry most likely to dominate there (A(X) + log gf − θχ, within
    ± 0.05 Å of λ), as 'Fe I 5227.19'."""
    from photosphere.grids.synth.build import installation
    from photosphere.grids.synth.linelists import read_linelist

    rows = []
    for sp in read_linelist(str(installation().linelist)):
        z = int(float(sp.code))
        name = sp.name_line.strip("'").split()[0] + " " + sp.name_line.strip("'").split()[1]
        for row, lam in zip(sp.rows, sp.wavelength, strict=True):
            if 5000 < lam < 5400:
                chi, loggf = (float(v) for v in row.split()[1:3])
                rows.append((lam, ABUNDANCE.get(z, 1.0) + loggf - 5040 / teff * chi, name))
    lam = np.array([r[0] for r in rows])

    def find(wavelength: float) -> str:
        near = np.flatnonzero(np.abs(lam - wavelength) <= 0.05)
        if not near.size:
            return "no listed line"
        best = max(near, key=lambda k: rows[k][1])
        return f"{rows[best][2]} {rows[best][0]:.2f}"

    return find


ZETA_STEPS = np.arange(0.0, 10.01, 0.5)  # km/s tried when ζ_RT is fitted


def real_prediction(ck, spectrum, layout: np.ndarray, medium: str, star: Star):
    """``predict_spectrum`` on the file as read (the benchmark's nn engine), and the same image
    through :func:`predict` (checked equal, so the twins go through the same path)."""
    found = predict_spectrum(spectrum, ck)
    image = prepare_image(spectrum, layout, medium).image
    mu, sigma = predict(ck, image[None])
    direct = np.array([found.labels[n][0] for n in ck.label_scaling.names])
    if not np.allclose(direct, mu[0], rtol=1e-5, atol=1e-4):
        raise RuntimeError(f"{star.star}: batch prediction {mu[0]} differs from "
                           f"predict_spectrum {direct}")
    ood = bool((found.provenance.get("consistency") or {}).get("out_of_distribution"))
    return mu[0], sigma[0], ood


def fixed_input(spectrum, layout: np.ndarray, medium: str, twin: np.ndarray):
    """The input fixed as a careful user would: 1D pixels of zero flux (the HARPS s1d CCD gap)
    masked like masked pixels, and the rv of its lines against ``twin`` (normalised image)
    removed -> (PreparedImage, rv km/s)."""
    if not isinstance(spectrum, EchelleSpectrum):
        spectrum = spectrum.with_mask(~(np.asarray(spectrum.flux) > 0))
    unshifted = prepare_image(spectrum, layout, medium)
    rv = line_shift(unshifted.image, twin, pixel_velocity(torch.from_numpy(layout)))
    return prepare_image(spectrum, layout, medium, rv=rv), rv


def fit_zeta(make_twin, image: np.ndarray, keep: np.ndarray) -> float:
    """The ζ_RT of :data:`ZETA_STEPS` whose twin (``make_twin(ζ)``, not normalised) leaves the
    least mismatch with ``image`` over the pixels ``keep``."""
    cost = [np.nanmean(order_mismatch(image, normalise_orders(torch.from_numpy(
        make_twin(float(z)))).numpy(), keep).mismatch_rms ** 2) for z in ZETA_STEPS]
    return float(ZETA_STEPS[int(np.argmin(cost))])


def measure(star: Star, ck, spec, grid_sim, zeta: float | None,
            zeta_range: tuple[float, float], vsini_default: float, draws: int,
            n_peaks: int) -> StarGap:
    """Real, twin and grid-twin predictions and the image comparison for one star; ζ_RT of the
    twin None: fitted (:func:`fit_zeta`)."""
    spectrum = read_for_prediction(star.path)
    resolution, r_source = resolution_of(spectrum, star)
    layout = np.asarray(ck.data["layout_wavelength"])
    medium = ck.data.get("layout_medium", "air")
    mu_real, sig_real, ood = real_prediction(ck, spectrum, layout, medium, star)
    vsini, v_source = ((float(star.vsini), "table") if star.vsini is not None
                       else (vsini_default, "--vsini"))
    labels = {n: star.reference[n][0] for n in LABELS}
    sim = twin_simulator(ck, twin_source(labels, spec))

    def clean(simulator, z: float, v: float = vsini) -> np.ndarray:
        row = torch.tensor([[labels["teff"], labels["logg"], labels["feh"], v]],
                           dtype=torch.float64)
        return simulator.images(row, resolution=torch.tensor([resolution], dtype=torch.float64),
                                macroturbulence=torch.tensor([z], dtype=torch.float64))[0].numpy()

    start = float(np.mean(zeta_range)) if zeta is None else zeta
    prepared, rv = fixed_input(spectrum, layout, medium,
                               normalise_orders(torch.from_numpy(clean(sim, start))).numpy())
    image = prepared.image
    keep = image != 1.0  # prepare_image puts exactly 1 where it fills
    zeta_source = "--zeta" if zeta is not None else "fitted"
    if zeta is None:
        zeta = fit_zeta(lambda z: clean(sim, z), image, keep)
    twin = clean(sim, zeta)
    snr = np.array([estimate_snr(row[k]) for row, k in zip(image, keep, strict=True)])

    def twin_mu(img: np.ndarray, fill: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if fill:  # the twin filled with the continuum where the real input is
            img = np.where(keep, img, 1.0)
        return predict(ck, noisy_copies(img, 1 / snr, list(range(draws)),
                                        keep=keep if fill else None))

    mu_syn, sig_syn = twin_mu(twin)
    twin_norm = normalise_orders(torch.from_numpy(twin)).numpy()
    mism = order_mismatch(image, twin_norm, keep)
    find = line_finder(labels["teff"])
    peaks = []
    for lam, res in residual_peaks(layout, mism.residual, n=n_peaks):
        o, p = np.unravel_index(np.argmin(np.abs(layout - lam)), layout.shape)
        peaks.append((lam, res, 1 - float(twin_norm[o, p]), find(lam)))
    return StarGap(star, resolution, r_source, vsini, v_source, zeta, zeta_source, snr,
                   mu_real, sig_real, ood, predict(ck, image[None])[0][0], mu_syn.mean(0),
                   twin_mu(twin, fill=True)[0].mean(0), sig_syn.mean(0), mu_syn.std(0),
                   {z: twin_mu(clean(sim, z))[0].mean(0) for z in zeta_range},
                   twin_mu(clean(grid_sim, zeta))[0].mean(0),
                   twin_mu(clean(sim, zeta, 0.0))[0].mean(0), rv, prepared.filled_fraction,
                   mism, peaks, image, np.where(keep, twin, 1.0), keep)


# ------------------------------------------------------------------------------ S/N sweep
def snr_sweep(gaps: list[StarGap], ck, levels: list[float], draws: int) -> list[dict]:
    """Per S/N, input (real or twin), star set and label, pooled over stars and draws: mean
    |error|, mean σ and coverage, for the real images (input fixed) degraded to that S/N and for
    the twins (filled like the real) at that S/N. Star sets: all, and those whose spectrum
    covers every layout pixel."""
    seeds = [1000 + k for k in range(draws)]
    records = []  # (level, kind, star, label, error, σ, σ_total)
    for level in levels:
        for g in gaps:
            if np.min(g.snr) < level:
                continue
            real = noisy_copies(g.real_image, added_sigma(g.snr, level), seeds, keep=g.keep)
            twin = noisy_copies(g.twin_image, 1 / level, seeds, keep=g.keep)
            for kind, images in (("real", real), ("twin", twin)):
                mu, sig = predict(ck, images)
                for j, n in enumerate(LABELS):
                    ref, ref_err = g.ref(n)
                    for m, sg in zip(mu[:, j], sig[:, j], strict=True):
                        records.append((level, kind, g, n, m - ref, sg, math.hypot(sg, ref_err)))
    subsets = {"all": lambda g: True, "full coverage": lambda g: g.filled == 0}
    out = []
    for level in levels:
        for title, member in subsets.items():
            for kind in ("real", "twin"):
                for n in LABELS:
                    sel = [r for r in records if r[0] == level and r[1] == kind and r[3] == n
                           and member(r[2])]
                    if not sel:
                        continue
                    err = np.array([r[4] for r in sel])
                    sig = np.array([r[5] for r in sel])
                    z = np.abs(err) / np.array([r[6] for r in sel])
                    out.append({"snr": level, "kind": kind, "label": n, "subset": title,
                                "n": len(sel), "stars": sorted({r[2].star.star for r in sel}),
                                "mean_abs": float(np.mean(np.abs(err))),
                                "mean_sigma": float(np.mean(sig)),
                                "within_1": float(np.mean(z <= 1)),
                                "within_2": float(np.mean(z <= 2))})
    return out


# ------------------------------------------------------------------------------ reporting
def share(gaps: list[StarGap], name: str, j: int) -> dict[str, float]:
    """Mean |.| of the total error, the gap and its parts and the twin's own error, and their
    shares Σ part·total / Σ total² of the squared total error (input + spectral + coverage +
    own = 1; the gap's share = input + spectral + coverage)."""
    total = np.array([g.real[j] - g.ref(name)[0] for g in gaps])
    parts = {"gap": np.array([g.real[j] - g.syn[j] for g in gaps]),
             "input": np.array([g.real[j] - g.fixed[j] for g in gaps]),
             "spectral": np.array([g.fixed[j] - g.syn_filled[j] for g in gaps]),
             "coverage": np.array([g.syn_filled[j] - g.syn[j] for g in gaps]),
             "own": np.array([g.syn[j] - g.ref(name)[0] for g in gaps])}
    s2 = float(np.sum(total ** 2))
    out = {"total": float(np.mean(np.abs(total)))}
    for key, v in parts.items():
        out[key] = float(np.mean(np.abs(v)))
        out[f"{key}_share"] = float(np.sum(v * total) / s2) if s2 > 0 else math.nan
    return out


class Table:
    """Rows printed as aligned text or as Markdown."""

    def __init__(self, columns: list[str], md: bool):
        self.columns, self.md, self.rows = columns, md, []

    def add(self, cells: list[str]) -> None:
        self.rows.append([str(c) for c in cells])

    def print(self) -> None:
        if self.md:
            print("| " + " | ".join(self.columns) + " |")
            print("|" + "---|" * len(self.columns))
            for r in self.rows:
                print("| " + " | ".join(r) + " |")
            return
        width = [max(len(c), *(len(r[k]) for r in self.rows)) for k, c in
                 enumerate(self.columns)]
        for r in [self.columns, *self.rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


def _pm(fmt: str, value: float, sigma: float) -> str:
    return f"{fmt.format(value)} ± {fmt.format(sigma).lstrip('+')}"


def print_tables(gaps: list[StarGap], zeta_range, md: bool) -> None:
    t = Table(["star", "label", "reference", "ours on real", "real, input fixed",
               "synthetic, filled like real", "ours on synthetic", "gap real − syn",
               "input part", "spectral part", "coverage part", "real − ref", "syn − ref"], md)
    for g in gaps:
        for j, n in enumerate(LABELS):
            ref, err = g.ref(n)
            v, d = VALUE[n], DIFF[n]
            t.add([g.star.star + (" (OOD)" if g.out_of_distribution else "") if j == 0 else "",
                   NAMES[n], _pm(v, ref, err), _pm(v, g.real[j], g.real_sigma[j]),
                   v.format(g.fixed[j]), v.format(g.syn_filled[j]),
                   _pm(v, g.syn[j], g.syn_sigma[j]),
                   d.format(g.real[j] - g.syn[j]), d.format(g.real[j] - g.fixed[j]),
                   d.format(g.fixed[j] - g.syn_filled[j]), d.format(g.syn_filled[j] - g.syn[j]),
                   d.format(g.real[j] - ref), d.format(g.syn[j] - ref)])
    t.print()
    print("\ninputs: R, vsini and ζ_RT of the twin, DER_SNR (median over orders), rv of the "
          "real lines against the twin's, layout pixels not covered (filled)")
    t = Table(["star", "instrument", "R", "vsini (km/s)", "ζ_RT (km/s)", "S/N", "rv (km/s)",
               "filled"], md)
    for g in gaps:
        t.add([g.star.star, g.star.instrument, f"{g.resolution:.0f} ({g.resolution_source})",
               f"{g.vsini:g} ({g.vsini_source})", f"{g.zeta:g} ({g.zeta_source})",
               f"{np.median(g.snr):.0f}", f"{g.rv:+.1f}", f"{g.filled:.1%}"])
    t.print()
    print("\nhow the twin's answer depends on what is not known (the ζ_RT and vsini above "
          "unless said; mean over the draws ± their spread)")
    t = Table(["star", "label", "synthetic twin", f"ζ {zeta_range[0]:g}", f"ζ {zeta_range[1]:g}",
               "vsini 0", "grid twin (interpolated)"], md)
    for g in gaps:
        for j, n in enumerate(LABELS):
            v = VALUE[n]
            t.add([g.star.star if j == 0 else "", NAMES[n], _pm(v, g.syn[j], g.syn_spread[j]),
                   *(v.format(g.syn_zeta[z][j]) for z in zeta_range),
                   v.format(g.syn_vsini0[j]), v.format(g.grid[j])])
    t.print()
    print("\nthe total error real − ref = gap (input + spectral + coverage parts) + (syn − ref); "
          "mean abs(.) over the stars, and share = Σ part·total / Σ total²")
    t = Table(["label", "stars", "real − ref", "gap", "input part", "spectral part",
               "coverage part", "syn − ref", "share: gap (input / spectral / coverage) / own"],
              md)
    subsets = [("all", gaps), ("without the Suns",
                               [g for g in gaps if not g.star.star.startswith("Sun")])]
    for title, sub in subsets:
        if not sub:
            continue
        for j, n in enumerate(LABELS):
            sh = share(sub, n, j)
            d = DIFF[n]
            t.add([NAMES[n], f"{title} ({len(sub)})",
                   *(d.format(sh[k]).lstrip("+") for k in ("total", "gap", "input", "spectral",
                                                           "coverage", "own")),
                   f"{sh['gap_share']:.0%} ("
                   + " / ".join(f"{sh[k + '_share']:.0%}" for k in ("input", "spectral",
                                                                   "coverage"))
                   + f") / {sh['own_share']:.0%}"])
    t.print()


def print_spectra(gaps: list[StarGap], md: bool) -> None:
    n_orders = len(gaps[0].snr)
    print("\nreal (input fixed) vs noise-free twin: rms of the residual per order, noise "
          "removed (continuum units)")
    print("and the depth ratio real/twin at the twin's lines 0.1-0.9 deep (nn_sun_gap's "
          "measure): median, robust σ of its log, number of lines")
    t = Table(["star", *[f"order {o + 1}" for o in range(n_orders)], "all",
               "depth ratio real/twin"], md)
    for g in gaps:
        m = g.mismatch.mismatch_rms
        twin = normalise_orders(torch.from_numpy(g.twin_image)).numpy()
        ratios = depth_ratios(np.where(g.keep, g.real_image, 1.0), np.where(g.keep, twin, 1.0))
        mad = 1.4826 * np.median(np.abs(ratios - np.median(ratios)))
        t.add([g.star.star, *[f"{v:.3f}" for v in m], f"{np.sqrt(np.nanmean(m ** 2)):.3f}",
               f"{np.exp(np.median(ratios)):.2f}, {mad:.2f}, {len(ratios)}"])
    t.print()
    for g in gaps:
        print(f"\n{g.star.star}: largest residuals real − twin")
        t = Table(["λ (Å, air)", "real − twin", "twin depth", "strongest listed line ± 0.05 Å"],
                  md)
        for lam, res, depth, name in g.peaks:
            t.add([f"{lam:.2f}", f"{res:+.3f}", f"{depth:.2f}", name])
        t.print()


def print_snr(rows: list[dict], md: bool) -> None:
    print("\nσ vs S/N: the real images (input fixed) degraded with white noise on the "
          "network's pixels, and the twins (filled like the real) at the same S/N")
    t = Table(["S/N", "stars", "input", "label", "N", "mean abs(error)", "mean σ",
               "≤ 1σ_total", "≤ 2σ_total"], md)
    for r in rows:
        d = DIFF[r["label"]]
        t.add([f"{r['snr']:g}", f"{r['subset']} ({len(r['stars'])})", r["kind"],
               NAMES[r["label"]], r["n"], d.format(r["mean_abs"]).lstrip("+"),
               d.format(r["mean_sigma"]).lstrip("+"), f"{r['within_1']:.0%}",
               f"{r['within_2']:.0%}"])
    t.print()
    seen = {}
    for r in rows:
        seen.setdefault((r["snr"], r["subset"]), r["stars"])
    for (level, title), stars in seen.items():
        print(f"  S/N {level:g}, {title}: {', '.join(stars)}")


def _snr_axis(ax) -> None:
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([20, 50, 100])
    ax.set_xlabel("S/N per pixel (network's pixels)")


def plot(gaps: list[StarGap], sweep: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = len(LABELS) + 1
    rows = 2 if sweep else 1
    fig, axes = plt.subplots(rows, n_cols, figsize=(3.4 * n_cols, 3.1 * rows), squeeze=False)
    x = np.arange(len(gaps))
    short = [g.star.star.split(" (")[0].split(" /")[0] + f"\n{g.star.instrument.split()[0]}"
             for g in gaps]
    for j, n in enumerate(LABELS):
        ax = axes[0, j]
        ref_err = np.array([g.ref(n)[1] for g in gaps])
        ax.fill_between(x, -ref_err, ref_err, color="0.85", step="mid", label="reference ± σ")
        ax.errorbar(x - 0.15, [g.real[j] - g.ref(n)[0] for g in gaps],
                    [g.real_sigma[j] for g in gaps], fmt="o", color="tab:blue",
                    label="real, as read")
        ax.plot(x, [g.fixed[j] - g.ref(n)[0] for g in gaps], "D", color="tab:green", ms=5,
                label="real, input fixed")
        ax.plot(x, [g.syn_filled[j] - g.ref(n)[0] for g in gaps], "x", color="tab:red", ms=6,
                label="twin, filled like real")
        ax.errorbar(x + 0.15, [g.syn[j] - g.ref(n)[0] for g in gaps],
                    [g.syn_sigma[j] for g in gaps], fmt="s", color="tab:orange",
                    label="synthetic twin")
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xticks(x, short, fontsize=7)
        ax.set_ylabel(f"ours − reference, {NAMES[n]} ({UNITS[n]})")
        if j == 0:
            ax.legend(fontsize=7)
    ax = axes[0, -1]
    for k, g in enumerate(gaps):
        ax.plot(np.arange(1, len(g.snr) + 1), g.mismatch.mismatch_rms, "o-", ms=3,
                label=short[k].replace("\n", ", "))
    ax.set_xlabel("order")
    ax.set_ylabel("rms(real − twin), noise removed")
    ax.legend(fontsize=6)
    if sweep:
        for j, n in enumerate(LABELS):
            ax = axes[1, j]
            for kind, colour in (("real", "tab:blue"), ("twin", "tab:orange")):
                sel = [r for r in sweep if r["label"] == n and r["kind"] == kind
                       and r["subset"] == "all"]
                ax.plot([r["snr"] for r in sel], [r["mean_abs"] for r in sel], "o-",
                        color=colour, label=f"{kind}: mean |error|")
                ax.plot([r["snr"] for r in sel], [r["mean_sigma"] for r in sel], "o--",
                        color=colour, label=f"{kind}: mean σ")
            _snr_axis(ax)
            ax.set_ylabel(f"{NAMES[n]} ({UNITS[n]})")
            if j == 0:
                ax.legend(fontsize=7)
        ax = axes[1, -1]
        for kind, colour in (("real", "tab:blue"), ("twin", "tab:orange")):
            sel = [r for r in sweep if r["kind"] == kind and r["subset"] == "all"]
            levels = sorted({r["snr"] for r in sel})
            for key, style in (("within_1", "o-"), ("within_2", "s--")):
                ax.plot(levels, [np.mean([r[key] for r in sel if r["snr"] == s])
                                 for s in levels], style, color=colour,
                        label=f"{kind}: ≤ {key[-1]}σ_total")
        ax.set_ylim(0, 1.02)
        ax.axhline(0.6, color="0.5", lw=0.7)
        ax.axhline(0.85, color="0.5", lw=0.7)
        _snr_axis(ax)
        ax.set_ylabel("coverage (labels pooled)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    print(f"\nfigure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint or shipped model (default: the "
                    "shipped default)")
    ap.add_argument("--stars", nargs="*", help="part of a star's name or file (default: all "
                    "that qualify)")
    ap.add_argument("--draws", type=int, default=8, help="seeded noise draws per input")
    ap.add_argument("--vsini", type=float, default=2.0,
                    help="km/s for stars whose table gives none (default 2)")
    ap.add_argument("--zeta", type=float, default=None,
                    help="ζ_RT km/s of the twin (default: fitted to each real spectrum)")
    ap.add_argument("--peaks", type=int, default=8, help="largest residuals listed per star")
    ap.add_argument("--snr", type=float, nargs="*", default=[],
                    help="S/N levels of the degradation sweep (e.g. 20 50 100)")
    ap.add_argument("--plot", default=None, help="PNG figure")
    ap.add_argument("--markdown", action="store_true", help="tables as Markdown")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          + " / ".join(f"{v:.1f}" for v in os.getloadavg()))
    ck = load_model(args.model)
    box = ck.data["bounds"]
    cfg = DataConfig.from_dict(ck.data)
    z = cfg.macroturbulence
    zeta_range = tuple(z) if isinstance(z, tuple) else (float(z), float(z))
    grid_path = model_grid(ck)
    if grid_path is None:
        raise SystemExit(f"the grid {ck.path} was trained on is not at hand")
    spec = GridStore.open(grid_path).spec
    grid_sim = twin_simulator(ck, source_from_grid(grid_path))
    stars = read_stars(SHARED / "stars" / "labels.csv")
    if args.stars:
        stars = select(stars, args.stars)
    gaps = []
    for star in stars:
        inside = all(box[n][0] <= star.reference[n][0] <= box[n][1] for n in LABELS)
        if star.resolution < HIGH_RESOLUTION or not inside:
            continue
        try:
            gaps.append(measure(star, ck, spec, grid_sim, args.zeta, zeta_range, args.vsini,
                                args.draws, args.peaks))
        except PhotosphereError as exc:
            print(f"skipped {star.star}: {type(exc).__name__}: {str(exc)[:110]}")
    if not gaps:
        raise SystemExit("no star qualifies (file reads, R >= 20 000, reference inside the box)")
    print(f"model {ck.path}; {len(gaps)} stars\n")
    print_tables(gaps, zeta_range, args.markdown)
    print_spectra(gaps, args.markdown)
    sweep = snr_sweep(gaps, ck, sorted(args.snr), args.draws) if args.snr else []
    if sweep:
        print_snr(sweep, args.markdown)
    if args.plot:
        plot(gaps, sweep, args.plot)
    print(f"\n{time.perf_counter() - t0:.0f} s; load average "
          + " / ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
