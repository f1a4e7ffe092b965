"""MIST isochrones (Choi et al. 2016; v2.5, v/vcrit = 0.4) from the registry package
``lachesis-grids`` (file ``mist_v2.5_vvcrit0.4.h5``: 15 [Fe/H] values × 107 log-age nodes
5.0–10.3, EEP tracks stored back to back).

:func:`mist_isochrone` returns Teff and log g along one isochrone, interpolated linearly in log age
between the two nearest nodes at equal EEP; [Fe/H] must be one of the grid values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DependencyError, OutOfGridError

MIST_FILE = "mist_v2.5_vvcrit0.4.h5"


@dataclass(frozen=True)
class Isochrone:
    """One isochrone: eep, teff (K), logg (cgs), initial_mass (M☉), phase (MIST code), all (n,)."""

    age_gyr: float
    feh: float
    eep: np.ndarray
    teff: np.ndarray
    logg: np.ndarray
    initial_mass: np.ndarray
    phase: np.ndarray


def mist_path() -> Path:
    try:
        from lachesis_grids import grid_path
    except ImportError as exc:
        raise DependencyError("MIST isochrones need the package lachesis-grids: "
                              "pip install lachesis-grids==0.0.9") from exc
    return grid_path(MIST_FILE)


def _block(f, i_feh: int, i_age: int, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    k = i_feh * len(f["age_values"]) + i_age
    rows = f["values"][starts[k]:starts[k] + lengths[k]]
    return rows[np.isfinite(rows[:, 1])]


def mist_isochrone(age_gyr: float, feh: float, path: str | Path | None = None) -> Isochrone:
    """The MIST isochrone of ``age_gyr`` (Gyr) at grid metallicity ``feh`` (dex)."""
    import h5py

    with h5py.File(path or mist_path(), "r") as f:
        cols = [c.decode() if isinstance(c, bytes) else str(c) for c in f.attrs["columns"]]
        fehs = f["feh_values"][()]
        ages = f["age_values"][()]
        lengths = f["lengths"][()]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        match = np.flatnonzero(np.isclose(fehs, feh, atol=1e-6))
        if match.size == 0:
            raise OutOfGridError(f"[Fe/H] = {feh} is not a MIST grid value; choose one of "
                                 f"{fehs.tolist()}")
        log_age = np.log10(age_gyr * 1e9)
        if not ages[0] <= log_age <= ages[-1]:
            raise OutOfGridError(f"age {age_gyr} Gyr (log age {log_age:.2f}) is outside the MIST "
                                 f"grid ({ages[0]}-{ages[-1]} in log years)")
        hi = int(np.clip(np.searchsorted(ages, log_age), 1, len(ages) - 1))
        lo = hi - 1
        frac = (log_age - ages[lo]) / (ages[hi] - ages[lo])
        a = _block(f, int(match[0]), lo, starts, lengths)
        b = _block(f, int(match[0]), hi, starts, lengths)
    eep_col = cols.index("eep")
    common, ia, ib = np.intersect1d(a[:, eep_col], b[:, eep_col], return_indices=True)
    rows = (1 - frac) * a[ia] + frac * b[ib]

    def col(name):
        return rows[:, cols.index(name)].astype(float)

    return Isochrone(age_gyr, float(feh), common, col("Teff"), col("log_g"), col("initial_mass"),
                     np.round(a[ia, cols.index("phase")]).astype(int))
