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
          data_dir: str | Path | None = None, progress: bool = False) -> CannonModel:
    """Train a Cannon on the emulated set ``spec``; the spec goes into ``model.provenance_``."""
    data = spec.build(data_dir)
    model = CannonModel(ae.LABEL_NAMES, order=order, regularization=regularization,
                        progress=progress).fit(data.labels, data.flux, data.ivar, data.wavelength)
    model.provenance_["training_set"] = spec.to_dict()
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


def label_statistics(estimate: np.ndarray, truth: np.ndarray, names) -> dict[str, dict]:
    """Per label: bias (mean), scatter (std) and robust scatter (1.4826 MAD) of estimate - truth."""
    diff = estimate - truth
    out = {}
    for k, name in enumerate(names):
        d = diff[:, k][np.isfinite(diff[:, k])]
        out[name] = {"bias": float(np.mean(d)), "scatter": float(np.std(d)),
                     "robust_scatter": float(1.4826 * np.median(np.abs(d - np.median(d))))}
    return out


def validate(model: CannonModel, data: ae.SpectraSet) -> tuple[CannonLabelFit, dict]:
    """Test step on held-out spectra; returns the fit and per-label statistics."""
    fit = model.infer_labels(data.flux, data.ivar, wavelength=data.wavelength)
    return fit, label_statistics(fit.labels, data.labels, model.label_names)


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
    model._check_wavelength(spectrum.wavelength)
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
