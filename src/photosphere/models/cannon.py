"""The Cannon: a data-driven spectral model (Ness et al. 2015; Casey et al. 2016, "The Cannon 2").

Every pixel's normalised flux is a polynomial in the scaled labels x = (label - fiducial) / scale,
f_λ(x) = θ_λ · ℓ(x), with an intrinsic scatter s²_λ added to the flux variance. Training
(:meth:`CannonModel.fit`) learns θ and s² from spectra with known labels; the test step
(:meth:`CannonModel.infer_labels`) finds the labels of new spectra. The model is also a forward
model: :meth:`CannonModel.predict` maps labels to flux on :attr:`CannonModel.wavelength`.

>>> model = CannonModel(["teff", "logg", "feh"], order=2).fit(labels, flux, ivar, wavelength)
>>> result = model.infer_labels(test_flux, test_ivar)
>>> result.labels, result.covariance       # physical units (K, dex, dex)
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._files import atomic_path
from ..errors import CheckpointError, ModelError
from . import cannon_kernel, polynomial
from .cannon_inference import FLAG_AT_BOUND, FLAG_NOT_CONVERGED, CannonLabelFit, fit_labels
from .cannon_newton import ScatterNewton
from .cannon_training import PixelSolver, optimise_scatter

FORMAT = "photosphere.cannon"
FORMAT_VERSION = 1
DEFAULT_S2_GRID = np.concatenate([[0.0], np.logspace(-8, 0, 9)])


def _label_array(labels: Any, label_names: Sequence[str], what: str) -> np.ndarray:
    """(n, n_labels) float array from an array or a name -> column mapping/table."""
    if isinstance(labels, Mapping) or (hasattr(labels, "colnames") and hasattr(labels, "columns")):
        missing = [n for n in label_names if n not in labels]
        if missing:
            raise ModelError(f"{what} has no column(s) {missing}; needs {list(label_names)}")
        labels = np.column_stack([np.asarray(labels[n], dtype=float) for n in label_names])
    arr = np.asarray(labels, dtype=float)
    if arr.ndim == 1 and arr.size == len(label_names):
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != len(label_names):
        raise ModelError(
            f"{what} must have shape (n_stars, {len(label_names)}) for labels "
            f"{list(label_names)}, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        star, label = np.argwhere(bad)[0]
        raise ModelError(
            f"{what} contains {int(bad.sum())} non-finite value(s), first at star {star} label "
            f"{label_names[label]!r} ({arr[star, label]}); drop those stars or fill the labels")
    return arr


def _clean_training_spectra(n_stars: int, flux, ivar
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Training flux and ivar (n_stars, n_pix) as float arrays, checked and cleaned: negative
    or NaN ivar is refused; non-finite flux and +inf ivar are masked (ivar = 0, flux = 1).
    Also returns the usable stars per pixel (n_pix,) when the compiled pass counted them, else
    None."""
    flux = np.asarray(flux, dtype=float)
    ivar = np.asarray(ivar, dtype=float)
    if flux.ndim != 2 or flux.shape[0] != n_stars or ivar.shape != flux.shape:
        raise ModelError(
            f"flux and ivar must both have shape (n_stars={n_stars}, n_pix); got flux "
            f"{flux.shape} and ivar {ivar.shape}")
    n_valid = None
    if cannon_kernel.AVAILABLE and flux.flags.c_contiguous and ivar.flags.c_contiguous:
        # the checks below in one compiled pass over both arrays
        lowest, flux_finite, ivar_finite, n_valid = cannon_kernel.input_summary(flux, ivar)
    else:
        lowest, highest = ivar.min(initial=0.0), ivar.max(initial=0.0)   # NaN propagates
        flux_finite, ivar_finite = bool(np.isfinite(flux.sum())), bool(np.isfinite(highest))
    if np.isnan(lowest) or lowest < 0:
        raise ModelError("ivar has negative or NaN values; use ivar = 0 for bad pixels")
    if not flux_finite:
        bad_flux = ~np.isfinite(flux)
        ivar = np.where(bad_flux, 0.0, ivar)
        flux = np.where(bad_flux, 1.0, flux)
    if not ivar_finite:
        ivar = np.where(np.isfinite(ivar), ivar, 0.0)
    return flux, ivar, n_valid


class CannonModel:
    """The Cannon (scikit-learn conventions: settings here, learning in :meth:`fit`).

    label_names: the labels, e.g. ``("teff", "logg", "feh")``.
    order: total polynomial degree (2 = the quadratic model of Ness et al. 2015).
    cross_terms: keep products of different labels (``False``: pure powers only).
    terms: explicit terms by label name, e.g. ``[("teff",), ("feh",), ("teff", "feh")]``; overrides
        ``order``/``cross_terms``; the constant is always included.
    regularization: L1 strength Λ (Casey et al. 2016), scalar or (n_pix,); the objective per
        pixel is -ln L + Λ Σ_{j≥1} |θ_j| (0 = plain least squares, the original Cannon).
    censors: ``{label: (n_pix,) bool}``, True where that label may influence the pixel; terms
        involving a label are dropped at pixels where it is censored.
    s2_grid: candidate scatter values (normalised-flux units squared) for a global grid search
        followed by a bracketed parabolic refinement; that search is always used with L1
        regularisation. None (default) without regularisation: safeguarded Newton steps on the
        profile likelihood (:mod:`photosphere.models.cannon_newton`), several times faster.
    s2_tolerance_dex: precision of log10 s² (both searches also stop when a step would raise
        ln L by less than 1e-4).
    progress: show progress bars on stderr.
    medium: ``"air"`` or ``"vacuum"``, the medium of the training wavelengths (APOGEE's and the
        APOGEE emulator's: vacuum; a model trained on a synthetic grid: the grid's medium).

    Learned attributes: ``theta_`` (n_pix, n_terms), ``s2_`` (n_pix,), ``fiducials_``,
    ``scales_`` (n_labels,), ``wavelength_`` (n_pix,) Å or None, ``training_labels_``,
    ``training_log_likelihood_`` (n_pix,), ``provenance_`` (dict); ``sigma_scale_`` (n_labels,)
    or None, set by :meth:`calibrate_uncertainties`.
    """

    def __init__(self, label_names: Sequence[str], order: int = 2, cross_terms: bool = True,
                 terms: Sequence[Sequence[str]] | None = None,
                 regularization: float | np.ndarray = 0.0,
                 censors: Mapping[str, np.ndarray] | None = None,
                 s2_grid: Sequence[float] | None = None, s2_tolerance_dex: float = 0.01,
                 progress: bool = False, medium: Literal["air", "vacuum"] = "vacuum"):
        if medium not in ("air", "vacuum"):
            raise ModelError(f"medium must be 'air' or 'vacuum', got {medium!r}")
        self.label_names = tuple(label_names)
        self.medium = medium
        self.order = order
        self.cross_terms = cross_terms
        self.terms = None if terms is None else [tuple((t,) if isinstance(t, str) else t)
                                                 for t in terms]
        self.regularization = regularization
        self.censors = censors
        self.s2_grid = s2_grid
        self.s2_tolerance_dex = s2_tolerance_dex
        self.progress = progress

    # ------------------------------------------------------------------ structure
    @property
    def term_indices(self) -> list[polynomial.Term]:
        """Terms as tuples of label indices (see :mod:`photosphere.models.polynomial`)."""
        if len(set(self.label_names)) != len(self.label_names) or not self.label_names:
            raise ModelError(f"label_names must be unique and non-empty, got {self.label_names}")
        if self.terms is not None:
            return polynomial.parse_terms(self.terms, self.label_names)
        return polynomial.polynomial_terms(len(self.label_names), self.order, self.cross_terms)

    @property
    def term_names(self) -> list[str]:
        return polynomial.term_names(self.term_indices, self.label_names)

    @property
    def n_terms(self) -> int:
        """Coefficients per pixel (length of θ_λ)."""
        return len(self.term_indices)

    @property
    def n_parameters(self) -> int:
        """All learned numbers: θ and s² at every pixel (needs a fitted model)."""
        self._check_fitted()
        return int(self.theta_.size + self.s2_.size)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "theta_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError("this CannonModel is not trained yet; call fit(...) or "
                             "CannonModel.load(path) first")

    @property
    def wavelength(self) -> np.ndarray | None:
        """(n_pix,) Å of the training spectra (None when trained without wavelengths)."""
        self._check_fitted()
        return self.wavelength_

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Training label range per label (where the model is trustworthy), physical units."""
        self._check_fitted()
        lo, hi = self.training_labels_.min(axis=0), self.training_labels_.max(axis=0)
        return {n: (float(a), float(b)) for n, a, b in zip(self.label_names, lo, hi, strict=True)}

    def scale_labels(self, labels: np.ndarray) -> np.ndarray:
        """Physical (..., n_labels) -> scaled labels x = (label - fiducial) / scale."""
        if not hasattr(self, "scales_"):
            self._check_fitted()
        return (labels - self.fiducials_) / self.scales_

    def unscale_labels(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return x * self.scales_ + self.fiducials_

    def design_matrix(self, labels) -> np.ndarray:
        """Label vectors ℓ for physical labels (n, n_labels) -> (n, n_terms)."""
        labels = _label_array(labels, self.label_names, "labels")
        return polynomial.design_matrix(self.scale_labels(labels), self.term_indices)

    # ------------------------------------------------------------------ training
    def _term_mask(self, n_pix: int) -> np.ndarray | None:
        if not self.censors:
            return None
        allowed = np.ones((n_pix, len(self.label_names)), dtype=bool)
        for name, mask in self.censors.items():
            if name not in self.label_names:
                raise ModelError(f"censors names unknown label {name!r}; labels are "
                                 f"{list(self.label_names)}")
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (n_pix,):
                raise ModelError(f"censors[{name!r}] must have shape ({n_pix},) (one bool per "
                                 f"pixel), got {mask.shape}")
            allowed[:, self.label_names.index(name)] = mask
        return polynomial.term_mask(self.term_indices, allowed)

    def fit(self, labels, flux: np.ndarray, ivar: np.ndarray,
            wavelength: np.ndarray | None = None) -> CannonModel:
        """Train on spectra with known labels; returns ``self``.

        labels: (n_stars, n_labels) physical labels, or a mapping/table with the label columns.
        flux: (n_stars, n_pix) continuum-normalised flux; ivar: same shape, 1/σ² (0 = masked).
        wavelength: (n_pix,) Å, stored so that test spectra on another grid are refused.
        """
        labels = _label_array(labels, self.label_names, "training labels")
        flux, ivar, n_valid = _clean_training_spectra(labels.shape[0], flux, ivar)
        n_stars, n_pix = flux.shape
        if wavelength is not None:
            wavelength = np.asarray(wavelength, dtype=float)
            if wavelength.shape != (n_pix,):
                raise ModelError(f"wavelength must have shape ({n_pix},), got {wavelength.shape}")
        self._check_enough_stars(n_stars, ivar, n_valid, wavelength)
        design = self._training_design(labels)
        theta, s2, loglike, search, method = self._solve_pixels(design, flux, ivar)
        self.theta_ = theta
        self.s2_ = s2
        self.training_log_likelihood_ = loglike
        self.training_labels_ = labels
        self.wavelength_ = wavelength
        self.sigma_scale_ = None
        from .._version import __version__

        self.provenance_ = {
            "photosphere_version": __version__,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "n_training_stars": int(n_stars),
            "n_pixels": int(n_pix),
            "method": method,
            "s2_search": search,
        }
        return self

    def _check_enough_stars(self, n_stars: int, ivar: np.ndarray, n_valid: np.ndarray | None,
                            wavelength: np.ndarray | None) -> None:
        """Refuse a training set with fewer stars than polynomial terms, or with pixels that
        have fewer unmasked stars (n_valid (n_pix,), counted here from ivar (n_stars, n_pix)
        if None) than terms."""
        n_terms = len(self.term_indices)
        if n_stars < n_terms:
            raise ModelError(
                f"{n_stars} training stars cannot constrain {n_terms} terms per pixel "
                f"({len(self.label_names)} labels, order {self.order}); use at least {n_terms} "
                "stars (many more in practice) or a lower order / fewer cross terms")
        if n_valid is None:
            n_valid = (ivar > 0).sum(axis=0)
        empty = np.flatnonzero(n_valid < n_terms)
        if empty.size:
            where = (f" at {wavelength[empty[0]]:.3f} Å" if wavelength is not None else "")
            raise ModelError(
                f"{empty.size} pixel(s) have fewer unmasked training spectra than the {n_terms} "
                f"terms (e.g. pixel {empty[0]}{where} with {n_valid[empty[0]]}); these pixels are "
                "all- or nearly all-masked: drop them from flux/ivar/wavelength before training")

    def _training_design(self, labels: np.ndarray) -> np.ndarray:
        """Set the label scaling from the training labels (n_stars, n_labels), physical
        units: fiducials = the median, scales = the 2.5–97.5 percentile range; returns the
        label vectors (n_stars, n_terms), refused if they do not constrain every term."""
        terms = self.term_indices
        self.fiducials_ = np.percentile(labels, 50, axis=0)
        scales = np.ptp(np.percentile(labels, [2.5, 97.5], axis=0), axis=0)
        if np.any(scales <= 0):
            constant = [n for n, s in zip(self.label_names, scales, strict=True) if s <= 0]
            raise ModelError(f"training labels {constant} do not vary; remove them from "
                             "label_names or use a training set that spans them")
        self.scales_ = scales
        design = polynomial.design_matrix(self.scale_labels(labels), terms)
        rank = np.linalg.matrix_rank(design)
        if rank < len(terms):
            raise ModelError(
                f"the training labels constrain only {rank} of the {len(terms)} polynomial "
                f"terms {self.term_names}; use a lower order or training labels that vary "
                "independently")
        return design

    def _solve_pixels(self, design: np.ndarray, flux: np.ndarray, ivar: np.ndarray):
        """θ (n_pix, n_terms), s² (n_pix,) (normalised-flux units squared), the training
        ln L (n_pix,), the s² search's summary and the method's description: Newton steps on
        the profile likelihood for the plain model, the grid search + refinement of
        :func:`optimise_scatter` with L1 regularisation or a given ``s2_grid``."""
        n_pix = flux.shape[1]
        reg = np.broadcast_to(np.asarray(self.regularization, dtype=float), (n_pix,)).copy()
        if np.any(reg < 0) or not np.all(np.isfinite(reg)):
            raise ModelError(f"regularization must be finite and >= 0, got {self.regularization}")
        if np.any(reg > 0) or self.s2_grid is not None:
            solver = PixelSolver(design, flux, ivar, self._term_mask(n_pix), reg)
            grid = (DEFAULT_S2_GRID if self.s2_grid is None
                    else np.asarray(self.s2_grid, dtype=float))
            theta, s2, loglike = optimise_scatter(solver, grid, self.s2_tolerance_dex,
                                                  progress=self.progress)
            search = {}
            method = ("Ness et al. 2015 / Casey et al. 2016; s² by profile-likelihood grid + "
                      "bracketed parabolic/golden refinement")
        else:
            newton = ScatterNewton(design, flux, ivar, self.term_indices,
                                   self._term_mask(n_pix))
            theta, s2, loglike, search = newton.run(self.s2_tolerance_dex,
                                                    progress=self.progress)
            method = ("Ness et al. 2015; s² by safeguarded Newton steps on the profile "
                      "likelihood, all pixels batched")
        return theta, s2, loglike, search, method

    # ------------------------------------------------------------------ forward model
    def predict(self, labels):
        """Model flux for physical labels: (..., n_labels) -> (..., n_pix).

        NumPy in -> NumPy out; a torch tensor in gives a differentiable torch tensor out.
        """
        self._check_fitted()
        if isinstance(labels, np.ndarray | list | tuple | Mapping):
            if isinstance(labels, Mapping):
                labels = _label_array(labels, self.label_names, "labels")
            labels = np.asarray(labels, dtype=float)
            self._check_label_shape(labels)
            x = self.scale_labels(labels)
            return polynomial.design_matrix(x, self.term_indices) @ self.theta_.T
        import torch

        self._check_label_shape(labels)
        fid = torch.as_tensor(self.fiducials_, dtype=labels.dtype, device=labels.device)
        scale = torch.as_tensor(self.scales_, dtype=labels.dtype, device=labels.device)
        theta = torch.as_tensor(self.theta_, dtype=labels.dtype, device=labels.device)
        return polynomial.design_matrix((labels - fid) / scale, self.term_indices) @ theta.T

    def _check_label_shape(self, labels) -> None:
        if labels.shape[-1] != len(self.label_names):
            raise ModelError(f"labels must end in {len(self.label_names)} values "
                             f"{list(self.label_names)}, got shape {tuple(labels.shape)}")

    def gradient(self, labels) -> np.ndarray:
        """Gradient spectra ∂f/∂label, physical units: (..., n_labels) -> (..., n_pix, n_labels).

        E.g. ``gradient(l)[..., 0]`` is the flux change per K of Teff when teff is label 0.
        """
        self._check_fitted()
        labels = np.asarray(labels, dtype=float)
        self._check_label_shape(labels)
        jac = polynomial.design_jacobian(self.scale_labels(labels), self.term_indices)
        return np.einsum("lp,...pk->...lk", self.theta_, jac) / self.scales_

    # ------------------------------------------------------------------ test step
    def infer_labels(self, flux: np.ndarray, ivar: np.ndarray, *,
                     wavelength: np.ndarray | None = None, n_starts: int = 3,
                     bounds: Mapping[str, tuple[float, float]] | None = None,
                     max_iter: int = 100, chunk_size: int = 1024,
                     poor_fit_chi2_reduced: float = 3.0) -> CannonLabelFit:
        """Labels of many spectra at once (batched Levenberg–Marquardt, analytic Jacobian).

        flux, ivar: (n_spectra, n_pix) or (n_pix,) continuum-normalised, on :attr:`wavelength`
        (pass ``wavelength`` to have that checked). n_starts: starting points per spectrum,
        chosen as the best-χ² training labels (plus the fiducial). bounds: physical label
        limits ``{name: (lo, hi)}``; the default is the training range widened by half its width
        on each side. Covariances are in physical units. See :class:`CannonLabelFit` for flags.
        """
        self._check_fitted()
        flux = np.atleast_2d(np.asarray(flux, dtype=float))
        ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
        n_pix = self.theta_.shape[0]
        if flux.shape[-1] != n_pix or ivar.shape != flux.shape:
            raise ModelError(
                f"test spectra must have shape (n_spectra, {n_pix}) like the training spectra; "
                f"got flux {flux.shape}, ivar {ivar.shape}; resample them onto the model "
                "wavelength grid (model.wavelength) first")
        if wavelength is not None:
            self.check_wavelength(wavelength)
        lo, hi = self._bounds_scaled(bounds)
        return fit_labels(self, flux, ivar, lo, hi, n_starts=n_starts, max_iter=max_iter,
                          chunk_size=chunk_size, poor_fit_chi2_reduced=poor_fit_chi2_reduced,
                          progress=self.progress)

    def calibrate_uncertainties(self, flux: np.ndarray, ivar: np.ndarray, labels, *,
                                wavelength: np.ndarray | None = None) -> dict[str, Any]:
        """Scale the formal label errors so that they describe held-out spectra; returns a summary.

        The formal covariance (JᵀWJ)⁻¹ only knows the pixel noise σ²_λ + s²_λ; the model error of
        a quadratic Cannon is correlated across pixels and is not in it, so on realistic data the
        formal errors are several times too small. Here the test step is run on spectra with
        known labels that were NOT used in training (flux, ivar (n, n_pix), labels (n, k)), and
        per label the factor f_k = the 68.27th percentile of |Δ_k / σ_formal,k| (so that ±f_k σ
        covers 68.27 % of the calibration stars, as ±1σ does for calibrated Gaussian errors;
        f = 1 when the formal errors are right) is stored as ``sigma_scale_``; from then on
        :meth:`infer_labels` reports the covariance D C D with D = diag(f) (the formal one stays
        in ``formal_covariance``). The factors and the 1σ coverage before/after on this set are
        stored in ``provenance_["uncertainty_calibration"]`` and saved with the model.
        """
        self._check_fitted()
        truth = _label_array(labels, self.label_names, "calibration labels")
        flux = np.atleast_2d(np.asarray(flux, dtype=float))
        if truth.shape[0] != flux.shape[0]:
            raise ModelError(f"{truth.shape[0]} calibration labels for {flux.shape[0]} spectra; "
                             "pass one label row per spectrum")
        if truth.shape[0] < 20:
            raise ModelError(f"{truth.shape[0]} calibration spectra are too few to measure the "
                             "width of the label errors; use at least 20 (hundreds in practice)")
        self.sigma_scale_ = None
        fit = self.infer_labels(flux, ivar, wavelength=wavelength)
        good = (fit.flags & (FLAG_NOT_CONVERGED | FLAG_AT_BOUND)) == 0
        pulls = ((fit.labels - truth) / fit.sigma_formal)[good]
        if pulls.shape[0] < 20:
            raise ModelError(f"only {pulls.shape[0]} calibration fits converged inside the bounds; "
                             "the calibration set does not match the model")
        scale = np.percentile(np.abs(pulls), 68.27, axis=0)
        self.sigma_scale_ = scale
        self.provenance_["uncertainty_calibration"] = {
            "n_spectra": int(pulls.shape[0]),
            "method": "sigma_scale = 68.27th percentile of |fit - truth| / sigma_formal per "
                      "label, on held-out spectra",
            "sigma_scale": dict(zip(self.label_names, scale.tolist(), strict=True)),
            "coverage_1sigma_formal": dict(zip(
                self.label_names, np.mean(np.abs(pulls) <= 1, axis=0).tolist(), strict=True)),
            "coverage_1sigma_calibrated": dict(zip(
                self.label_names, np.mean(np.abs(pulls) <= scale, axis=0).tolist(), strict=True)),
        }
        return self.provenance_["uncertainty_calibration"]

    def infer_spectrum(self, spectrum, **kwargs) -> CannonLabelFit:
        """Labels of one :class:`~photosphere.spectrum.Spectrum` on the model wavelength grid."""
        self.check_wavelength(spectrum.wavelength)
        ivar = np.where(spectrum.mask, 0.0, spectrum.ivar)
        return self.infer_labels(spectrum.flux, ivar, **kwargs)

    def check_wavelength(self, wavelength) -> None:
        """Raise ModelError unless ``wavelength`` (Å) is the model grid (to 1e-4 Å)."""
        wavelength = np.asarray(wavelength, dtype=float)
        if self.wavelength_ is None:
            raise ModelError("this model was trained without wavelengths, so it cannot check "
                             "the test grid; pass arrays without wavelength")
        if wavelength.shape != self.wavelength_.shape or not np.allclose(
                wavelength, self.wavelength_, rtol=1e-7, atol=1e-4):
            raise ModelError(
                f"test spectra are on a different wavelength grid ({wavelength.size} px, "
                f"{wavelength.min():.2f}-{wavelength.max():.2f} Å) than the model "
                f"({self.wavelength_.size} px, {self.wavelength_[0]:.2f}-"
                f"{self.wavelength_[-1]:.2f} Å); resample them onto model.wavelength first")

    def _bounds_scaled(self, bounds) -> tuple[np.ndarray, np.ndarray]:
        train_lo = self.training_labels_.min(axis=0)
        train_hi = self.training_labels_.max(axis=0)
        width = train_hi - train_lo
        lo, hi = train_lo - 0.5 * width, train_hi + 0.5 * width
        for name, (a, b) in (bounds or {}).items():
            if name not in self.label_names:
                raise ModelError(f"bounds names unknown label {name!r}; labels are "
                                 f"{list(self.label_names)}")
            if not a < b:
                raise ModelError(f"bounds[{name!r}] = ({a}, {b}) must have lo < hi")
            k = self.label_names.index(name)
            lo[k], hi[k] = a, b
        return self.scale_labels(lo), self.scale_labels(hi)

    # ------------------------------------------------------------------ persistence
    def settings(self) -> dict[str, Any]:
        return {
            "label_names": list(self.label_names),
            "order": int(self.order),
            "cross_terms": bool(self.cross_terms),
            "terms": None if self.terms is None else [list(t) for t in self.terms],
            "s2_grid": None if self.s2_grid is None else [float(v) for v in self.s2_grid],
            "s2_tolerance_dex": float(self.s2_tolerance_dex),
            "medium": self.medium,
        }

    def save(self, path: str | Path) -> Path:
        """Write the trained model to HDF5 (atomically): settings, arrays, provenance."""
        import h5py

        self._check_fitted()
        path = Path(path)
        with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["settings"] = json.dumps(self.settings())
            f.attrs["provenance"] = json.dumps(self.provenance_)
            f.attrs["term_names"] = json.dumps(self.term_names)
            for name in ("theta_", "s2_", "fiducials_", "scales_", "training_labels_",
                         "training_log_likelihood_"):
                f.create_dataset(name.rstrip("_"), data=getattr(self, name),
                                 compression="gzip")
            f.create_dataset("regularization", data=np.broadcast_to(
                np.asarray(self.regularization, dtype=float), self.s2_.shape))
            if self.wavelength_ is not None:
                f.create_dataset("wavelength", data=self.wavelength_)
            if getattr(self, "sigma_scale_", None) is not None:
                f.create_dataset("sigma_scale", data=self.sigma_scale_)
            if self.censors:
                g = f.create_group("censors")
                for name, mask in self.censors.items():
                    g.create_dataset(name, data=np.asarray(mask, dtype=bool))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CannonModel:
        """Read a model written by :meth:`save`."""
        import h5py

        path = Path(path)
        if not path.is_file():
            from ..errors import MissingFileError

            raise MissingFileError(f"Cannon model file {path} does not exist")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise CheckpointError(
                        f"{path} is not a photosphere Cannon model (format attribute "
                        f"{f.attrs.get('format')!r}, expected {FORMAT!r})")
                settings = json.loads(f.attrs["settings"])
                reg = f["regularization"][()]
                censors = ({k: f["censors"][k][()] for k in f["censors"]}
                           if "censors" in f else None)
                model = cls(settings["label_names"], order=settings["order"],
                            cross_terms=settings["cross_terms"], terms=settings["terms"],
                            regularization=reg if np.any(reg != reg[0]) else float(reg[0]),
                            censors=censors, s2_grid=settings["s2_grid"],
                            s2_tolerance_dex=settings["s2_tolerance_dex"],
                            medium=settings.get("medium", "vacuum"))
                for name in ("theta_", "s2_", "fiducials_", "scales_", "training_labels_",
                             "training_log_likelihood_"):
                    setattr(model, name, f[name.rstrip("_")][()])
                model.wavelength_ = f["wavelength"][()] if "wavelength" in f else None
                model.sigma_scale_ = f["sigma_scale"][()] if "sigma_scale" in f else None
                model.provenance_ = json.loads(f.attrs["provenance"])
        except (OSError, KeyError) as exc:
            raise CheckpointError(f"{path} is not a complete Cannon model file: {exc}") from exc
        if model.theta_.shape[1] != model.n_terms:
            raise CheckpointError(f"{path}: theta has {model.theta_.shape[1]} terms but the "
                                  f"settings give {model.n_terms}")
        return model

    def __repr__(self) -> str:
        state = (f"trained on {self.training_labels_.shape[0]} stars x {self.theta_.shape[0]} px"
                 if self.is_fitted else "untrained")
        return (f"CannonModel(labels={list(self.label_names)}, order={self.order}, "
                f"terms={self.n_terms}, {state})")
