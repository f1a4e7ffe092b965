"""The APOGEE Cannon workflow (Berkeley Astro 128 lab) on the data we have.

* training/validation sets: emulated APOGEE spectra (:mod:`photosphere.datasets.apogee_emulated`)
  described by a small JSON-able spec stored in the model provenance, so that ``test`` and
  ``report`` rebuild exactly the same spectra;
* validation: per-label bias and scatter of the test step on held-out spectra;
* real spectra: the Payne-format combined and visit spectra on the 7214-px grid are fitted
  directly (model-mismatch pixels masked), and the reported labels say when a star lies outside
  the training labels (e.g. Arcturus, a giant, for a model trained on the dwarf emulator box).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import apogee_emulated as ae
from ..errors import ModelError
from ..models.cannon import CannonModel
from ..models.cannon_inference import FLAG_OUTSIDE_TRAINING, CannonLabelFit


@dataclass(frozen=True)
class DatasetSpec:
    """How an emulated APOGEE set is made (stored with the model; rebuilding is deterministic)."""

    n: int = 1855
    seed: int = 0
    snr: tuple[float, float] = (50.0, 200.0)
    box: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(ae.CANNON_BOX))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "apogee_emulated", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        return cls(int(d["n"]), int(d["seed"]), tuple(d["snr"]),
                   {k: tuple(v) for k, v in d["box"].items()})

    def build(self, data_dir: str | Path | None = None,
              emulator: ae.PayneEmulator | None = None) -> ae.SpectraSet:
        return ae.make_apogee_like(self.n, seed=self.seed, snr=self.snr, box=self.box,
                                   emulator=emulator, data_dir=data_dir)


def train(spec: DatasetSpec, *, order: int = 2, regularization: float = 0.0,
          data_dir: str | Path | None = None, n_calibration: int = 300,
          progress: bool = False) -> CannonModel:
    """Train a Cannon on the emulated set ``spec``; the spec goes into ``model.provenance_``.

    n_calibration: held-out spectra (seed + 2; the validation set of ``cannon test`` uses
    seed + 1) on which the label uncertainties are calibrated
    (:meth:`CannonModel.calibrate_uncertainties`); 0 keeps the formal errors.
    """
    emulator = ae.PayneEmulator.load(data_dir)
    data = spec.build(data_dir, emulator)
    model = CannonModel(ae.LABEL_NAMES, order=order, regularization=regularization,
                        progress=progress).fit(data.labels, data.flux, data.ivar, data.wavelength)
    model.provenance_["training_set"] = spec.to_dict()
    if n_calibration > 0:
        cal = DatasetSpec(n_calibration, spec.seed + 2, spec.snr, spec.box).build(data_dir,
                                                                                  emulator)
        model.calibrate_uncertainties(cal.flux, cal.ivar, cal.labels)
    return model


def training_spec(model: CannonModel) -> DatasetSpec:
    spec = model.provenance_.get("training_set")
    if not spec or spec.get("kind") != "apogee_emulated":
        raise ModelError("this model was not trained by `photosphere cannon train` on the emulated "
                         "APOGEE set, so its training spectra cannot be rebuilt for the report")
    return DatasetSpec.from_dict(spec)


def validation_spec(model: CannonModel, n: int = 1000, seed: int | None = None) -> DatasetSpec:
    """Held-out set in the training box, with a seed different from the training seed."""
    train_spec = training_spec(model)
    return DatasetSpec(n, train_spec.seed + 1 if seed is None else seed, train_spec.snr,
                       train_spec.box)


def label_statistics(estimate: np.ndarray, truth: np.ndarray, names,
                     sigma: np.ndarray | None = None) -> dict[str, dict]:
    """Per label: bias (mean), scatter (std) and robust scatter (1.4826 MAD) of estimate - truth;
    with ``sigma`` (n, k) also the fraction of stars with |estimate - truth| <= sigma
    (``coverage_1sigma``, 0.683 for calibrated Gaussian errors) and the std of the pulls."""
    diff = estimate - truth
    out = {}
    for k, name in enumerate(names):
        ok = np.isfinite(diff[:, k])
        d = diff[ok, k]
        out[name] = {"bias": float(np.mean(d)), "scatter": float(np.std(d)),
                     "robust_scatter": float(1.4826 * np.median(np.abs(d - np.median(d))))}
        if sigma is not None:
            z = d / sigma[ok, k]
            out[name]["coverage_1sigma"] = float(np.mean(np.abs(z) <= 1))
            out[name]["pull_scatter"] = float(np.std(z))
    return out


def validate(model: CannonModel, data: ae.SpectraSet) -> tuple[CannonLabelFit, dict]:
    """Test step on held-out spectra; returns the fit and per-label statistics (with the
    1σ coverage of the reported uncertainties)."""
    fit = model.infer_labels(data.flux, data.ivar, wavelength=data.wavelength)
    return fit, label_statistics(fit.labels, data.labels, model.label_names, fit.sigma)


#: literature labels of the real stars we can fit (for the report; None = not known here)
KNOWN_STARS = {
    "sun": {"teff": 5772.0, "logg": 4.44, "feh": 0.0},
    "arcturus": {"teff": 4286.0, "logg": 1.66, "feh": -0.52},
}


SPEED_OF_LIGHT = 299792.458  # km/s


def shift_to_rest(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, rv: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Observed flux/ivar on ``wavelength`` -> rest frame on the same pixels, for radial velocity
    ``rv`` (km/s, relativistic Doppler factor); pixels next to a masked one stay masked."""
    beta = rv / SPEED_OF_LIGHT
    observed = wavelength * np.sqrt((1 + beta) / (1 - beta))
    bad = (ivar <= 0).astype(float)
    flux_rest = np.interp(observed, wavelength, np.where(ivar > 0, flux, 1.0))
    ivar_rest = np.interp(observed, wavelength, ivar)
    outside = (observed < wavelength[0]) | (observed > wavelength[-1])
    masked = (np.interp(observed, wavelength, bad) > 0) | outside
    return flux_rest, np.where(masked, 0.0, ivar_rest)


def _best_rv(wavelength, flux, ivar, model_flux, velocities) -> float:
    chi2 = np.array([np.sum(iv * (f - model_flux) ** 2) for f, iv in
                     (shift_to_rest(wavelength, flux, ivar, v) for v in velocities)])
    k = int(np.argmin(chi2))
    if 0 < k < len(velocities) - 1:   # parabola through the minimum and its neighbours
        a, b, c = chi2[k - 1:k + 2]
        step = velocities[1] - velocities[0]
        denom = a - 2 * b + c
        if denom > 0:
            return float(velocities[k] + 0.5 * step * (a - c) / denom)
    return float(velocities[k])


def fit_labels_and_rv(model: CannonModel, wavelength: np.ndarray, flux: np.ndarray,
                      ivar: np.ndarray, rv_range: tuple[float, float] = (-400.0, 400.0),
                      iterations: int = 3) -> tuple[CannonLabelFit, float]:
    """Labels and radial velocity of one observed-frame spectrum on the model grid.

    Alternates a χ² scan in RV against the current model spectrum (2 km/s steps over
    ``rv_range`` first, then 0.25 km/s steps within ±10 km/s, refined by a parabola) with the
    Cannon test step on the spectrum shifted to the rest frame.
    """
    model_flux = model.predict(model.fiducials_)
    rv = _best_rv(wavelength, flux, ivar, model_flux, np.arange(rv_range[0], rv_range[1], 2.0))
    fit = None
    for _ in range(iterations):
        f_rest, iv_rest = shift_to_rest(wavelength, flux, ivar, rv)
        fit = model.infer_labels(f_rest, iv_rest, wavelength=wavelength)
        rv = _best_rv(wavelength, flux, ivar, fit.model_flux[0], rv + np.arange(-10, 10.01, 0.25))
    f_rest, iv_rest = shift_to_rest(wavelength, flux, ivar, rv)
    return model.infer_labels(f_rest, iv_rest, wavelength=wavelength), rv


def fit_real_spectrum(model: CannonModel, spectrum, name: str,
                      mismatch_mask: np.ndarray | None = None, fit_rv: bool = True
                      ) -> dict[str, Any]:
    """Fit one real spectrum on the model grid (labels and, by default, its radial velocity);
    mask the Kurucz-mismatch pixels; describe the result."""
    ivar = np.where(spectrum.mask, 0.0, spectrum.ivar)
    if mismatch_mask is not None:
        ivar = np.where(mismatch_mask, 0.0, ivar)
    model.check_wavelength(spectrum.wavelength)
    if fit_rv:
        fit, rv = fit_labels_and_rv(model, spectrum.wavelength, spectrum.flux, ivar)
    else:
        fit, rv = model.infer_labels(spectrum.flux, ivar, wavelength=spectrum.wavelength), 0.0
    out = {"name": name, "source": spectrum.meta.source, "rv_kms": rv, **fit.as_dict(0)}
    if fit.flags[0] & FLAG_OUTSIDE_TRAINING:
        out["note"] = ("best-fit labels lie outside the training labels: the model extrapolates "
                       "and these labels are not trustworthy")
    return out


def fit_payne_files(model: CannonModel, data_dir: str | Path | None = None) -> list[dict]:
    """Fit the real APOGEE spectra shipped in Payne format (combined spectrum and each visit)."""
    from ..io.payne import read_payne_spectrum, read_payne_visits

    mismatch = ae.load_model_mismatch_mask(data_dir)
    combined = ae.payne_file("spectrum_ap_id_2M13012770+5754582_.npz", data_dir)
    visits = ae.payne_file("visit_spectra_ap_id_2M06133561+2433362_.npz", data_dir)
    results = [fit_real_spectrum(model, read_payne_spectrum(combined),
                                 "2M13012770+5754582 (combined)", mismatch)]
    stack = read_payne_visits(visits)
    for k in range(stack.flux.shape[0]):
        results.append(fit_real_spectrum(model, read_payne_visits(visits, visit=k),
                                         f"2M06133561+2433362 (visit {k})", mismatch))
    return results


def apvisit_on_model_grid(path: str | Path, wavelength: np.ndarray,
                          continuum_pixels: np.ndarray) -> dict[str, Any]:
    """An apVisit file made ready for the Cannon (the lab's preprocessing on a real visit).

    Chips joined and rebinned (flux-conserving) onto the model pixels in the observed frame,
    bad pixels (bitmask bits 0–7, 12) masked; a first normalisation by the upper envelope gives
    the RV; then the spectrum is shifted to the rest frame and divided by a pseudo-continuum fitted
    per chip to the Cannon continuum pixels (quadratic Chebyshev, Ness et al. 2015 §2.3).
    Returns ``wavelength``, ``raw`` and ``ivar_raw`` (rest frame), ``continuum``, ``flux`` and
    ``ivar`` (normalised) on the model pixels, and ``observed`` (upper-envelope normalised,
    observed frame) for the RV step.
    """
    from ..io.apogee import read_apvisit
    from ..ops.continuum import APOGEE_CHIPS, fit_pseudo_continuum, normalize_upper_envelope
    from ..ops.resample import resample
    from ..spectrum import Spectrum

    visit = read_apvisit(path)
    order = np.argsort(visit.wavelength.ravel())
    joined = Spectrum(visit.wavelength.ravel()[order], visit.flux.ravel()[order],
                      visit.sigma.ravel()[order], mask=visit.mask.ravel()[order],
                      medium="vacuum", meta=visit.meta)
    on_grid = resample(joined, wavelength)
    ivar = np.where(on_grid.mask, 0.0, on_grid.ivar)
    observed = normalize_upper_envelope(on_grid, chips=APOGEE_CHIPS)
    return {"name": Path(path).name, "wavelength": wavelength, "on_grid": on_grid,
            "observed": observed, "ivar_raw_observed": ivar,
            "fit_continuum": lambda rv: _rest_frame_pseudo_continuum(
                wavelength, on_grid.flux, ivar, rv, continuum_pixels, APOGEE_CHIPS,
                fit_pseudo_continuum)}


def _rest_frame_pseudo_continuum(wavelength, flux, ivar, rv, continuum_pixels, chips, fit):
    raw, ivar_raw = shift_to_rest(wavelength, flux, ivar, rv)
    continuum = fit(wavelength, raw, ivar_raw, continuum_pixels, chips=chips, on_failure="nan")
    good = np.isfinite(continuum) & (continuum > 0)
    flux_n = np.where(good, raw / np.where(good, continuum, 1.0), 1.0)
    ivar_n = np.where(good, ivar_raw * continuum**2, 0.0)
    return {"raw": raw, "ivar_raw": ivar_raw, "continuum": continuum, "flux": flux_n,
            "ivar": ivar_n}


def fit_apvisit(model: CannonModel, path: str | Path, continuum_pixels: np.ndarray,
                mismatch_mask: np.ndarray | None = None) -> dict[str, Any]:
    """Labels and RV of one apVisit file (see :func:`apvisit_on_model_grid`)."""
    prepared = apvisit_on_model_grid(path, model.wavelength, continuum_pixels)
    obs = prepared["observed"]
    ivar = np.where(obs.mask, 0.0, obs.ivar)
    if mismatch_mask is not None:
        ivar = np.where(mismatch_mask, 0.0, ivar)
    _, rv = fit_labels_and_rv(model, obs.wavelength, obs.flux, ivar)
    rest = prepared["fit_continuum"](rv)
    ivar_rest = rest["ivar"] if mismatch_mask is None else np.where(mismatch_mask, 0.0,
                                                                     rest["ivar"])
    fit = model.infer_labels(rest["flux"], ivar_rest, wavelength=model.wavelength)
    out = {"name": f"{prepared['name']} (apVisit)", "source": str(path), "rv_kms": rv,
           "barycentric_correction_kms": obs.meta.barycentric_correction, **fit.as_dict(0)}
    if fit.flags[0] & FLAG_OUTSIDE_TRAINING:
        out["note"] = ("best-fit labels lie outside the training labels: the model extrapolates "
                       "and these labels are not trustworthy")
    return out


def atlas_on_model_grid(path: str | Path, wavelength: np.ndarray, resolution: float = 22500.0,
                        snr: float = 200.0, medium: str = "air"):
    """A high-resolution normalised atlas degraded to APOGEE: Gaussian LSF of ``resolution``,
    rebinned onto the model pixels; σ = 1/``snr`` assumed (the atlases carry no errors).

    medium: the APOGEE solar/Arcturus atlases (Hinkle et al.) are in *air* wavelengths: read as
    vacuum, the Sun comes out with an apparent RV of -81 km/s, exactly the air-vacuum offset at
    1.6 µm; read as air and converted, its RV is ~0.
    """
    from ..io.text import read_text
    from ..ops.lsf import broaden_spectrum
    from ..ops.resample import resample

    atlas = read_text(path, medium=medium)
    lo, hi = wavelength[0] - 20, wavelength[-1] + 20
    atlas = atlas.slice(max(lo, atlas.wavelength[0]), min(hi, atlas.wavelength[-1]))
    if atlas.medium != "vacuum":
        from ..ops.airvac import air_to_vacuum

        atlas = atlas.replace(wavelength=air_to_vacuum(atlas.wavelength), medium="vacuum")
    broad = broaden_spectrum(atlas, resolution)
    on_grid = resample(broad, wavelength)
    ivar = np.where(on_grid.mask | ~np.isfinite(on_grid.flux), 0.0, snr**2)
    return on_grid, ivar


def fit_atlas(model: CannonModel, path: str | Path, star: str,
              mismatch_mask: np.ndarray | None = None) -> dict[str, Any]:
    """Labels of the solar or Arcturus atlas; says so when the star lies outside the training
    labels (Arcturus, a giant, is outside the dwarf emulator box)."""
    spec, ivar = atlas_on_model_grid(path, model.wavelength)
    if mismatch_mask is not None:
        ivar = np.where(mismatch_mask, 0.0, ivar)
    flux = np.where(ivar > 0, spec.flux, 1.0)
    fit, rv = fit_labels_and_rv(model, model.wavelength, flux, ivar)
    out = {"name": f"{star} (atlas)", "source": str(path), "rv_kms": rv, **fit.as_dict(0),
           "assumed_snr": 200.0}
    known = KNOWN_STARS.get(star)
    if known:
        out["literature"] = known
        bounds = model.bounds
        outside = [n for n, v in known.items()
                   if n in bounds and not bounds[n][0] <= v <= bounds[n][1]]
        if outside:
            out["note"] = (f"{star} lies outside the training labels in {outside} (literature "
                           f"{ {n: known[n] for n in outside} }, training ranges "
                           f"{ {n: bounds[n] for n in outside} }): the fitted labels are an "
                           "extrapolation of the model and are not trustworthy")
    return out


def fit_all_real(model: CannonModel, data_dir: str | Path | None = None) -> list[dict]:
    """Every real APOGEE spectrum in the shared data: Payne-format combined and visit spectra,
    the two apVisit files, and the solar and Arcturus atlases."""
    root = Path(data_dir) if data_dir is not None else ae.shared_data_dir()
    mismatch = ae.load_model_mismatch_mask(root)
    continuum_pixels = ae.load_continuum_pixels(root)
    results = fit_payne_files(model, root)
    for path in sorted((root / "apogee").glob("apVisit-*.fits")):
        results.append(fit_apvisit(model, path, continuum_pixels, mismatch))
    for star, name in (("sun", "atlas_sun_hband.txt"), ("arcturus", "atlas_arcturus_hband.txt")):
        path = root / "apogee" / name
        if path.is_file():
            results.append(fit_atlas(model, path, star, mismatch))
    return results
