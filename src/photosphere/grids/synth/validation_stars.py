"""The stars the synthesis is validated on, the window sets, and how their spectra are read.

* **Sun**: the UVES solar atlas ``optical/uves_sun_norm.txt`` of the shared data (normalised,
  air, rest frame; 4835-6723 Å with gaps at 5760-5828 and 6066-6074 Å), IAU 2015 nominal labels,
  vsini 1.9 km/s.
* **Procyon** (F5 IV-V): the HARPS spectrum of the Gaia benchmark-star library
  ``stars/hires/harps_procyon.fits`` (not normalised, air, rest frame, 4800-6800 Å, no flux
  between the two CCDs at 5305-5338 Å). Teff, log g, [Fe/H] from ``stars/labels.csv`` (Heiter
  et al. 2015, A&A 582, A49; Jofré et al. 2014, A&A 564, A133); vmic 1.8 km/s and vsini
  2.8 km/s, the values the Gaia benchmark-star analyses adopt for Procyon (Jofré et al. 2014
  and the library's later papers; not re-checked against the published tables here, which the
  session's search did not reach); [α/Fe] 0, as for a near-solar disc star.

A window set bundles the windows (air Å) with the synthesis physics they are meant for:
``optical`` is the optical training set's seven windows with its physics (MARCS where it
exists, molecules), ``embedded`` the 5050-5350 Å of the embedded grid (ATLAS9, atoms only), the
range this check used before the optical model existed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BenchmarkError, FileFormatError, MissingFileError
from ..training_set import OPTICAL_WINDOWS

#: pixels a window needs in the observation to be compared
MIN_PIXELS = 100


@dataclass(frozen=True)
class WindowSet:
    """Windows (air Å, increasing, not overlapping) and the synthesis physics they go with:
    ``atmosphere`` ("atlas9", "marcs", "auto") and ``molecules``."""

    name: str
    windows: tuple[tuple[float, float], ...]
    atmosphere: str
    molecules: bool


WINDOW_SETS = {
    "optical": WindowSet("optical", OPTICAL_WINDOWS, "auto", True),
    "embedded": WindowSet("embedded", ((5050.0, 5350.0),), "atlas9", False),
}


def window_set(name: str) -> WindowSet:
    """The window set called ``name`` (see :data:`WINDOW_SETS`)."""
    if name not in WINDOW_SETS:
        raise BenchmarkError(f"no window set {name!r}; choose from {', '.join(WINDOW_SETS)}")
    return WINDOW_SETS[name]


@dataclass(frozen=True)
class ValidationStar:
    """A reference star: its spectrum and the labels it is synthesised at.

    labels: teff (K), logg (dex, cgs), feh, alpha (dex), vmic (km/s); vsini: km/s, fixed in the
    fit; spectrum: the observed file; normalised: whether the file is continuum-normalised (a
    Legendre continuum of degree 2 per window then suffices; otherwise a 50 Å-knot spline);
    label_source: where the labels come from, in words.
    """

    name: str
    spectrum: Path
    labels: dict[str, float]
    vsini: float
    normalised: bool
    label_source: str


SUN_LABELS = {"teff": 5772.0, "logg": 4.44, "feh": 0.0, "alpha": 0.0, "vmic": 1.0}
SUN_VSINI = 1.9  # km/s
UVES_SUN = "optical/uves_sun_norm.txt"
#: Procyon's microturbulence and rotation (km/s), which labels.csv does not carry (module doc).
PROCYON_VMIC, PROCYON_VSINI = 1.8, 2.8
STARS = ("sun", "procyon")


def default_data_dir() -> Path:
    """``$PHOTOSPHERE_SHARED_DATA``, else ``../shared/data`` from the working directory."""
    return Path(os.environ.get("PHOTOSPHERE_SHARED_DATA", os.path.join("..", "shared", "data")))


def validation_star(name: str, data_dir: str | os.PathLike | None = None) -> ValidationStar:
    """The star ``name`` (one of :data:`STARS`, any case) with its spectrum under ``data_dir``
    (default :func:`default_data_dir`). Procyon's Teff, log g and [Fe/H] are read from
    ``stars/labels.csv`` there."""
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    key = name.strip().lower()
    if key == "sun":
        return ValidationStar("Sun", data / UVES_SUN, dict(SUN_LABELS), SUN_VSINI, True,
                              "IAU 2015 nominal Sun; vmic 1.0 km/s")
    if key == "procyon":
        from ...datasets.reference_stars import read_stars, select

        row = select(read_stars(data / "stars" / "labels.csv"), ["procyon"])[0]
        labels = {k: float(v) for k, (v, _) in row.reference.items()}
        return ValidationStar(
            "Procyon", row.path, {**labels, "alpha": 0.0, "vmic": PROCYON_VMIC},
            PROCYON_VSINI, False, f"{row.label_source}; vmic {PROCYON_VMIC} and vsini "
                                  f"{PROCYON_VSINI} km/s (Gaia benchmark-star analyses)")
    raise BenchmarkError(f"no validation star {name!r}; choose from {', '.join(STARS)}")


def read_uves_sun(path: str | os.PathLike,
                  windows: tuple[tuple[float, float], ...] = WINDOW_SETS["embedded"].windows
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The UVES solar atlas (two columns: λ Å air, normalised flux) inside ``windows`` (air Å):
    ``(wavelength (n,) Å, flux (n,))``, repeated wavelengths averaged."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"UVES solar spectrum {path} does not exist; pass --observed "
                               f"pointing at {UVES_SUN} of the shared data folder")
    data = np.loadtxt(path, ndmin=2)
    if data.shape[1] < 2:
        raise FileFormatError(f"{path}: expected two columns (wavelength, flux)")
    inside = np.zeros(len(data), bool)
    for lo, hi in windows:
        inside |= (data[:, 0] >= lo) & (data[:, 0] <= hi)
    keep = inside & np.isfinite(data[:, 1])
    if keep.sum() < MIN_PIXELS:
        raise FileFormatError(f"{path}: fewer than {MIN_PIXELS} pixels within {windows} Å")
    # the atlas repeats a few wavelengths (joins of its pieces): average the repeats
    wave, inverse = np.unique(data[keep, 0], return_inverse=True)
    flux = np.bincount(inverse, weights=data[keep, 1]) / np.bincount(inverse)
    return wave, flux


def read_spectrum(star: ValidationStar, path: str | os.PathLike | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The star's observed spectrum, ``(wavelength (n,) Å air, flux (n,))``, increasing, with
    masked, non-finite and non-positive pixels (detector gaps) left out. ``path`` overrides
    ``star.spectrum``. The Sun's UVES atlas is read whole; other files by
    :func:`photosphere.io.read` (vacuum wavelengths converted to air)."""
    path = Path(path) if path is not None else star.spectrum
    if not path.exists():
        raise MissingFileError(f"{star.name}: spectrum {path} does not exist; pass --observed "
                               "or point PHOTOSPHERE_SHARED_DATA at the shared data folder")
    if star.name == "Sun" and path.suffix == ".txt":
        return read_uves_sun(path, ((0.0, np.inf),))
    from ...io import read
    from ...ops.airvac import vacuum_to_air

    spectrum = read(path)
    if not hasattr(spectrum, "mask") or np.ndim(spectrum.flux) != 1:
        raise FileFormatError(f"{path}: expected a one-dimensional (merged) spectrum")
    wave = np.asarray(spectrum.wavelength, float)
    flux = np.asarray(spectrum.flux, float)
    if spectrum.medium == "vacuum":
        wave = np.asarray(vacuum_to_air(wave), float)
    keep = ~np.asarray(spectrum.mask, bool) & np.isfinite(flux) & (flux > 0)
    order = np.argsort(wave[keep])
    return wave[keep][order], flux[keep][order]


def split_windows(wave: np.ndarray, flux: np.ndarray, windows: tuple[tuple[float, float], ...]
                  ) -> tuple[list[tuple[float, float]], list[tuple[np.ndarray, np.ndarray]],
                             list[tuple[float, float]]]:
    """The observed pixels of each window: ``(covered windows, [(wavelength, flux)] per covered
    window, windows with fewer than MIN_PIXELS pixels)``."""
    covered, pieces, uncovered = [], [], []
    for lo, hi in windows:
        inside = (wave >= lo) & (wave <= hi)
        if inside.sum() < MIN_PIXELS:
            uncovered.append((lo, hi))
            continue
        covered.append((lo, hi))
        pieces.append((wave[inside], flux[inside]))
    return covered, pieces, uncovered
