"""The result of a fit: labels with uncertainties, χ², the model spectrum, provenance.

A :class:`Result` writes itself to JSON (the ``--json`` document), ECSV (one table row, the
format of the batch results table) and FITS (labels, covariance, samples, data and model per
segment), and plots itself (data / model / residuals per order; corner plot).

A *segment* is one order of one exposure: a 1D spectrum gives one segment, an echelle spectrum
one per order, a list of exposures the concatenation of theirs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_path
from ._json import plain as _plain
from .errors import FitError


@dataclass(frozen=True)
class Segment:
    """Data and best-fit model of one order of one exposure, arrays ``(n_pix,)``.

    wavelength: Å (observed frame); flux, sigma: data; mask: True = not used in the fit;
    model: full model (star × telluric × continuum); continuum: the continuum polynomial alone.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    model: np.ndarray
    continuum: np.ndarray
    name: str = ""

    @property
    def residual(self) -> np.ndarray:
        return self.flux - self.model


@dataclass(frozen=True)
class Result:
    """Labels and their uncertainties from one fit.

    values: ``{name: value}`` for every parameter, free and fixed, physical units.
    sigma: ``{name: 1σ}`` (NaN for fixed parameters).
    free: names of the fitted parameters, in the order of ``covariance`` rows and ``samples``
    columns.
    covariance: ``(n_free, n_free)`` physical units.
    chi2, n_pixels: χ² over the ``n_pixels`` unmasked pixels; ``chi2_reduced = chi2 / (n_pixels -
    n_free - n_continuum)``.
    flags: ``converged`` (bool), ``at_bound`` (names of parameters within 0.1 % of a bound),
    plus method-specific entries (``n_starts``, ``iterations``, MCMC diagnostics...).
    samples: ``(n_samples, n_free)`` posterior samples (MCMC) or None.
    """

    values: dict[str, float]
    sigma: dict[str, float]
    free: tuple[str, ...]
    covariance: np.ndarray
    chi2: float
    n_pixels: int
    n_parameters: int
    segments: tuple[Segment, ...] = ()
    flags: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    samples: np.ndarray | None = None
    method: str = "least_squares"

    # ------------------------------------------------------------------ access
    @property
    def chi2_reduced(self) -> float:
        dof = self.n_pixels - self.n_parameters
        return float(self.chi2 / dof) if dof > 0 else float("nan")

    @property
    def labels(self) -> dict[str, tuple[float, float]]:
        """``{name: (value, sigma)}`` for every parameter (sigma NaN when fixed)."""
        return {n: (self.values[n], self.sigma.get(n, float("nan"))) for n in self.values}

    @property
    def converged(self) -> bool:
        return bool(self.flags.get("converged", False))

    @property
    def fixed(self) -> tuple[str, ...]:
        return tuple(n for n in self.values if n not in self.free)

    def correlation(self) -> np.ndarray:
        """``(n_free, n_free)`` correlation matrix."""
        s = np.sqrt(np.clip(np.diag(self.covariance), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.covariance / np.outer(s, s)

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={v:.4g}±{self.sigma.get(n, float('nan')):.2g}"
                         for n, v in self.values.items())
        return f"Result({self.method}: {body}; χ²_red={self.chi2_reduced:.3f})"

    # ------------------------------------------------------------------ serialisation
    def _label_entry(self, name: str, value: float) -> dict[str, float]:
        entry = {"value": float(value), "sigma": float(self.sigma.get(name, float("nan")))}
        stat = (self.flags.get("sigma_stat") or {}).get(name)
        if stat is not None:
            entry["sigma_stat"] = float(stat)
            entry["sigma_sys"] = float(self.flags["systematic_floor"][name])
        return entry

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``{"labels": {"teff": {"value": 5790.0, "sigma": 35.0}, ...},
        "chi2_reduced": 1.03, ...}`` (sigma null for fixed parameters). With a systematic floor
        (``flags["sigma_stat"]``) a label also gives ``sigma_stat`` and ``sigma_sys``, and
        ``sigma`` is their sum in quadrature."""
        return _plain({
            "labels": {n: self._label_entry(n, v) for n, v in self.values.items()},
            "chi2": float(self.chi2),
            "chi2_reduced": self.chi2_reduced,
            "n_pixels": int(self.n_pixels),
            "n_parameters": int(self.n_parameters),
            "free": list(self.free),
            "fixed": list(self.fixed),
            "covariance": np.asarray(self.covariance, float),
            "method": self.method,
            "flags": self.flags,
            "provenance": self.provenance,
        })

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The JSON document as text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    def to_row(self) -> dict[str, Any]:
        """One flat table row: ``name``, ``name_err`` per parameter, χ², flags, source."""
        row: dict[str, Any] = {"source": str(self.provenance.get("source", ""))}
        for n, v in self.values.items():
            row[n] = float(v)
            row[f"{n}_err"] = float(self.sigma.get(n, float("nan")))
        row.update(chi2=float(self.chi2), chi2_reduced=self.chi2_reduced,
                   n_pixels=int(self.n_pixels), converged=self.converged,
                   at_bound=",".join(self.flags.get("at_bound", ())), method=self.method)
        return row

    def to_table(self):
        """An astropy Table with one row (:meth:`to_row`); provenance in ``meta``."""
        from astropy.table import Table

        row = self.to_row()
        table = Table(rows=[row], names=list(row))
        table.meta.update(_plain({"free": list(self.free), "provenance": self.provenance}))
        return table

    def to_ecsv(self, path: str | Path) -> Path:
        """Write the one-row table as ECSV (atomically); returns the path."""
        path = Path(path)
        with atomic_path(path, suffix=".ecsv") as tmp:
            self.to_table().write(tmp, format="ascii.ecsv", overwrite=True)
        return path

    def to_fits(self, path: str | Path) -> Path:
        """FITS: LABELS (one-row table), COVAR (image), SEGMENTS (data/model per segment),
        SAMPLES (image, when present). Written atomically."""
        from astropy.io import fits
        from astropy.table import Table

        hdus: list[Any] = [fits.PrimaryHDU()]
        hdus[0].header["METHOD"] = self.method
        hdus[0].header["CHI2"] = float(self.chi2)
        hdus[0].header["CHI2RED"] = (self.chi2_reduced if math.isfinite(self.chi2_reduced)
                                     else -1.0)
        hdus[0].header["NPIX"] = int(self.n_pixels)
        hdus[0].header["CONVERG"] = self.converged
        labels = fits.table_to_hdu(Table(rows=[self.to_row()], names=list(self.to_row())))
        labels.name = "LABELS"
        covar = fits.ImageHDU(np.asarray(self.covariance, float), name="COVAR")
        covar.header["FREE"] = ",".join(self.free)
        hdus += [labels, covar]
        if self.segments:
            n = max(len(s.wavelength) for s in self.segments)

            def pad(a: np.ndarray, fill: float) -> np.ndarray:
                return np.concatenate([a, np.full(n - len(a), fill)])

            seg = Table({
                "name": [s.name for s in self.segments],
                "n_pix": [len(s.wavelength) for s in self.segments],
                **{col: np.stack([pad(np.asarray(getattr(s, col), float), np.nan)
                                  for s in self.segments])
                   for col in ("wavelength", "flux", "sigma", "model", "continuum")},
                "mask": np.stack([pad(s.mask.astype(float), 1.0) > 0 for s in self.segments]),
            })
            hdu = fits.table_to_hdu(seg)
            hdu.name = "SEGMENTS"
            hdus.append(hdu)
        if self.samples is not None:
            samp = fits.ImageHDU(np.asarray(self.samples, float), name="SAMPLES")
            samp.header["FREE"] = ",".join(self.free)
            hdus.append(samp)
        path = Path(path)
        with atomic_path(path, suffix=".fits") as tmp:
            fits.HDUList(hdus).writeto(tmp, overwrite=True)
        return path

    # ------------------------------------------------------------------ plots
    def plot(self, path: str | Path | None = None, segments: Sequence[int] | None = None):
        """Data, model and residuals (in σ) per segment; returns the matplotlib Figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if not self.segments:
            raise FitError("this Result holds no data/model segments to plot")
        idx = list(range(len(self.segments))) if segments is None else list(segments)
        fig, axes = plt.subplots(2 * len(idx), 1, figsize=(10, 3.2 * len(idx)), squeeze=False,
                                 gridspec_kw={"height_ratios": [3, 1] * len(idx)})
        for k, i in enumerate(idx):
            s = self.segments[i]
            ax, axr = axes[2 * k, 0], axes[2 * k + 1, 0]
            good = ~s.mask
            ax.plot(s.wavelength, np.where(good, s.flux, np.nan), "k-", lw=0.6, label="data")
            ax.plot(s.wavelength, s.model, "C3-", lw=0.8, label="model")
            ax.plot(s.wavelength, s.continuum, "C0--", lw=0.6, label="continuum")
            ax.set_ylabel("flux")
            ax.set_title(s.name or f"segment {i}", fontsize=9)
            with np.errstate(invalid="ignore", divide="ignore"):
                res = np.where(good, s.residual / s.sigma, np.nan)
            axr.plot(s.wavelength, res, "k-", lw=0.5)
            axr.axhline(0, color="C3", lw=0.6)
            axr.set_ylabel("resid / σ")
            axr.set_xlabel("wavelength [Å]")
            if k == 0:
                ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def corner(self, path: str | Path | None = None, truths: Mapping[str, float] | None = None,
               n_draws: int = 20000, seed: int = 0):
        """Corner plot of the free parameters: the MCMC samples, or draws from the Gaussian
        ``covariance`` approximation for a least-squares result (stated in the figure title)."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import corner

        names = list(self.free)
        if self.samples is not None:
            samples, what = np.asarray(self.samples), "posterior samples"
        else:
            cov = np.asarray(self.covariance, float)
            keep = np.isfinite(np.diag(cov))     # parameters without information are left out
            cov = cov[np.ix_(keep, keep)]
            names = [n for n, k in zip(self.free, keep, strict=True) if k]
            if not names or not np.all(np.isfinite(cov)):
                raise FitError("the covariance is not finite; no corner plot can be drawn")
            mean = np.array([self.values[n] for n in names])
            samples = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n_draws,
                                                                      method="eigh")
            what = "Gaussian approximation (covariance)"
            if not keep.all():
                what += "; no information on " + ", ".join(
                    n for n, k in zip(self.free, keep, strict=True) if not k)
        truth_list = None if truths is None else [truths.get(n) for n in names]
        fig = corner.corner(samples, labels=names, truths=truth_list,
                            quantiles=[0.16, 0.5, 0.84], show_titles=True)
        fig.suptitle(what, fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig
