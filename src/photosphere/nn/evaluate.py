"""Predictions with uncertainties, the study's tables, calibration and figures.

* :func:`predict_images`: (B, 1, n_orders, n_pixels) images -> μ (B, 4) and Σ (B, 4, 4) in
  physical units, optionally with temperature-scaled σ and MC-dropout epistemic variance.
* :func:`predict_split`: the same over a dataset split, as :class:`Predictions` with MAE and
  coverage (Hüttel & Clemmensen Tables 2 and 3).
* :func:`fit_temperature`: per-label σ multipliers fitted on a validation split (beyond the study).
* :func:`format_table2`, :func:`format_table3`: the study's layouts, with its numbers beside ours.
* :func:`plot_residuals`, :func:`plot_sigma`, :func:`plot_attention`: Figs. 3, 4 and 5.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InvalidSpectrumError, ModelError
from .checkpoint import LabelScaling
from .data import EXTRA_LABELS, LABELS
from .losses import covariance_from_tril

LABEL_TITLES = {"teff": "Teff [K]", "logg": "log g [dex]", "feh": "Z [dex]",
                "vsini": "vsini [km/s]", "alpha": "[α/Fe] [dex]"}
MG_B = (5167.32, 5172.68, 5183.60)  # Å, air
# Hüttel & Clemmensen Table 2 (MAE: Teff K, log g, Z dex, vsini km/s) and Table 3 (coverage %).
STUDY_TABLE2 = [
    (20, "diagonal", "Residual-network", (76.9, 0.138, 0.055, 0.71)),
    (20, "diagonal", "Attention-network", (73.0, 0.135, 0.053, 0.69)),
    (20, "diagonal", "DAE Residual-network", (72.3, 0.133, 0.052, 0.67)),
    (20, "diagonal", "DAE Attention-network", (70.9, 0.134, 0.049, 0.57)),
    (20, "full", "Residual-network", (83.8, 0.143, 0.060, 0.75)),
    (20, "full", "Attention-network", (79.2, 0.146, 0.055, 0.72)),
    (20, "full", "DAE Residual-network", (89.1, 0.150, 0.060, 0.72)),
    (20, "full", "DAE Attention-network", (72.9, 0.137, 0.049, 0.58)),
    (100, "diagonal", "Residual-network (Teff 4000-6000)", (19.5, 0.053, 0.026, 0.30)),
    (100, "diagonal", "Attention-network (Teff 4000-6000)", (12.9, 0.045, 0.013, 0.15)),
]
STUDY_TABLE3 = [("Gaussian", 68.2, 95.1), ("Residual-network", 79.9, 98.4),
                ("Attention-network", 65.5, 93.4)]


@dataclass
class Predictions:
    """Predicted Gaussians for labelled images, physical units."""

    labels: np.ndarray  # (N, k) true labels (k = 4, or 5 with alpha)
    mu: np.ndarray  # (N, k)
    cov: np.ndarray  # (N, 4, 4)
    snr: np.ndarray  # (N,)
    scale: np.ndarray  # (k,) physical units per scaled unit

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.diagonal(self.cov, axis1=-2, axis2=-1))

    @property
    def residual(self) -> np.ndarray:
        return self.mu - self.labels

    @property
    def residual_z(self) -> torch.Tensor:
        """(N, k) residual / σ per label."""
        return torch.as_tensor(self.residual / self.sigma)

    @property
    def names(self) -> tuple[str, ...]:
        """The label of each column: :data:`LABELS`, then ``alpha`` for a 5-label model."""
        return (LABELS + EXTRA_LABELS)[:self.mu.shape[1]]

    def mae(self) -> dict[str, float]:
        return {n: float(np.mean(np.abs(self.residual[:, i]))) for i, n in enumerate(self.names)}

    def scaled(self, temperature: torch.Tensor) -> Predictions:
        """The same predictions with σ_k multiplied by ``temperature`` (k,) (Σ → D Σ D)."""
        t = np.asarray(temperature, dtype=float)
        return dataclasses.replace(self, cov=self.cov * t[:, None] * t[None, :])

    def coverage(self, k: float) -> dict[str, float]:
        """Fraction of |residual| < k σ per label and over all labels ('all')."""
        inside = np.abs(self.residual) < k * self.sigma
        out = {n: float(inside[:, i].mean()) for i, n in enumerate(self.names)}
        out["all"] = float(inside.mean())
        return out


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def check_images(images: torch.Tensor, n_orders: int, n_pixels: int) -> torch.Tensor:
    """(B, 1, n_orders, n_pixels) or (B, n_orders, n_pixels) or one image -> (B, 1, H, W)."""
    images = torch.as_tensor(images, dtype=torch.float32)
    given = tuple(images.shape)
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != (1, n_orders, n_pixels):
        raise InvalidSpectrumError(
            f"the model reads images of {n_orders} orders × {n_pixels} pixels, got an array of "
            f"shape {given}; format the spectrum with photosphere.nn.inputs."
            "prepare_image (it resamples any echelle or 1D spectrum onto the model's layout)")
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        raise InvalidSpectrumError(
            f"{int(bad.sum())} pixel(s) of the input image are NaN or inf; mask them and let "
            "prepare_image interpolate across them, or replace them before predicting")
    return images


@torch.inference_mode()
def predict_images(model: nn.Module, scaling: LabelScaling, images: torch.Tensor, *,
                   temperature: torch.Tensor | None = None, mc_samples: int = 0,
                   batch_size: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (B, 4) and Σ (B, 4, 4) in physical units for ``images`` (B, 1, n_orders, n_pixels).

    temperature: (4,) σ multipliers (Σ → D Σ D, D = diag(T)); mc_samples > 0 keeps dropout on and
    adds the spread of the sampled means to Σ (epistemic part, Gal & Ghahramani 2016).
    """
    cfg = model.config
    images = check_images(images, cfg.n_orders, cfg.n_pixels)
    model.eval()
    drop = _dropout_modules(model)
    if mc_samples > 0 and not drop:
        raise ModelError("mc_samples > 0 needs a model with dropout layers")
    mus, covs = [], []
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size]
            if mc_samples > 0:
                for m in drop:
                    m.train()
                draws = [model(x)[:2] for _ in range(mc_samples)]
                for m in drop:
                    m.eval()
                mu_s = torch.stack([d[0] for d in draws])  # (S, b, k)
                cov = torch.stack([covariance_from_tril(d[1]) for d in draws]).mean(0)
                dev = mu_s - mu_s.mean(0)
                cov = cov + torch.einsum("sbi,sbj->bij", dev, dev) / max(mc_samples - 1, 1)
                mu = mu_s.mean(0)
            else:
                mu, tril = model(x)[:2]
                cov = covariance_from_tril(tril)
            if temperature is not None:
                t = temperature.to(cov.dtype)
                cov = cov * t.unsqueeze(-1) * t.unsqueeze(-2)
            mus.append(mu * scaling.scale + scaling.offset)
            covs.append(cov * scaling.scale.unsqueeze(-1) * scaling.scale.unsqueeze(-2))
    finally:
        torch.set_rng_state(gen_state)
    return torch.cat(mus), torch.cat(covs)


def predict_ensemble(members: list[tuple[nn.Module, LabelScaling, torch.Tensor | None]],
                     images: torch.Tensor, *, mc_samples: int = 0,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and Σ of an equal-weight mixture of several trained models (deep ensemble,
    Lakshminarayanan et al. 2017): μ = mean μ_m, Σ = mean Σ_m + covariance of the μ_m.

    members: (model, label scaling, temperature or None) per model; physical units out.
    """
    if not members:
        raise ModelError("predict_ensemble needs at least one model")
    preds = [predict_images(m, s, images, temperature=t, mc_samples=mc_samples,
                            batch_size=batch_size, seed=i)
             for i, (m, s, t) in enumerate(members)]
    mus = torch.stack([p[0] for p in preds])  # (M, B, k)
    cov = torch.stack([p[1] for p in preds]).mean(0)
    if len(preds) > 1:
        dev = mus - mus.mean(0)
        cov = cov + torch.einsum("mbi,mbj->bij", dev, dev) / (len(preds) - 1)
    return mus.mean(0), cov


def predict_split(model: nn.Module, scaling: LabelScaling, dataset, batch_size: int = 64, *,
                  temperature: torch.Tensor | None = None, mc_samples: int = 0,
                  progress: bool = False) -> Predictions:
    """Predictions for every star of a dataset split (its fixed noise realisation)."""
    return predict_split_ensemble([(model, scaling, temperature)], dataset, batch_size,
                                  mc_samples=mc_samples, progress=progress)


def predict_split_ensemble(members: list[tuple[nn.Module, LabelScaling, torch.Tensor | None]],
                           dataset, batch_size: int = 64, *, mc_samples: int = 0,
                           progress: bool = False) -> Predictions:
    """:func:`predict_split` for a deep ensemble (:func:`predict_ensemble`); members are
    (model, label scaling, temperature or None); one member is a single model."""
    from tqdm.auto import tqdm

    scaling = members[0][1] if members else None
    labels, mus, covs, snrs = [], [], [], []
    n_batches = -(-len(dataset) // batch_size)
    for batch in tqdm(dataset.batches(batch_size), total=n_batches, disable=not progress,
                      desc=f"predicting {dataset.split}", leave=False):
        mu, cov = predict_ensemble(members, batch.images, mc_samples=mc_samples,
                                   batch_size=batch_size)
        labels.append(batch.labels)
        mus.append(mu)
        covs.append(cov)
        snrs.append(batch.snr)
    return Predictions(torch.cat(labels).double().numpy(), torch.cat(mus).double().numpy(),
                       torch.cat(covs).double().numpy(), torch.cat(snrs).numpy(),
                       scaling.scale.double().numpy())


GAUSSIAN_COVERAGE = (0.6827, 0.9545)  # fractions of a Gaussian within 1σ and 2σ
TEMPERATURE_METHODS = ("rms", "coverage")


def fit_temperature(residual_z: torch.Tensor, method: str = "rms") -> torch.Tensor:
    """Per-label σ multipliers T_k fitted on validation residuals z = (μ - y)/σ, (N, k).

    rms: T_k = sqrt(mean z_k²), the Gaussian maximum-likelihood scale (unit-variance residuals).
    coverage: the T_k whose 1σ and 2σ coverages come closest (least squares) to a Gaussian's
    68.27 / 95.45 %; for heavy-tailed residuals, whose RMS is set by the tails, this keeps the
    1σ interval from over-covering."""
    z = torch.as_tensor(residual_z, dtype=torch.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ModelError(f"fit_temperature needs (N >= 2, k) residuals, got {tuple(z.shape)}")
    if method not in TEMPERATURE_METHODS:
        raise ModelError(f"temperature method {method!r} is not known; use one of "
                         f"{TEMPERATURE_METHODS}")
    rms = z.pow(2).mean(0).sqrt()
    if method == "rms":
        return rms.float()
    a = z.abs()
    grid = rms[None, :] * torch.logspace(-2, 2, 4001, base=2, dtype=torch.float64)[:, None]
    miss = sum(((a[None] < k * grid[:, None]).double().mean(1) - c) ** 2
               for k, c in zip((1, 2), GAUSSIAN_COVERAGE, strict=True))  # (n_grid, k)
    best = []
    for j in range(z.shape[1]):  # the middle of the best interval of the (step) objective
        where = torch.nonzero(miss[:, j] <= miss[:, j].min() + 1e-12).flatten()
        best.append(grid[where[len(where) // 2], j])
    return torch.stack(best).float()


# ------------------------------------------------------------------------------------ tables
def _fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def format_table2(rows: list[dict], include_study: bool = True) -> str:
    """Table 2 layout: S/N | Σ | model | MAE Teff, log g, Z, vsini.

    rows: dicts with snr, covariance, model, mae (dict by label name).
    """
    header = ["S/N", "Sigma", "Model", "Teff", "log(g)", "Z", "Vsini"]
    body = []
    for r in rows:
        m = r["mae"]
        body.append([f"{r['snr']:g}", r["covariance"], r["model"], f"{m['teff']:.1f}",
                     f"{m['logg']:.3f}", f"{m['feh']:.3f}", f"{m['vsini']:.2f}"])
    if include_study:
        for snr, cov, name, (t, g, z, v) in STUDY_TABLE2:
            body.append([f"{snr}", cov, f"[study] {name}", f"{t:.1f}", f"{g:.3f}", f"{z:.3f}",
                         f"{v:.2f}"])
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["Table 2: mean absolute error (Teff K; log g, Z dex; vsini km/s)",
             _fmt_row(header, widths), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [_fmt_row(b, widths) for b in body]
    return "\n".join(lines)


def format_table3(rows: list[dict], include_study: bool = True) -> str:
    """Table 3 layout: model | % within 1σ | % within 2σ (all labels pooled), then per label."""
    names = [r["model"] for r in rows] + [f"[study] {n}" for n, _, _ in STUDY_TABLE3]
    w = max(len(n) for n in ["Model", *names])
    lines = ["Table 3: residuals within 1σ / 2σ (%), all labels pooled; per label in brackets",
             f"{'Model':<{w}} {'< 1σ':>7} {'< 2σ':>7}   per label 1σ (Teff, log g, Z, vsini)"]
    for r in rows:
        c1, c2 = r["coverage1"], r["coverage2"]
        per = ", ".join(f"{100 * c1[n]:.1f}" for n in LABELS)
        lines.append(f"{r['model']:<{w}} {100 * c1['all']:7.1f} {100 * c2['all']:7.1f}   [{per}]")
    if include_study:
        for name, a, b in STUDY_TABLE3:
            lines.append(f"{'[study] ' + name:<{w}} {a:7.1f} {b:7.1f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ figures
def _figure(n_rows: int, n_cols: int, size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    from .._files import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _against_true_labels(true: np.ndarray, values: np.ndarray, symbol: str, title: str,
                         path: str | os.PathLike, zero_line: bool = False,
                         color: str = "C0") -> Path:
    """A 4 × 4 grid: ``values[:, i]`` (n, 4) of each label (rows) against each true label
    ``true[:, j]`` (columns), saved to ``path``."""
    fig, axes = _figure(4, 4, (13, 11))
    for i, ni in enumerate(LABELS):
        for j, nj in enumerate(LABELS):
            ax = axes[i, j]
            ax.scatter(true[:, j], values[:, i], s=3, alpha=0.5, color=color)
            if zero_line:
                ax.axhline(0, color="k", lw=0.7)
            if i == 3:
                ax.set_xlabel(f"true {LABEL_TITLES[nj]}")
            if j == 0:
                ax.set_ylabel(f"{symbol} {LABEL_TITLES[ni]}")
    fig.suptitle(title)
    return _save(fig, path)


def plot_residuals(pred: Predictions, path: str | os.PathLike) -> Path:
    """Fig. 3: residual of each label (rows) against each true label (columns)."""
    return _against_true_labels(pred.labels, pred.residual, "Δ", "Residuals (predicted − true) "
                                "against the true labels", path, zero_line=True)


def plot_sigma(pred: Predictions, path: str | os.PathLike) -> Path:
    """Fig. 4: predicted σ of each label (rows) against each true label (columns)."""
    return _against_true_labels(pred.labels, pred.sigma, "σ", "Predicted standard deviations "
                                "against the true labels", path, color="C1")


def plot_attention(image: np.ndarray, maps: np.ndarray, wavelength: np.ndarray,
                   path: str | os.PathLike, title: str = "") -> Path:
    """Fig. 5: the input spectrum (top) and the three attention maps (below) against wavelength,
    each order drawn in turn, Mg b (5167.3, 5172.7, 5183.6 Å) marked.

    image: (n_orders, n_pixels); maps: (3, n_orders, n_pixels) (1 = uniform attention);
    wavelength: (n_orders, n_pixels) Å.
    """
    n_maps = maps.shape[0]
    fig, axes = _figure(n_maps + 1, 1, (12, 2.2 * (n_maps + 1)))
    for o in range(image.shape[0]):
        axes[0, 0].plot(wavelength[o], image[o], lw=0.4, color=f"C{o % 10}")
        for b in range(n_maps):
            axes[b + 1, 0].plot(wavelength[o], maps[b, o], lw=0.6, color=f"C{o % 10}")
    axes[0, 0].set_ylabel("normalised flux")
    for b in range(n_maps):
        axes[b + 1, 0].set_ylabel(f"α{b + 1} (× positions)")
    for ax in axes[:, 0]:
        for k, line in enumerate(MG_B):
            ax.axvline(line, color="r", lw=0.8, ls="--", label="Mg b" if k == 0 else None)
    axes[0, 0].legend(loc="lower right")
    axes[-1, 0].set_xlabel("wavelength [Å]")
    fig.suptitle(title or "Attention maps")
    return _save(fig, path)
