"""The Cannon on a synthetic grid (dataset (a) of the APOGEE lab): training and test spectra made
from a ``photosphere.grids`` HDF5 file, by default the embedded grid.

Spectra are interpolated (multilinearly, :class:`~photosphere.grids.interpolate.GridInterpolator`)
at labels drawn uniformly in a box, so they lie between the nodes; then degraded to an
instrument: a Gaussian LSF of resolving power ``resolution`` and flux-conserving rebinning onto a
log-uniform grid with ``sampling`` pixels per resolution element (FWHM), ``margin`` Å trimmed at
each end (where the LSF would reach past the grid). Noise is Gaussian with σ_λ = √f_λ / (S/N),
S/N uniform per star. The training set and the held-out set are the same recipe with different
seeds; the recipe (:class:`GridDatasetSpec`) is stored in the model provenance so that ``cannon
test`` and ``cannon report`` rebuild the same spectra.

At the native R = 115 000 of the embedded grid a quadratic model cannot follow the line cores
over a wide label box; at an APOGEE-like R = 22 500 it can (see docs/cannon.md for the figures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.apogee_emulated import SpectraSet
from ..errors import ModelError
from ..models.cannon import CannonModel

SPEED_OF_LIGHT = 299792.458  # km/s
#: the label box of the default grid workflow: giants and subgiants, as in the APOGEE lab
GIANT_BOX = {"teff": (4000.0, 5750.0), "logg": (1.0, 3.5), "feh": (-2.0, 0.5)}


def grid_path(grid: str) -> Path:
    """``"default"`` -> the embedded grid (GridError if it is not built); else the path."""
    if grid == "default":
        from ..grids.presets import require_default_grid

        return require_default_grid()
    path = Path(grid)
    if not path.is_file():
        from ..errors import MissingFileError

        raise MissingFileError(f"grid file {path} does not exist; pass a photosphere grid HDF5 "
                               "file (photosphere grid build) or 'default' for the embedded grid")
    return path


def instrument_wavelength(wavelength: np.ndarray, resolution: float, sampling: float,
                          margin: float) -> np.ndarray:
    """Log-uniform output pixels (Å) inside ``wavelength`` shrunk by ``margin`` Å at each end,
    with velocity step c / (``resolution`` · ``sampling``)."""
    step = SPEED_OF_LIGHT / (resolution * sampling)
    lo, hi = wavelength[0] + margin, wavelength[-1] - margin
    if not hi > lo:
        raise ModelError(f"margin={margin} Å leaves no wavelengths in {wavelength[0]:.2f}-"
                         f"{wavelength[-1]:.2f} Å; use a smaller margin")
    ratio = np.log1p(step / SPEED_OF_LIGHT)
    n = int(np.floor(np.log(hi / lo) / ratio)) + 1
    return lo * np.exp(ratio * np.arange(n))


def degrade(wavelength: np.ndarray, flux: np.ndarray, velocity_step: float, resolution: float,
            wavelength_out: np.ndarray) -> np.ndarray:
    """Gaussian LSF (FWHM c/R) on the log-uniform input, then flux-conserving rebinning.

    wavelength: (n_in,) Å log-uniform with ``velocity_step`` km/s per pixel; flux: (n, n_in);
    wavelength_out: (n_out,) Å inside the input range. Returns (n, n_out). The LSF is the same
    for every spectrum, so this is one separable filter and one cumulative sum per spectrum.
    """
    from scipy.ndimage import gaussian_filter1d

    sigma_px = SPEED_OF_LIGHT / resolution / (2 * np.sqrt(2 * np.log(2))) / velocity_step
    broad = gaussian_filter1d(np.asarray(flux, float), sigma_px, axis=-1, mode="nearest",
                              truncate=5.0)
    edges_in = np.concatenate([[1.5 * wavelength[0] - 0.5 * wavelength[1]],
                               0.5 * (wavelength[1:] + wavelength[:-1]),
                               [1.5 * wavelength[-1] - 0.5 * wavelength[-2]]])
    mid = 0.5 * (wavelength_out[1:] + wavelength_out[:-1])
    edges_out = np.concatenate([[1.5 * wavelength_out[0] - 0.5 * wavelength_out[1]], mid,
                                [1.5 * wavelength_out[-1] - 0.5 * wavelength_out[-2]]])
    cumulative = np.concatenate([np.zeros((broad.shape[0], 1)),
                                 np.cumsum(broad * np.diff(edges_in), axis=-1)], axis=-1)
    at = np.stack([np.interp(edges_out, edges_in, c) for c in cumulative])
    return np.diff(at, axis=-1) / np.diff(edges_out)


@dataclass(frozen=True)
class GridDatasetSpec:
    """How a set of grid spectra is made (JSON-able; rebuilding is deterministic).

    grid: ``"default"`` (embedded grid) or a grid file path; n: spectra; seed; snr: (lo, hi)
    per-star S/N; box: ``{label: (lo, hi)}`` (labels of the grid axes with more than one node;
    missing labels use the grid range, None uses :data:`GIANT_BOX` for the embedded grid and the
    full grid range otherwise); resolution: R of the Gaussian LSF (None: keep the grid's pixels
    and resolution); sampling: output pixels per FWHM; margin: Å trimmed at each end.
    """

    grid: str = "default"
    n: int = 1000
    seed: int = 0
    snr: tuple[float, float] = (50.0, 200.0)
    box: dict[str, tuple[float, float]] | None = None
    resolution: float | None = 22500.0
    sampling: float = 3.0
    margin: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "grid", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridDatasetSpec:
        box = d.get("box")
        return cls(str(d["grid"]), int(d["n"]), int(d["seed"]), tuple(d["snr"]),
                   None if box is None else {k: tuple(v) for k, v in box.items()},
                   None if d.get("resolution") is None else float(d["resolution"]),
                   float(d["sampling"]), float(d["margin"]))

    def replace(self, **changes) -> GridDatasetSpec:
        return GridDatasetSpec(**{**asdict(self), **changes})

    def label_box(self, interpolator) -> dict[str, tuple[float, float]]:
        """The box actually sampled, checked against the grid (physical units)."""
        names = [n for n in interpolator.label_names
                 if interpolator.bounds[n][1] > interpolator.bounds[n][0]]
        default = GIANT_BOX if self.box is None and self.grid == "default" else {}
        wanted = dict(default if self.box is None else self.box)
        unknown = set(wanted) - set(names)
        if unknown:
            raise ModelError(f"box names label(s) {sorted(unknown)} that are not axes of the grid "
                             f"{self.grid}; its labels are {names}")
        box = {}
        for name in names:
            glo, ghi = interpolator.bounds[name]
            lo, hi = wanted.get(name, (glo, ghi))
            if not (glo <= lo < hi <= ghi):
                raise ModelError(f"box[{name!r}] = ({lo}, {hi}) must satisfy lo < hi inside the "
                                 f"grid range ({glo}, {ghi})")
            box[name] = (float(lo), float(hi))
        return box

    def build(self, interpolator=None, progress: bool = False) -> SpectraSet:
        """The noisy spectra with their labels (wavelengths in the grid's medium, Å)."""
        import torch
        from tqdm.auto import tqdm

        from ..grids.interpolate import GridInterpolator

        if self.n < 1 or not 0 < self.snr[0] <= self.snr[1]:
            raise ModelError(f"need n >= 1 and 0 < snr_min <= snr_max, got n={self.n}, "
                             f"snr={self.snr}")
        interp = interpolator or GridInterpolator(grid_path(self.grid))
        box = self.label_box(interp)
        names = tuple(box)
        rng = np.random.default_rng(self.seed)
        lo = np.array([box[n][0] for n in names])
        hi = np.array([box[n][1] for n in names])
        labels = lo + (hi - lo) * rng.uniform(size=(self.n, len(names)))
        full = np.tile([interp.bounds[n][0] for n in interp.label_names], (self.n, 1))
        for k, n in enumerate(names):
            full[:, interp.label_names.index(n)] = labels[:, k]
        if self.resolution is None:
            wave = interp.wavelength.astype(float)
        else:
            wave = instrument_wavelength(interp.wavelength, self.resolution, self.sampling,
                                         self.margin)
        clean = np.empty((self.n, wave.size))
        chunk = 100
        for s in tqdm(range(0, self.n, chunk), desc="grid spectra", disable=not progress,
                      leave=False):
            with torch.no_grad():
                native = interp.predict(torch.as_tensor(full[s:s + chunk])).double().numpy()
            clean[s:s + chunk] = native if self.resolution is None else degrade(
                interp.wavelength, native, interp.velocity_step, self.resolution, wave)
        snr = rng.uniform(self.snr[0], self.snr[1], self.n)
        sigma = np.sqrt(np.clip(clean, 0.05, None)) / snr[:, None]
        flux = clean + sigma * rng.normal(size=clean.shape)
        mask = np.zeros(clean.shape, dtype=bool)
        return SpectraSet(names, labels, flux, 1.0 / sigma**2, mask, snr, wave)


def train_on_grid(spec: GridDatasetSpec, *, order: int = 2, regularization: float = 0.0,
                  n_calibration: int = 300, progress: bool = False,
                  interpolator=None) -> CannonModel:
    """Train a Cannon on ``spec``'s spectra; the spec goes into ``model.provenance_``.

    n_calibration: held-out spectra (seed + 2; ``cannon test`` uses seed + 1) on which the label
    uncertainties are calibrated (:meth:`CannonModel.calibrate_uncertainties`); 0: formal errors.
    """
    from ..grids.interpolate import GridInterpolator

    interpolator = interpolator or GridInterpolator(grid_path(spec.grid))
    train = spec.build(interpolator, progress=progress)
    model = CannonModel(train.label_names, order=order, regularization=regularization,
                        progress=progress, medium=interpolator.medium)
    model.fit(train.labels, train.flux, train.ivar, train.wavelength)
    stored = spec.to_dict()
    if spec.grid != "default":
        stored["grid"] = str(Path(spec.grid).resolve())
    model.provenance_["training_set"] = stored
    if n_calibration > 0:
        cal = spec.replace(n=n_calibration, seed=spec.seed + 2).build(interpolator)
        model.calibrate_uncertainties(cal.flux, cal.ivar, cal.labels)
    return model


def training_spec(model: CannonModel) -> GridDatasetSpec:
    spec = model.provenance_.get("training_set")
    if not spec or spec.get("kind") != "grid":
        raise ModelError("this model was not trained with `photosphere cannon train --grid`, so "
                         "its grid spectra cannot be rebuilt")
    return GridDatasetSpec.from_dict(spec)


def validation_spec(model: CannonModel, n: int = 300, seed: int | None = None
                    ) -> GridDatasetSpec:
    """Held-out spectra: the training recipe with another seed (training seed + 1 by default)."""
    spec = training_spec(model)
    return spec.replace(n=n, seed=spec.seed + 1 if seed is None else seed)
