"""What a line fit learned, for people: the table of every line before and after, and a figure.

:func:`fitted_line_table` (an astropy Table: initial and fitted centre, A, σ, γ, depth, EW and
flags per line) and :func:`plot_fit` (data, stellar, telluric and model spectra with residuals)
read a :class:`~.fit.FitResult` of :func:`~.fit.fit_lines`.
"""

from __future__ import annotations

import numpy as np
import torch

from ...models.lines.model import LineModel
from ...ops.doppler import doppler_factor
from .fit import FitResult, ObservedLineModel


def initial_line_model(model: ObservedLineModel) -> LineModel:
    """The stellar lines as they were before the fit (the prior means)."""
    stellar = model.stellar
    with torch.no_grad():
        return LineModel((stellar.reference_centre + model.initial_centre_shift).numpy(),
                         torch.exp(model.initial_log_amplitude).numpy(),
                         torch.exp(model.initial_log_sigma).numpy(),
                         torch.exp(model.initial_log_gamma).numpy(),
                         half_window=stellar.half_window.numpy(), profile=stellar.profile,
                         wavelength_range=stellar.wavelength_range)


def fitted_line_table(result: FitResult, *, vanish_fraction: float = 0.1,
                      telluric_depth: float = 0.01, added: np.ndarray | None = None):
    """Astropy Table of every line: ``*_initial`` and ``*_fit`` centre, amplitude, sigma, gamma,
    depth and equivalent_width (Å), and flags ``vanished`` (fitted depth below
    ``vanish_fraction`` of the initial one) and ``telluric_blended`` (the fitted telluric
    model absorbs more than ``telluric_depth`` within ±1 FWHM of the observed line centre).
    Lines outside the observed range have ``observed = False``; ``added`` (n_lines,) marks lines
    that were not in the clone but added from the residuals (:mod:`.missing`)."""
    from astropy.table import Table

    model = result.model
    before, after = initial_line_model(model), model.stellar
    table = Table()
    for label, lines in (("initial", before), ("fit", after)):
        p = lines.parameters_numpy()
        for name in ("centre", "amplitude", "sigma", "gamma"):
            table[f"{name}_{label}"] = p[name]
            table[f"{name}_{label}"].unit = "Angstrom"
        table[f"depth_{label}"] = lines.depth()
        table[f"equivalent_width_{label}"] = lines.equivalent_width()
        table[f"equivalent_width_{label}"].unit = "Angstrom"
    table["half_window"] = after.half_window.numpy()
    with torch.no_grad():
        observed_centre = after.centre * doppler_factor(model.rv)
    wave = result.observation.wavelength
    table["observed"] = ((observed_centre.numpy() > wave[0])
                         & (observed_centre.numpy() < wave[-1]))
    table["vanished"] = table["depth_fit"] < vanish_fraction * table["depth_initial"]
    blended = np.zeros(len(table), bool)
    if model.telluric is not None:
        with torch.no_grad():
            fwhm = 2.3548 * after.sigma + 2.0 * after.gamma
            probe = observed_centre[:, None] + fwhm[:, None] * torch.linspace(
                -1, 1, 9, dtype=torch.float64)
            order = torch.argsort(probe.reshape(-1))
            tau = torch.empty(probe.numel(), dtype=torch.float64)
            tau[order] = model.telluric.opacity(probe.reshape(-1)[order])
            blended = (1.0 - torch.exp(-tau.reshape(probe.shape).max(1).values)
                       > telluric_depth).numpy()
    table["telluric_blended"] = blended
    table["added"] = (np.zeros(len(table), bool) if added is None
                      else np.asarray(added, bool))
    table.meta.update({"rv_kms": result.rv, "vsini_kms": result.vsini,
                       "telluric_scale": dict(result.telluric_scale),
                       "telluric_rv_kms": result.telluric_rv, "profile": after.profile,
                       "wavelength_range": list(after.wavelength_range)})
    return table


def plot_fit(result: FitResult, path, *, n_regions: int = 4) -> None:
    """Save a figure of data, stellar model, telluric model and residual in ``n_regions``
    equal wavelength regions (one column each), written atomically to ``path`` (png/pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..._files import atomic_path

    obs = result.observation
    with torch.no_grad():
        parts = {k: v.numpy() for k, v in result.model.components().items()}
    wave, good = obs.wavelength, ~obs.mask
    edges = np.linspace(wave[0], wave[-1], n_regions + 1)
    fig, axes = plt.subplots(2, n_regions, figsize=(4 * n_regions, 5), sharex="col",
                             gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    cont = parts["continuum"]
    for j in range(n_regions):
        sel = good & (wave >= edges[j]) & (wave <= edges[j + 1])
        top, bottom = axes[0, j], axes[1, j]
        top.plot(wave[sel], obs.flux[sel] / cont[sel], "k.", ms=2, label="data / continuum")
        top.plot(wave[sel], parts["stellar"][sel], "C0", lw=1, label="stellar")
        top.plot(wave[sel], parts["telluric"][sel], "C2", lw=1, label="telluric")
        top.plot(wave[sel], parts["model"][sel] / cont[sel], "C3", lw=1, label="model")
        bottom.plot(wave[sel], (obs.flux[sel] - parts["model"][sel]) / cont[sel], "k.", ms=2)
        bottom.axhline(0, color="C3", lw=0.8)
        bottom.set_xlabel("wavelength (Å)")
    axes[0, 0].set_ylabel("normalised flux")
    axes[1, 0].set_ylabel("residual")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"rv = {result.rv:.2f} km/s, vsini = {result.vsini:.2f} km/s, "
                 f"rms/noise = {result.rms_over_noise:.2f}")
    fig.tight_layout()
    suffix = "." + str(path).rsplit(".", 1)[-1]
    with atomic_path(path, suffix=suffix) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
