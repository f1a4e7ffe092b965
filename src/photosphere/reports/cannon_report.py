"""Plots and tables of the APOGEE Cannon lab (Astro 128), written by ``photosphere cannon report``.

Each ``plot_*`` function draws one figure from library objects and saves it (PNG, atomically);
:func:`write_report` runs them all and writes a summary table (ECSV) and a JSON summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .._files import atomic_path
from ..datasets import apogee_emulated as ae
from ..models.cannon import CannonModel

LABEL_TEX = {"teff": r"$T_\mathrm{eff}$ [K]", "logg": r"$\log g$", "feh": "[Fe/H]",
             "alpha": r"[$\alpha$/Fe]", "vmacro": r"$v_\mathrm{macro}$ [km/s]"}
#: label steps used to show gradient spectra (flux change for this change of the label)
GRADIENT_STEP = {"teff": 100.0, "logg": 0.1, "feh": 0.1, "alpha": 0.1, "vmacro": 2.0}
#: strong Mg I and Si I lines in the APOGEE window, air Å (Smith et al. 2013, ApJ 765, 16,
#: table 4); converted to vacuum with the IAU standard (Morton 2000) before plotting
MG_I_AIR = (15740.716, 15748.988, 15765.842, 15879.5, 15886.2, 15954.477, 16364.75)
SI_I_AIR = (15361.161, 15376.831, 15557.779, 15888.410, 15960.063, 16060.009, 16094.787,
            16215.670, 16680.770, 16828.159)


def air_to_vacuum(wavelength_air: np.ndarray) -> np.ndarray:
    """Morton (2000) air -> vacuum, Å."""
    w = np.asarray(wavelength_air, dtype=float)
    s2 = (1e4 / w) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
    return w * n


def _gaps(wavelength: np.ndarray, *arrays: np.ndarray, gap: float = 5.0):
    """Insert NaN between pixels more than ``gap`` Å apart, so lines do not bridge chip gaps."""
    cut = np.flatnonzero(np.diff(wavelength) > gap) + 1
    out = [np.insert(np.asarray(wavelength, float), cut, np.nan)]
    out += [np.insert(np.asarray(a, float), cut, np.nan, axis=0) for a in arrays]
    return out


def _label(name: str) -> str:
    return LABEL_TEX.get(name, name)


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_training_corner(labels: np.ndarray, names, path: Path) -> Path:
    """Corner plot of the training labels."""
    import corner

    fig = corner.corner(labels, labels=[_label(n) for n in names], plot_datapoints=True,
                        plot_density=False, plot_contours=False, data_kwargs={"alpha": 0.3})
    fig.suptitle(f"training labels ({labels.shape[0]} stars)")
    return _save(fig, path)


def plot_continuum_fit(wavelength: np.ndarray, flux: np.ndarray, continuum: np.ndarray,
                       continuum_pixels: np.ndarray, title: str, path: Path) -> Path:
    """A spectrum with its pseudo-continuum and the continuum pixels used for it."""
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(*_gaps(wavelength, flux), lw=0.5, color="k", label="spectrum (unmasked pixels)")
    ax.plot(wavelength[continuum_pixels], flux[continuum_pixels], ".", ms=2, color="C1",
            label="continuum pixels")
    ax.plot(*_gaps(wavelength, continuum), color="C0", lw=1.5, label="pseudo-continuum fit")
    ax.set(xlabel="wavelength [Å, vacuum]", ylabel="flux", title=title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_data_vs_model(wavelength, flux, ivar, model_flux, title: str, path: Path,
                       window=(16000.0, 16100.0), medium: str = "vacuum") -> Path:
    """Data and Cannon model of one star in a wavelength window, with residuals."""
    sel = (wavelength >= window[0]) & (wavelength <= window[1])
    good = sel & (ivar > 0)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), np.nan)
    ax.errorbar(wavelength[good], flux[good], sigma[good], fmt=".", ms=2, color="k", lw=0.5,
                label="data")
    ax.plot(wavelength[sel], model_flux[sel], color="C3", label="Cannon model")
    ax.set(ylabel="normalised flux", title=title)
    ax.legend()
    ax2.plot(wavelength[good], flux[good] - model_flux[good], ".", ms=2, color="k")
    ax2.axhline(0, color="C3")
    ax2.set(xlabel=f"wavelength [Å, {medium}]", ylabel="data − model")
    return _save(fig, path)


def apogee_lines() -> dict[str, np.ndarray]:
    """Mg I and Si I line positions in the APOGEE window, vacuum Å."""
    return {"Mg I": air_to_vacuum(np.array(MG_I_AIR)), "Si I": air_to_vacuum(np.array(SI_I_AIR))}


def plot_gradient_spectra(model: CannonModel, path: Path, at: np.ndarray | None = None,
                          lines: dict[str, np.ndarray] | None = None,
                          medium: str = "vacuum") -> Path:
    """∂f/∂label × step for every label at the fiducial labels, with line positions marked.

    lines: ``{species: wavelengths (Å, in ``medium``)}``; default the APOGEE Mg I and Si I
    lines (Smith et al. 2013).
    """
    at = model.fiducials_ if at is None else at
    lines = apogee_lines() if lines is None else lines
    wave, grad = _gaps(model.wavelength, model.gradient(at[None, :])[0])
    names = model.label_names
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 2.0 * len(names)), sharex=True,
                             squeeze=False)
    styles = [("C0", "-"), ("C3", "--"), ("C2", ":"), ("C1", "-.")]
    style_names = ("blue solid", "red dashed", "green dotted", "orange dash-dot")
    for k, (ax, name) in enumerate(zip(axes[:, 0], names, strict=True)):
        step = GRADIENT_STEP.get(name, model.scales_[k] / 10)
        ax.plot(wave, grad[:, k] * step, lw=0.5, color="k")
        for (color, ls), waves in zip(styles, lines.values(), strict=False):
            for w in waves:
                ax.axvline(w, color=color, lw=0.8, alpha=0.6, ls=ls)
        ax.set_ylabel(f"Δf per\nΔ{name}={step:g}", fontsize=8)
    legend = ", ".join(f"{st}: {sp}" for st, sp in zip(style_names, lines, strict=False))
    axes[0, 0].set_title(f"gradient spectra at the fiducial labels ({legend})")
    axes[-1, 0].set_xlabel(f"wavelength [Å, {medium}]")
    return _save(fig, path)


def plot_scatter(model: CannonModel, path: Path, medium: str = "vacuum") -> Path:
    """Intrinsic scatter s_λ of the model per pixel."""
    fig, ax = plt.subplots(figsize=(12, 3.5))
    ax.semilogy(*_gaps(model.wavelength, np.sqrt(np.maximum(model.s2_, 1e-12))), lw=0.5,
                color="k")
    ax.set(xlabel=f"wavelength [Å, {medium}]", ylabel=r"$s_\lambda$ (normalised flux)",
           title=r"intrinsic scatter $s_\lambda$ (s² = 0 drawn at 1e-6)")
    return _save(fig, path)


def plot_one_to_one(truth: np.ndarray, estimate: np.ndarray, names, stats: dict, title: str,
                    path: Path) -> Path:
    """One-to-one plots with residual panels and bias/scatter per label."""
    k = len(names)
    fig, axes = plt.subplots(2, k, figsize=(3.4 * k, 5.2),
                             gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for j, name in enumerate(names):
        ax, ax2 = axes[0, j], axes[1, j]
        ax.plot(truth[:, j], estimate[:, j], ".", ms=2, alpha=0.5)
        lo, hi = np.nanmin(truth[:, j]), np.nanmax(truth[:, j])
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        s = stats[name]
        ax.set_title(f"{name}: bias {s['bias']:.3g}, scatter {s['scatter']:.3g}", fontsize=9)
        ax.set_ylabel("inferred")
        ax2.plot(truth[:, j], estimate[:, j] - truth[:, j], ".", ms=2, alpha=0.5)
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_xlabel(f"true {_label(name)}")
        ax2.set_ylabel("residual")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_kiel(labels: np.ndarray, names, isochrones, path: Path) -> Path:
    """Kiel diagram of inferred labels coloured by [Fe/H], with MIST isochrones."""
    it, ig, ifeh = (names.index(n) for n in ("teff", "logg", "feh"))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sc = ax.scatter(labels[:, it], labels[:, ig], c=labels[:, ifeh], s=5, cmap="viridis")
    fig.colorbar(sc, label="[Fe/H]")
    for iso, style in zip(isochrones, ("-", "--"), strict=False):
        keep = iso.phase <= 3
        ax.plot(iso.teff[keep], iso.logg[keep], style, color="k",
                label=f"MIST {iso.age_gyr:g} Gyr, [Fe/H] = {iso.feh:+g}")
    ax.set(xlabel=_label("teff"), ylabel=_label("logg"), xlim=(7200, 3500), ylim=(5.3, 0))
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Kiel diagram of the inferred labels")
    return _save(fig, path)


def plot_model_vs_feh(model: CannonModel, path: Path, window=(15700.0, 15800.0),
                      medium: str = "vacuum") -> Path:
    """Model spectra for several [Fe/H] at fixed Teff, log g (others at the fiducial)."""
    names = list(model.label_names)
    lo, hi = model.bounds["feh"]
    fehs = np.linspace(lo, hi, 5)
    labels = np.tile(model.fiducials_, (len(fehs), 1))
    labels[:, names.index("feh")] = fehs
    flux = model.predict(labels)
    sel = (model.wavelength >= window[0]) & (model.wavelength <= window[1])
    fig, ax = plt.subplots(figsize=(11, 4))
    colors = plt.cm.viridis(np.linspace(0, 1, len(fehs)))
    for f, feh, c in zip(flux, fehs, colors, strict=True):
        ax.plot(model.wavelength[sel], f[sel], color=c, label=f"[Fe/H] = {feh:+.2f}")
    fixed = ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, model.fiducials_, strict=True)
                      if n != "feh")
    ax.set(xlabel=f"wavelength [Å, {medium}]", ylabel="normalised flux",
           title=f"Cannon model vs [Fe/H] ({fixed})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_model_along_isochrone(model: CannonModel, iso, path: Path,
                               window=(15700.0, 15800.0), medium: str = "vacuum") -> Path:
    """Model spectra along an isochrone, at the points that lie inside the training labels.

    For a model trained on giants this walks up the red-giant branch; for the dwarf emulator box
    it walks along the main sequence (the part of the isochrone the model covers).
    """
    names = list(model.label_names)
    (tlo, thi), (glo, ghi) = model.bounds["teff"], model.bounds["logg"]
    inside = (iso.teff >= tlo) & (iso.teff <= thi) & (iso.logg >= glo) & (iso.logg <= ghi)
    fig, ax = plt.subplots(figsize=(11, 4))
    if inside.sum() >= 2:
        pick = np.flatnonzero(inside)[np.linspace(0, inside.sum() - 1, 5).astype(int)]
        labels = np.tile(model.fiducials_, (len(pick), 1))
        labels[:, names.index("teff")] = iso.teff[pick]
        labels[:, names.index("logg")] = iso.logg[pick]
        if "feh" in names:
            labels[:, names.index("feh")] = np.clip(iso.feh, *model.bounds["feh"])
        flux = model.predict(labels)
        sel = (model.wavelength >= window[0]) & (model.wavelength <= window[1])
        colors = plt.cm.plasma(np.linspace(0, 0.9, len(pick)))
        for f, t, g, c in zip(flux, iso.teff[pick], iso.logg[pick], colors, strict=True):
            ax.plot(model.wavelength[sel], f[sel], color=c, label=f"Teff {t:.0f} K, log g {g:.2f}")
        ax.legend(fontsize=8)
        ax.set_title(f"Cannon model along the MIST {iso.age_gyr:g} Gyr, [Fe/H] = {iso.feh:+g} "
                     "isochrone, inside the training labels")
    else:
        ax.set_title("the isochrone does not cross the training labels")
    ax.set(xlabel=f"wavelength [Å, {medium}]", ylabel="normalised flux")
    return _save(fig, path)


def mcmc_fit(model: CannonModel, flux: np.ndarray, ivar: np.ndarray, start: np.ndarray, *,
             n_walkers: int = 32, n_steps: int = 1500, seed: int = 0) -> dict[str, Any]:
    """emcee fit of one spectrum with the Cannon likelihood.

    Prior: uniform in every label over the training label range (model.bounds), zero outside.
    Likelihood: Gaussian with variance σ²_λ + s²_λ. Returns samples after discarding the first
    third of the chain as burn-in, and the prior.
    """
    import emcee

    lo = np.array([model.bounds[n][0] for n in model.label_names])
    hi = np.array([model.bounds[n][1] for n in model.label_names])
    good = ivar > 0
    w = np.where(good, ivar / (1 + model.s2_ * ivar), 0.0)

    def log_prob(theta):
        if np.any(theta < lo) or np.any(theta > hi):
            return -np.inf
        r = flux - model.predict(theta[None, :])[0]
        return -0.5 * np.sum(w * r * r)

    rng = np.random.default_rng(seed)
    scale = 1e-3 * (hi - lo)
    p0 = np.clip(start + scale * rng.normal(size=(n_walkers, len(start))), lo, hi)
    sampler = emcee.EnsembleSampler(n_walkers, len(start), log_prob,
                                    vectorize=False)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(p0, n_steps, progress=False)
    samples = sampler.get_chain(discard=n_steps // 3, flat=True)
    return {"samples": samples, "acceptance": float(np.mean(sampler.acceptance_fraction)),
            "prior": {n: {"kind": "uniform", "lo": float(a), "hi": float(b)}
                      for n, a, b in zip(model.label_names, lo, hi, strict=True)}}


def plot_mcmc_corner(samples: np.ndarray, names, truth: np.ndarray | None, title: str,
                     path: Path) -> Path:
    import corner

    fig = corner.corner(samples, labels=[_label(n) for n in names], truths=truth,
                        quantiles=[0.16, 0.5, 0.84], show_titles=True, title_fmt=".3g")
    fig.suptitle(title, y=1.02)
    return _save(fig, path)


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """Rows of equal keys as an ECSV table."""
    from astropy.table import Table

    table = Table(rows=[[r[k] for k in rows[0]] for r in rows], names=list(rows[0]))
    with atomic_path(path, suffix=".ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def write_json(payload: dict[str, Any], path: Path) -> Path:
    def plain(obj):
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple | np.ndarray):
            return [plain(v) for v in obj]
        if isinstance(obj, np.generic):
            obj = obj.item()
        if isinstance(obj, float) and not np.isfinite(obj):
            return None
        return obj

    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(plain(payload), indent=2))
    return path


Step = Callable[[], Any]


def continuum_example(model: CannonModel, data_dir=None) -> dict[str, Any] | None:
    """The lab's preprocessing on a real visit: apVisit rebinned onto the model pixels, shifted
    to the rest frame (RV from a first Cannon fit) and its pseudo-continuum fitted per chip to
    the Cannon continuum pixels. Returns None when the file is absent."""
    from ..errors import MissingFileError
    from ..workflows import cannon_apogee as wf

    try:
        root = Path(data_dir) if data_dir is not None else ae.shared_data_dir()
    except MissingFileError:
        return None
    path = root / "apogee" / "apVisit-r13-5095-55844-128.fits"
    if not path.is_file():
        return None
    pixels = ae.load_continuum_pixels(root)
    prepared = wf.apvisit_on_model_grid(path, model.wavelength, pixels)
    obs = prepared["observed"]
    _, rv = wf.fit_labels_and_rv(model, obs.wavelength, obs.flux,
                                 np.where(obs.mask, 0.0, obs.ivar))
    rest = prepared["fit_continuum"](rv)
    good = rest["ivar_raw"] > 0
    return {"wavelength": model.wavelength, "flux": np.where(good, rest["raw"], np.nan),
            "continuum": rest["continuum"], "pixels": pixels & good,
            "title": f"{path.name}, rest frame (RV {rv:.1f} km/s): pseudo-continuum per chip "
                     f"from {int((pixels & good).sum())} continuum pixels"}


@dataclass
class ReportData:
    """What the report needs from a training-set kind: the training and held-out spectra, how to
    draw wavelengths (medium, windows, marked lines), and the optional real-data parts."""

    train: Any
    validation: Any
    medium: str = "vacuum"
    star_window: tuple[float, float] = (16000.0, 16100.0)
    model_window: tuple[float, float] = (15700.0, 15800.0)
    lines: dict[str, np.ndarray] | None = None
    continuum: Callable[[], dict[str, Any] | None] | None = None
    real: Callable[[], list[dict]] | None = None


#: Mg I b triplet, air Å (NIST), for the optical grid window 5050-5350 Å
MG_I_B_AIR = (5167.321, 5172.684, 5183.604)
#: strong Fe I lines in 5050-5350 Å, air Å (NIST)
FE_I_AIR = (5194.941, 5232.940, 5269.537, 5328.039)


def _apogee_data(model: CannonModel, n_validation: int, data_dir, fit_real: bool) -> ReportData:
    from ..workflows import cannon_apogee as wf

    emulator = ae.PayneEmulator.load(data_dir)
    train = wf.training_spec(model).build(data_dir, emulator)
    val = wf.validation_spec(model, n_validation).build(data_dir, emulator)
    return ReportData(train, val, continuum=lambda: continuum_example(model, data_dir),
                      real=(lambda: wf.fit_all_real(model, data_dir)) if fit_real else None)


def _grid_data(model: CannonModel, n_validation: int, progress: bool) -> ReportData:
    from ..grids.interpolate import GridInterpolator
    from ..workflows import cannon_grid as wg

    spec = wg.training_spec(model)
    interp = GridInterpolator(wg.grid_path(spec.grid))
    medium = str(interp.medium)
    lines = {"Mg I b": np.array(MG_I_B_AIR), "Fe I": np.array(FE_I_AIR)}
    if medium == "vacuum":
        lines = {k: air_to_vacuum(v) for k, v in lines.items()}
    return ReportData(spec.build(interp, progress=progress),
                      wg.validation_spec(model, n_validation).build(interp, progress=progress),
                      medium=medium, star_window=(5160.0, 5200.0), model_window=(5160.0, 5200.0),
                      lines=lines)


def report_data(model: CannonModel, n_validation: int = 300, data_dir=None,
                fit_real: bool = True, progress: bool = False) -> ReportData:
    """The report inputs for the training-set kind recorded in the model provenance."""
    kind = model.provenance_.get("training_set", {}).get("kind")
    if kind == "grid":
        return _grid_data(model, n_validation, progress)
    if kind == "apogee_allstar":
        from ..workflows import cannon_allstar as wa

        return ReportData(*wa.report_stars(model, progress=progress))
    return _apogee_data(model, n_validation, data_dir, fit_real)


def _model_plots(model: CannonModel, data: ReportData, out: Path,
                 keep: Callable[[str, Path], None]) -> None:
    """The training set and the model itself: label corner, continuum fit (when a real visit is
    at hand), a training star against the model, gradient spectra and the scatter s²."""
    train, medium = data.train, data.medium
    keep("training_labels_corner", plot_training_corner(train.labels, list(model.label_names),
                                                        out / "training_labels_corner.png"))
    example = data.continuum() if data.continuum is not None else None
    if example is not None:
        keep("continuum_fit", plot_continuum_fit(example["wavelength"], example["flux"],
                                                 example["continuum"], example["pixels"],
                                                 example["title"], out / "continuum_fit.png"))
    star = 0
    keep("training_star_fit", plot_data_vs_model(
        train.wavelength, train.flux[star], train.ivar[star], model.predict(train.labels[star]),
        "training star 0: data vs Cannon model at its labels", out / "training_star_fit.png",
        window=data.star_window, medium=medium))
    keep("gradient_spectra", plot_gradient_spectra(model, out / "gradient_spectra.png",
                                                   lines=data.lines, medium=medium))
    keep("scatter", plot_scatter(model, out / "scatter_s2.png", medium=medium))


def _validation_plots(model: CannonModel, data: ReportData, fit, stats: dict, out: Path,
                      keep: Callable[[str, Path], None]) -> None:
    """The held-out stars: one-to-one labels, the Kiel diagram with MIST isochrones, and the
    model along an isochrone and across [Fe/H]."""
    from ..isochrones import mist_isochrone

    val, medium, names = data.validation, data.medium, list(model.label_names)
    keep("cross_validation", plot_one_to_one(
        val.labels, fit.labels, names, stats,
        f"The Cannon on {len(val)} held-out spectra (S/N {val.snr.min():.0f}-{val.snr.max():.0f})",
        out / "cross_validation.png"))
    isochrones = [mist_isochrone(6.0, 0.0), mist_isochrone(6.0, -1.0)]
    if {"teff", "logg", "feh"} <= set(names):
        keep("kiel_diagram", plot_kiel(fit.labels, names, isochrones, out / "kiel_diagram.png"))
        keep("model_along_isochrone", plot_model_along_isochrone(
            model, isochrones[0], out / "model_along_isochrone.png", window=data.model_window,
            medium=medium))
    if "feh" in names:
        keep("model_vs_feh", plot_model_vs_feh(model, out / "model_vs_feh.png",
                                               window=data.model_window, medium=medium))


def write_report(model: CannonModel, outdir: str | Path, *, n_validation: int = 300,
                 data_dir=None, nn_epochs: int = 80, mcmc_steps: int = 1500,
                 fit_real: bool = True, progress: bool = False) -> dict[str, Any]:
    """Every plot of the lab, a summary table (``cannon_report.ecsv``) and ``cannon_report.json``.

    The training spectra are rebuilt from the recipe in the model provenance; the validation set
    is a fresh held-out set made the same way (emulated APOGEE or grid spectra), or the stored
    validation stars of an allStar-trained model.
    """
    from ..nn.label_regressor import LabelRegressor, RegressorConfig
    from ..workflows import cannon_apogee as wf

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.label_names)
    data = report_data(model, n_validation, data_dir, fit_real, progress)
    train, val = data.train, data.validation
    files: dict[str, str] = {}

    def keep(key: str, path: Path) -> None:
        files[key] = str(path)

    _model_plots(model, data, out, keep)
    fit, stats = wf.validate(model, val)
    _validation_plots(model, data, fit, stats, out, keep)

    mc = mcmc_fit(model, val.flux[0], val.ivar[0], fit.labels[0], n_steps=mcmc_steps)
    keep("mcmc_corner", plot_mcmc_corner(mc["samples"], names, val.labels[0],
                                         "emcee fit of held-out star 0 (truth in blue)",
                                         out / "mcmc_corner.png"))
    q16, q50, q84 = np.percentile(mc["samples"], [16, 50, 84], axis=0)

    regressor = LabelRegressor(RegressorConfig(epochs=nn_epochs), progress=progress)
    nn_labels = regressor.fit(train.flux, train.ivar, train.labels).predict(val.flux, val.ivar)
    nn_stats = wf.label_statistics(nn_labels, val.labels, names)
    keep("nn_cross_validation", plot_one_to_one(
        val.labels, nn_labels, names, nn_stats,
        f"neural-network regressor on the same {len(val)} held-out spectra",
        out / "nn_cross_validation.png"))

    rows = [{"label": name, "cannon_bias": stats[name]["bias"],
             "cannon_scatter": stats[name]["scatter"],
             "cannon_median_sigma": float(np.median(fit.sigma[:, k])),
             "cannon_coverage_1sigma": stats[name]["coverage_1sigma"],
             "nn_bias": nn_stats[name]["bias"], "nn_scatter": nn_stats[name]["scatter"],
             "mcmc_star0_median": float(q50[k]), "mcmc_star0_sigma": float((q84[k] - q16[k]) / 2),
             "lm_star0_value": float(fit.labels[0, k]), "lm_star0_sigma": float(fit.sigma[0, k]),
             "star0_truth": float(val.labels[0, k])} for k, name in enumerate(names)]
    keep("table", write_table(rows, out / "cannon_report.ecsv"))
    summary = {"model": repr(model), "training_set": model.provenance_.get("training_set"),
               "n_training": len(train), "n_validation": len(val),
               "cannon": stats, "nn": nn_stats, "files": files,
               "mcmc": {"prior": mc["prior"], "acceptance": mc["acceptance"],
                        "n_steps": mcmc_steps, "median": dict(zip(names, q50.tolist(),
                                                                  strict=True))},
               "validation_flags": int(np.count_nonzero(fit.flags))}
    if data.real is not None:
        summary["real_spectra"] = data.real()
    keep("summary", out / "cannon_report.json")
    summary["files"] = files
    write_json(summary, out / "cannon_report.json")
    return summary
