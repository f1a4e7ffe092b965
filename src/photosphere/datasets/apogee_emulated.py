"""Realistic APOGEE H-band training/test sets from a trained spectral emulator (The Payne).

The emulator (Ting et al. 2019; file ``apogee/payne/NN_normalized_spectra.npz`` in the shared
data) is one small network per pixel: flux = w1·σ(w0·x + b0) + b1, with the five labels
(Teff, log g, [Fe/H], [α/Fe], vmacro) scaled to x ∈ [-0.5, 0.5] by ``x_min``/``x_max``. It gives
continuum-normalised Kurucz spectra on the 7214-pixel ASPCAP wavelength grid (vacuum Å) inside
its valid box: Teff 4200–7000 K, log g 4.0–5.0, [Fe/H] -0.8..0.4, [α/Fe] -0.3..0.5,
vmacro 0–45 km/s. :func:`make_apogee_like` adds APOGEE-like noise (per-star S/N, photon-noise
shape σ_λ ∝ √f_λ) and bad-pixel masks (isolated pixels and short runs, as the APOGEE pixel mask
flags them), with ivar = 0 on bad pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingFileError, OutOfGridError

LABEL_NAMES = ("teff", "logg", "feh", "alpha", "vmacro")
#: the emulator's valid label box (SOURCES.md), physical units
VALID_BOX = {"teff": (4200.0, 7000.0), "logg": (4.0, 5.0), "feh": (-0.8, 0.4),
             "alpha": (-0.3, 0.5), "vmacro": (0.0, 45.0)}
#: the box used for the Cannon benchmark: the Astro 128 lab's Teff ≤ 5700 K cut, moderate vmacro
CANNON_BOX = {"teff": (4200.0, 5700.0), "logg": (4.0, 5.0), "feh": (-0.8, 0.4),
              "alpha": (-0.2, 0.4), "vmacro": (0.0, 10.0)}
PAYNE_DIR = Path("apogee") / "payne"


def shared_data_dir() -> Path:
    """The shared real-data folder: ``$PHOTOSPHERE_SHARED_DATA``, else ``../shared/data`` beside
    the working directory or beside the source checkout. Raises MissingFileError if none exists."""
    env = os.environ.get("PHOTOSPHERE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared" / "data",
                   Path(__file__).resolve().parents[4] / "shared" / "data",
                   Path(__file__).resolve().parents[5] / "shared" / "data"]
    for path in candidates:
        if (path / PAYNE_DIR).is_dir():
            return path
    raise MissingFileError(
        "the shared data folder with apogee/payne/ was not found (looked in "
        f"{', '.join(str(c) for c in candidates)}); set PHOTOSPHERE_SHARED_DATA to the folder "
        "that holds apogee/payne/NN_normalized_spectra.npz")


def payne_file(name: str, data_dir: str | Path | None = None) -> Path:
    """Path of ``apogee/payne/<name>`` in ``data_dir`` (default :func:`shared_data_dir`)."""
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    path = root / PAYNE_DIR / name if (root / PAYNE_DIR).is_dir() else root / name
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; pass the shared data folder (the one "
                               "holding apogee/payne/) or set PHOTOSPHERE_SHARED_DATA")
    return path


def load_wavelength(data_dir: str | Path | None = None) -> np.ndarray:
    """(7214,) vacuum Å of the ASPCAP pixel grid."""
    return np.load(payne_file("apogee_wavelength.npz", data_dir))["wavelength"].astype(float)


def load_continuum_pixels(data_dir: str | Path | None = None) -> np.ndarray:
    """(7214,) bool: the 529 Cannon continuum pixels (DR13 continuum mask)."""
    return np.load(payne_file("cannon_cont_pixels_apogee.npz", data_dir))["pixels_cannon"]


def load_model_mismatch_mask(data_dir: str | Path | None = None) -> np.ndarray:
    """(7214,) bool, True where Kurucz models deviate > 2 % from the Sun/Arcturus (875 px)."""
    return np.load(payne_file("apogee_mask.npz", data_dir))["apogee_mask"].astype(bool)


class PayneEmulator:
    """The per-pixel network emulator; ``predict(labels (..., 5)) -> (..., 7214)`` normalised flux.

    Labels are physical (K, dex, dex, dex, km/s) in the order of :data:`LABEL_NAMES`.
    """

    label_names = LABEL_NAMES

    def __init__(self, w0: np.ndarray, b0: np.ndarray, w1: np.ndarray, b1: np.ndarray,
                 x_min: np.ndarray, x_max: np.ndarray, wavelength: np.ndarray):
        self.w0, self.b0, self.w1, self.b1 = w0, b0, w1, b1    # (L,H,K) (L,H) (L,H) (L,)
        self.x_min, self.x_max = np.asarray(x_min, float), np.asarray(x_max, float)
        self.wavelength = wavelength

    @classmethod
    def load(cls, data_dir: str | Path | None = None) -> PayneEmulator:
        d = np.load(payne_file("NN_normalized_spectra.npz", data_dir))
        return cls(d["w_array_0"].astype(float), d["b_array_0"].astype(float),
                   d["w_array_1"].astype(float), d["b_array_1"].astype(float),
                   d["x_min"], d["x_max"], load_wavelength(data_dir))

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(VALID_BOX)

    def predict(self, labels: np.ndarray, chunk: int = 128) -> np.ndarray:
        """(..., 5) physical labels -> (..., n_pix) flux; raises OutOfGridError outside the box."""
        labels = np.asarray(labels, dtype=float)
        flat = labels.reshape(-1, labels.shape[-1])
        lo = np.array([VALID_BOX[n][0] for n in LABEL_NAMES])
        hi = np.array([VALID_BOX[n][1] for n in LABEL_NAMES])
        outside = np.any((flat < lo - 1e-9) | (flat > hi + 1e-9), axis=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise OutOfGridError(
                f"labels {dict(zip(LABEL_NAMES, flat[i].tolist(), strict=True))} lie outside the "
                f"emulator's valid box {VALID_BOX}; choose labels inside it")
        x = (flat - self.x_min) / (self.x_max - self.x_min) - 0.5
        n_pix, n_hidden, n_labels = self.w0.shape
        w0 = self.w0.reshape(n_pix * n_hidden, n_labels)
        out = np.empty((flat.shape[0], n_pix))
        for s in range(0, flat.shape[0], chunk):
            z = (x[s:s + chunk] @ w0.T).reshape(-1, n_pix, n_hidden) + self.b0
            out[s:s + chunk] = np.einsum("nlh,lh->nl", 1.0 / (1.0 + np.exp(-z)), self.w1) + self.b1
        return out.reshape(*labels.shape[:-1], n_pix)


@dataclass(frozen=True)
class SpectraSet:
    """n spectra with known labels on one wavelength grid.

    labels: (n, k) physical; flux, ivar: (n, n_pix) (ivar = 0 on bad pixels); mask: (n, n_pix)
    bool, True = bad pixel; snr: (n,) per-star S/N; wavelength: (n_pix,) Å (vacuum for APOGEE
    sets; the grid's medium for :mod:`photosphere.workflows.cannon_grid` sets).
    """

    label_names: tuple[str, ...]
    labels: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    snr: np.ndarray
    wavelength: np.ndarray

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index) -> SpectraSet:
        return SpectraSet(self.label_names, self.labels[index], self.flux[index],
                          self.ivar[index], self.mask[index], self.snr[index], self.wavelength)


def sample_labels(n: int, rng: np.random.Generator,
                  box: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(n, 5) labels drawn uniformly in ``box`` (default :data:`CANNON_BOX`), checked against the
    emulator's valid box."""
    box = dict(CANNON_BOX if box is None else box)
    for name, (lo, hi) in box.items():
        vlo, vhi = VALID_BOX[name]
        if lo < vlo or hi > vhi or not lo < hi:
            raise OutOfGridError(f"box[{name!r}] = ({lo}, {hi}) must lie inside the emulator's "
                                 f"valid range ({vlo}, {vhi}) with lo < hi")
    lo = np.array([box[n][0] for n in LABEL_NAMES])
    hi = np.array([box[n][1] for n in LABEL_NAMES])
    return lo + (hi - lo) * rng.uniform(size=(n, len(LABEL_NAMES)))


def apogee_bad_pixels(n: int, n_pix: int, rng: np.random.Generator,
                      isolated_fraction: float = 0.005, runs_per_spectrum: float = 8.0,
                      run_length: tuple[int, int] = (3, 12)) -> np.ndarray:
    """(n, n_pix) bool bad-pixel masks: isolated flagged pixels plus short runs (sky lines,
    persistence), as in the APOGEE pixel mask (bits 0–7, 12)."""
    mask = rng.uniform(size=(n, n_pix)) < isolated_fraction
    n_runs = rng.poisson(runs_per_spectrum, n)
    for i in range(n):
        starts = rng.integers(0, n_pix, n_runs[i])
        lengths = rng.integers(run_length[0], run_length[1] + 1, n_runs[i])
        for s, length in zip(starts, lengths, strict=True):
            mask[i, s:s + length] = True
    return mask


def make_apogee_like(n: int, *, seed: int | np.random.Generator = 0,
                     snr: tuple[float, float] = (50.0, 200.0),
                     box: dict[str, tuple[float, float]] | None = None,
                     emulator: PayneEmulator | None = None,
                     data_dir: str | Path | None = None, bad_pixels: bool = True) -> SpectraSet:
    """n noisy APOGEE-like spectra with labels drawn uniformly in ``box``.

    S/N per star is uniform in ``snr``; σ_λ = √f_λ / (S/N) (photon noise of a normalised
    spectrum); masked pixels get ivar = 0 and flux 1.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    emulator = emulator or PayneEmulator.load(data_dir)
    labels = sample_labels(n, rng, box)
    clean = emulator.predict(labels)
    star_snr = rng.uniform(snr[0], snr[1], n)
    sigma = np.sqrt(np.clip(clean, 0.05, None)) / star_snr[:, None]
    flux = clean + sigma * rng.normal(size=clean.shape)
    mask = (apogee_bad_pixels(n, clean.shape[1], rng) if bad_pixels
            else np.zeros(clean.shape, dtype=bool))
    ivar = np.where(mask, 0.0, 1.0 / sigma**2)
    flux = np.where(mask, 1.0, flux)
    return SpectraSet(LABEL_NAMES, labels, flux, ivar, mask, star_snr, emulator.wavelength)
