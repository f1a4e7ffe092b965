"""Empirical line strengths: a synthetic grid corrected against a reference star.

Synthetic spectra inherit the errors of their line list: in the Sun, the Gaia-ESO list makes
many lines too strong and a few too weak (``docs/synthesis.md``). Spectroscopic surveys answer
with *astrophysical* oscillator strengths: log gf adjusted until the synthesis of a reference
star of known labels (the Sun) matches its observed spectrum. This module does the same in flux
space, without re-running the radiative transfer: each pixel of the grid's wavelength axis gets
an exponent c(λ) and every corrected spectrum is

    f'(λ) = f(λ) ** c(λ)        (pseudo optical depth −ln f scaled by c)

For a weak line, −ln f is proportional to gf, so c is the factor 10**Δlog gf of the line that
dominates that pixel in the reference star; for a saturated line it scales the whole pseudo
optical depth profile. c is found by a fixed-point iteration: the reference star's grid spectrum
raised to c is broadened (rotation, radial–tangential macroturbulence, Gaussian LSF), shifted and
rebinned onto the observed pixels, and c is multiplied by ln(observed)/ln(model), mapped back
onto the grid pixels, until the two agree.

Limits (state them with any result): c is learnt at one (Teff, log g, [Fe/H]); at other labels
a pixel may be dominated by another line (another species, another excitation), whose
correction is then wrong. Lines missing from the list cannot be created (c × 0 = 0). The
reference star is in-sample: its labels recovered through a corrected grid are a consistency
check, not a validation; test on other stars.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import FileFormatError, InvalidSpectrumError, MissingFileError, OutOfGridError

MIN_DEPTH = 0.02  # observed/model pixels shallower than this carry no line-strength information
MAX_EXPONENT = 3.0  # c is clipped to [0, MAX_EXPONENT] (0 removes a line the star does not show)
_FORMAT = "photosphere line strengths 1"


@dataclass(frozen=True)
class LineStrengths:
    """Per-pixel exponents c(λ) on a grid's wavelength axis (``f' = f ** c``).

    wavelength: (n_pix,) Å in ``medium`` (the grid's own axis); exponent: (n_pix,) c ≥ 0;
    reference: how it was made (labels, broadening, observed file and its SHA-256, residuals
    before and after, iterations).
    """

    wavelength: np.ndarray
    exponent: np.ndarray
    medium: str = "air"
    reference: dict[str, Any] = field(default_factory=dict)
    # arrays on the observed pixels from :func:`derive_line_strengths`, for plots (not stored):
    # wavelength, observed (continuum-divided), before, after
    diagnostics: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        wave = np.asarray(self.wavelength, dtype=float)
        c = np.asarray(self.exponent, dtype=float)
        if wave.ndim != 1 or c.shape != wave.shape:
            raise InvalidSpectrumError(f"line strengths need wavelength and exponent of one "
                                       f"shape (n,), got {wave.shape} and {c.shape}")
        if not (np.all(np.isfinite(c)) and np.all(c >= 0)):
            raise InvalidSpectrumError("line-strength exponents must be finite and >= 0")
        if wave.size > 1 and not np.all(np.diff(wave) > 0):
            raise InvalidSpectrumError("line-strength wavelengths must increase strictly")
        object.__setattr__(self, "wavelength", wave)
        object.__setattr__(self, "exponent", c)

    @property
    def digest(self) -> str:
        """SHA-256 of the wavelengths and exponents (names a corrected grid in caches)."""
        h = hashlib.sha256(np.ascontiguousarray(self.wavelength).tobytes())
        h.update(np.ascontiguousarray(self.exponent).tobytes())
        h.update(self.medium.encode())
        return h.hexdigest()

    def apply(self, flux: torch.Tensor) -> torch.Tensor:
        """flux (..., n_pix) normalised, on this object's wavelengths -> flux ** c (same shape).

        Differentiable in flux; flux is floored at 1e-12 so a saturated core stays finite."""
        f = torch.as_tensor(flux)
        if f.shape[-1] != self.exponent.size:
            raise InvalidSpectrumError(f"flux has {f.shape[-1]} pixels but the line strengths "
                                       f"have {self.exponent.size}; use them with their own grid")
        c = torch.as_tensor(self.exponent, dtype=f.dtype, device=f.device)
        return torch.exp(c * torch.log(f.clamp_min(1e-12)))

    def summary(self) -> dict[str, Any]:
        """Plain numbers for reports: how much changed and the reference's fit quality."""
        changed = np.abs(self.exponent - 1.0) > 0.05
        return {"n_pixels": int(self.exponent.size), "fraction_changed": float(changed.mean()),
                "median_exponent_changed": float(np.median(self.exponent[changed]))
                if changed.any() else 1.0, "digest": self.digest, **self.reference}

    # -- files ------------------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """Write an ECSV table (wavelength, exponent) with the reference in its metadata."""
        from astropy.table import Table

        from .._files import atomic_path

        path = Path(path)
        table = Table({"wavelength": self.wavelength, "exponent": self.exponent},
                      meta={"format": _FORMAT, "medium": self.medium,
                            "reference": json.dumps(self.reference)})
        table["wavelength"].unit = "Angstrom"
        with atomic_path(path, suffix=".ecsv") as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        return path

    @classmethod
    def read(cls, path: str | Path) -> LineStrengths:
        """Read a file written by :meth:`write`; typed errors for missing or foreign files."""
        from astropy.table import Table

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"line-strength file {path} does not exist; make one with "
                                   "`photosphere grid calibrate-lines`")
        try:
            table = Table.read(path, format="ascii.ecsv")
        except Exception as exc:  # astropy raises many kinds for a broken table
            raise FileFormatError(f"{path} is not a readable ECSV table ({exc}); write it "
                                  "again with `photosphere grid calibrate-lines`") from None
        if table.meta.get("format") != _FORMAT or not {"wavelength", "exponent"} <= set(
                table.colnames):
            raise FileFormatError(f"{path} is not a line-strength table (format "
                                  f"{table.meta.get('format')!r}); make one with `photosphere "
                                  "grid calibrate-lines`")
        return cls(np.asarray(table["wavelength"], dtype=float),
                   np.asarray(table["exponent"], dtype=float), str(table.meta.get("medium",
                                                                                  "air")),
                   json.loads(table.meta.get("reference", "{}")))

    def to_dict(self) -> dict[str, Any]:
        """For checkpoints: arrays as lists are too slow, so tensors."""
        return {"wavelength": torch.as_tensor(self.wavelength),
                "exponent": torch.as_tensor(self.exponent), "medium": self.medium,
                "reference": dict(self.reference)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineStrengths:
        return cls(np.asarray(d["wavelength"], dtype=float), np.asarray(d["exponent"],
                                                                         dtype=float),
                   str(d.get("medium", "air")), dict(d.get("reference", {})))


class CorrectedSource:
    """A forward model whose spectra are raised to a :class:`LineStrengths` exponent.

    Same labels, bounds, wavelengths and medium as ``source``; ``predict`` returns
    ``source.predict(labels) ** c``; ``predict_error_templates`` (when the source has them) are
    carried through the derivative ``c f**(c-1)``. ``cache_token`` names the pair for image
    caches.
    """

    def __init__(self, source, strengths: LineStrengths):
        wave = np.asarray(source.wavelength, dtype=float)
        if wave.shape != strengths.wavelength.shape or not np.allclose(
                wave, strengths.wavelength, rtol=0, atol=1e-6):
            raise InvalidSpectrumError(
                "the line strengths were made on another wavelength axis than this grid's "
                f"({strengths.wavelength.size} px against {wave.size}); make them with this grid")
        if getattr(source, "medium", strengths.medium) != strengths.medium:
            raise InvalidSpectrumError(f"line strengths in {strengths.medium} wavelengths, grid "
                                       f"in {source.medium}")
        self.source = source
        self.strengths = strengths
        self.label_names = source.label_names
        self.bounds = source.bounds
        self.wavelength = source.wavelength
        self.medium = source.medium
        for name in ("fixed_labels", "velocity_step", "path"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))
        self.cache_token = strengths.digest

    def predict(self, labels: torch.Tensor) -> torch.Tensor:
        return self.strengths.apply(self.source.predict(labels))

    def __getattr__(self, name: str):
        if name == "predict_error_templates" and hasattr(self.source, name):
            return self._templates
        raise AttributeError(name)

    def _templates(self, labels: torch.Tensor) -> torch.Tensor:
        flux = self.source.predict(labels)
        templates = self.source.predict_error_templates(labels)  # (..., K, n_pix)
        c = torch.as_tensor(self.strengths.exponent, dtype=flux.dtype, device=flux.device)
        slope = c * torch.exp((c - 1) * torch.log(flux.clamp_min(1e-12)))
        return templates * slope.unsqueeze(-2)


def _source_labels(source, labels: dict[str, float]) -> torch.Tensor:
    fixed = dict(getattr(source, "fixed_labels", {}) or {})
    defaults = {"alpha": 0.0, "vmic": 1.0, **fixed}
    row = []
    for name in source.label_names:
        if name in labels:
            value = float(labels[name])
        elif name in defaults:
            value = float(defaults[name])
        else:
            raise OutOfGridError(f"the reference star needs a value for the grid label "
                                 f"{name!r}; give it in labels")
        lo, hi = source.bounds[name]
        if not lo <= value <= hi:
            raise OutOfGridError(f"reference {name}={value:g} is outside the grid ({lo:g}-{hi:g})")
        row.append(value)
    return torch.tensor([row], dtype=torch.float64)


def _overlap(observed, wave_src: np.ndarray, medium: str) -> tuple[np.ndarray, np.ndarray]:
    """The observed wavelengths and flux that the grid covers (with 60 km/s to spare for
    rotation, macroturbulence and rv) and that are finite; at least 100 pixels."""
    if getattr(observed, "medium", medium) != medium:
        raise InvalidSpectrumError(f"the observed spectrum is in {observed.medium} wavelengths, "
                                   f"the grid in {medium}; convert it first (ops.airvac)")
    wave_obs = np.asarray(observed.wavelength, dtype=float)
    flux_obs = np.asarray(observed.flux, dtype=float)
    margin = 1 + 60.0 / 299_792.458  # rotation + macroturbulence + rv inside the grid
    keep = (wave_obs > wave_src[0] * margin) & (wave_obs < wave_src[-1] / margin)
    keep &= np.isfinite(flux_obs)
    if keep.sum() < 100:
        raise InvalidSpectrumError(
            f"the observed spectrum ({wave_obs[0]:.1f}-{wave_obs[-1]:.1f} Å) overlaps the grid "
            f"({wave_src[0]:.1f}-{wave_src[-1]:.1f} Å) in {int(keep.sum())} finite pixels; "
            "need at least 100")
    return wave_obs[keep], flux_obs[keep]


def _exponent_ratio(model: np.ndarray, obs: np.ndarray, min_depth: float,
                    max_exponent: float) -> np.ndarray:
    """Per observed pixel, ln(observed) / ln(model) where a line is informative (deeper than
    ``min_depth`` in either, the model at least half that), 1 elsewhere; clipped to
    [0, max_exponent]."""
    depth_model, depth_obs = 1.0 - model, 1.0 - obs
    # a line the grid barely has is not boosted to stand in for a missing one
    informative = ((np.maximum(depth_model, depth_obs) > min_depth)
                   & (depth_model > min_depth / 2))
    ratio = np.ones_like(model)
    ratio[informative] = (np.log(np.clip(obs[informative], 1e-6, 1 - 1e-6))
                          / np.log(np.clip(model[informative], 1e-6, 1 - 1e-6)))
    return np.clip(ratio, 0.0, max_exponent)


def derive_line_strengths(observed, source, labels: dict[str, float], *, vsini: float = 1.9,
                          n_iter: int = 8, min_depth: float = MIN_DEPTH,
                          max_exponent: float = MAX_EXPONENT, continuum_degree: int = 2,
                          provenance: dict[str, Any] | None = None,
                          progress: bool = True) -> LineStrengths:
    """c(λ) on ``source``'s wavelengths that makes the reference star's spectrum match.

    observed: :class:`~photosphere.spectrum.Spectrum`, continuum-normalised, same medium as the
    grid; source: a forward model (e.g. ``GridInterpolator``); labels: the star's grid labels
    (e.g. ``{"teff": 5772, "logg": 4.44, "feh": 0.0}``); vsini: km/s, fixed (the Sun: 1.9).
    R, ζ_RT and rv are fitted once to the uncorrected spectrum
    (:func:`~photosphere.grids.synth.validation_fit.fit_to_observation`), the continuum (Legendre
    of ``continuum_degree``) in every iteration. Only pixels where the observed or the model
    line is deeper than ``min_depth`` (and the model at least half as deep) update c; c is
    clipped to [0, ``max_exponent``]. provenance: extra entries for ``reference`` (e.g. the
    observed file's and the grid's names).
    """
    from .synth.validation_fit import Broadener, fit_to_observation, legendre_basis

    wave_src = np.asarray(source.wavelength, dtype=float)
    medium = getattr(source, "medium", "air")
    wave_obs, flux_obs = _overlap(observed, wave_src, medium)
    with torch.no_grad():
        base = source.predict(_source_labels(source, labels))[0].double().numpy()
    fit_model, broadening = fit_to_observation(SimpleNamespace(wavelength=wave_src, flux=base),
                                               wave_obs, flux_obs, vsini=vsini,
                                               continuum_degree=continuum_degree)
    resolution, zeta, rv = (broadening["resolution"], broadening["macroturbulence"],
                            broadening["rv"])
    basis = legendre_basis(wave_obs, continuum_degree)
    # observed pixels -> grid pixels: the model is shifted by +rv, so grid pixel λ sits at λ(1+β)
    shifted_src = wave_src * math.sqrt((1 + rv / 299_792.458) / (1 - rv / 299_792.458))
    exponent = np.ones_like(base)
    lines = 1.0 - base > 1e-3  # grid pixels with any absorption (c elsewhere is irrelevant)
    history, models = [], []
    for _ in tqdm(range(n_iter + 1), desc="line strengths", disable=not progress, leave=False):
        corrected = np.exp(exponent * np.log(np.clip(base, 1e-12, None)))
        broaden = Broadener(SimpleNamespace(wavelength=wave_src, flux=corrected), wave_obs, 0.5,
                            vsini)
        with torch.no_grad():
            model = broaden(resolution, zeta, rv)
        design = basis * model[:, None]
        coef, *_ = np.linalg.lstsq(design, flux_obs, rcond=None)
        continuum = basis @ coef
        obs = flux_obs / continuum
        history.append(float(np.sqrt(np.mean((obs - model) ** 2))))
        models.append(model)
        if len(history) == n_iter + 1:
            break
        ratio = _exponent_ratio(model, obs, min_depth, max_exponent)
        on_src = np.interp(shifted_src, wave_obs, ratio, left=1.0, right=1.0)
        exponent = np.where(lines, np.clip(exponent * on_src, 0.0, max_exponent), 1.0)
    reference = {"labels": {k: float(v) for k, v in labels.items()}, "vsini": float(vsini),
                 "resolution": float(resolution), "macroturbulence": float(zeta),
                 "rv": float(rv), "iterations": int(n_iter), "min_depth": float(min_depth),
                 "rms_before": history[0], "rms_after": history[-1],
                 "rms_history": history,
                 "fit_rms_uncorrected": float(np.sqrt(np.mean((fit_model - flux_obs) ** 2))),
                 **(provenance or {})}
    diagnostics = {"wavelength": wave_obs, "observed": obs, "before": models[0],
                   "after": models[-1]}
    return LineStrengths(wave_src, exponent, medium, reference, diagnostics)


def plot_line_strengths(strengths: LineStrengths, path: str | Path,
                        zoom: tuple[float, float] = (5240.0, 5260.0)) -> Path:
    """Three panels (PNG, written atomically): the reference star and its grid spectrum before
    and after the correction over ``zoom`` (Å), the residuals over the whole window, and the
    exponent c(λ). Needs the diagnostics of :func:`derive_line_strengths`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import atomic_path

    d = strengths.diagnostics
    if d is None:
        raise InvalidSpectrumError("these line strengths were read from a file; plots need the "
                                   "arrays of a fresh derive_line_strengths run")
    ref = strengths.reference
    path = Path(path)
    fig, axes = plt.subplots(3, 1, figsize=(12, 9))
    w = d["wavelength"]
    sel = (w >= zoom[0]) & (w <= zoom[1])
    ax = axes[0]
    ax.plot(w[sel], d["observed"][sel], "k-", lw=0.9, label="observed")
    ax.plot(w[sel], d["before"][sel], "r-", lw=0.7, label="grid")
    ax.plot(w[sel], d["after"][sel], "b-", lw=0.7, label="grid with empirical line strengths")
    ax.set_ylabel("normalised flux")
    ax.legend(loc="lower left", fontsize=8)
    labels = ", ".join(f"{k} {v:g}" for k, v in ref.get("labels", {}).items())
    ax.set_title(f"reference star ({labels}); ζ {ref.get('macroturbulence', float('nan')):.2f} "
                 f"km/s, vsini {ref.get('vsini', float('nan')):.1f} km/s")
    ax = axes[1]
    ax.plot(w, d["before"] - d["observed"], "r-", lw=0.4,
            label=f"grid − observed (rms {ref.get('rms_before', float('nan')):.4f})")
    ax.plot(w, d["after"] - d["observed"], "b-", lw=0.4,
            label=f"corrected − observed (rms {ref.get('rms_after', float('nan')):.4f})")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("residual")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[2]
    changed = strengths.exponent != 1.0
    ax.plot(strengths.wavelength[changed], strengths.exponent[changed], "k.", ms=1)
    ax.axhline(1.0, color="r", lw=0.5)
    ax.set_ylabel("exponent c (f → f^c)")
    ax.set_xlabel(f"wavelength (Å, {strengths.medium})")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
