"""Priors on labels: uniform within bounds, Gaussian, and an isochrone prior from MIST.

A prior is any object with ``names`` and ``log_prior(values) -> (...,) array``, where ``values``
maps each name to an array of the batch shape. Priors add: :func:`log_prior_sum`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import DependencyError, FitError


class Prior(Protocol):
    names: tuple[str, ...]

    def log_prior(self, values: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Uniform:
    """Flat inside ``bounds`` ``{name: (low, high)}``, -inf outside (normalised)."""

    bounds: Mapping[str, tuple[float, float]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    def log_prior(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        out = 0.0
        for n, (lo, hi) in self.bounds.items():
            v = np.asarray(values[n], float)
            out = out + np.where((v >= lo) & (v <= hi), -math.log(hi - lo), -np.inf)
        return np.asarray(out, float)


#: Labels that cannot be negative (km/s); a prior centred below 0 is a mistake.
NONNEGATIVE = ("vsini", "vmic", "vmac")


@dataclass(frozen=True)
class Gaussian:
    """Normal prior ``N(mean, sigma²)`` on one label (e.g. log g from asteroseismology)."""

    name: str
    mean: float
    sigma: float

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise FitError(f"Gaussian prior on {self.name}: sigma={self.sigma} must be a finite "
                           "number > 0")
        if not math.isfinite(self.mean):
            raise FitError(f"Gaussian prior on {self.name}: mean={self.mean} must be finite")
        if self.name in NONNEGATIVE and self.mean < 0:
            raise FitError(f"Gaussian prior on {self.name}: mean={self.mean} is negative, but "
                           f"{self.name} >= 0; give a mean >= 0")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def log_prior(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        z = (np.asarray(values[self.name], float) - self.mean) / self.sigma
        return -0.5 * z ** 2 - math.log(self.sigma * math.sqrt(2 * math.pi))


def kroupa_imf(mass: np.ndarray) -> np.ndarray:
    """Kroupa (2001) initial mass function ξ(m) ∝ dN/dm (unnormalised), mass in M☉."""
    m = np.asarray(mass, float)
    return np.where(m < 0.08, (m / 0.08) ** -0.3,
                    np.where(m < 0.5, (m / 0.08) ** -1.3, (0.5 / 0.08) ** -1.3 * (m / 0.5) ** -2.3))


@dataclass(frozen=True)
class IsochronePrior:
    """Density of stars in (Teff, log g) at each [Fe/H], from MIST v2.5 isochrones (v/vcrit=0.4,
    the ``lachesis-grids`` package): a Kroupa IMF along each isochrone, ages uniform in linear age
    between ``age_min_gyr`` and ``age_max_gyr``, histogrammed (``teff_step`` K × ``logg_step``
    dex), smoothed by ``smooth`` bins and floored at ``floor`` × the peak, so stars off the
    isochrones are disfavoured, not forbidden. [Fe/H] is interpolated between the MIST nodes.

    names: the label names for Teff, log g and [Fe/H] in the fit.
    """

    names: tuple[str, ...] = ("teff", "logg", "feh")
    age_min_gyr: float = 0.1
    age_max_gyr: float = 13.8
    teff_step: float = 50.0
    logg_step: float = 0.05
    smooth: float = 2.0
    floor: float = 1e-8
    _table: dict = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def grid_file():
        """Path of the MIST HDF5 file shipped by ``lachesis-grids``."""
        try:
            import lachesis_grids
        except ImportError:
            raise DependencyError("the isochrone prior needs the lachesis-grids package: "
                                  "pip install lachesis-grids==0.0.9") from None
        return lachesis_grids.grid_path("mist_v2.5_vvcrit0.4.h5")

    def _build(self) -> dict:
        import h5py
        from scipy.ndimage import gaussian_filter

        teff_edges = np.arange(2500.0, 12000.0 + self.teff_step, self.teff_step)
        logg_edges = np.arange(-0.5, 6.0 + self.logg_step, self.logg_step)
        with h5py.File(self.grid_file(), "r") as f:
            feh_nodes = f["feh_values"][:]
            log_age = f["age_values"][:]
            # sparse_v1 storage: rows of isochrone k = (feh i, age j) follow one another;
            # "offsets" is the first EEP of each, "lengths" its number of EEPs
            lengths = f["lengths"][:]
            columns = [c.decode() if isinstance(c, bytes) else str(c)
                       for c in f.attrs["columns"]]
            values = f["values"][:]
        i_mass, i_teff, i_logg = (columns.index(c) for c in ("initial_mass", "log_Teff", "log_g"))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if int(lengths.sum()) != len(values):
            raise FitError(f"unexpected MIST file layout in {self.grid_file()}")
        age_gyr = 10 ** (log_age - 9)
        keep = (age_gyr >= self.age_min_gyr) & (age_gyr <= self.age_max_gyr)
        if not keep.any():
            raise FitError(f"no MIST isochrone between {self.age_min_gyr} and "
                           f"{self.age_max_gyr} Gyr")
        age_weight = np.where(keep, np.gradient(age_gyr), 0.0)
        log_density = np.empty((len(feh_nodes), len(teff_edges) - 1, len(logg_edges) - 1))
        for i in range(len(feh_nodes)):
            hist = np.zeros(log_density.shape[1:])
            for j in np.flatnonzero(keep):
                k = i * len(log_age) + j
                rows = values[starts[k]:starts[k] + lengths[k]].astype(float)
                rows = rows[np.all(np.isfinite(rows[:, [i_mass, i_teff, i_logg]]), axis=1)]
                if len(rows) < 2:
                    continue
                mass = rows[:, i_mass].astype(float)
                dn = kroupa_imf(mass) * np.abs(np.gradient(mass))
                h, _, _ = np.histogram2d(10 ** rows[:, i_teff].astype(float),
                                         rows[:, i_logg].astype(float),
                                         bins=(teff_edges, logg_edges), weights=dn)
                hist += age_weight[j] * h
            hist = gaussian_filter(hist, self.smooth)
            hist = hist / (hist.sum() * self.teff_step * self.logg_step)
            log_density[i] = np.log(np.maximum(hist, self.floor * hist.max()))
        return {"feh": feh_nodes, "teff": 0.5 * (teff_edges[1:] + teff_edges[:-1]),
                "logg": 0.5 * (logg_edges[1:] + logg_edges[:-1]), "log_density": log_density}

    def table(self) -> dict:
        """The gridded log-density: built on first use (seconds) and cached in the user cache
        directory (``$PHOTOSPHERE_CACHE``)."""
        if not self._table:
            from .._files import atomic_path, cache_dir

            key = (f"mist_v2.5_{self.age_min_gyr}_{self.age_max_gyr}_{self.teff_step}_"
                   f"{self.logg_step}_{self.smooth}_{self.floor}.npz")
            path = cache_dir("priors") / key
            if path.exists():
                with np.load(path) as cached:
                    self._table.update({k: cached[k] for k in cached.files})
            else:
                self._table.update(self._build())
                with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **self._table)
        return self._table

    def log_prior(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        from scipy.interpolate import RegularGridInterpolator

        t = self.table()
        if "interp" not in t:
            t["interp"] = RegularGridInterpolator((t["feh"], t["teff"], t["logg"]),
                                                  t["log_density"], bounds_error=False,
                                                  fill_value=None)
        teff, logg, feh = (np.asarray(values[n], float) for n in self.names)
        shape = np.broadcast_shapes(teff.shape, logg.shape, feh.shape)
        pts = np.stack([np.clip(np.broadcast_to(feh, shape), t["feh"][0], t["feh"][-1]),
                        np.clip(np.broadcast_to(teff, shape), t["teff"][0], t["teff"][-1]),
                        np.clip(np.broadcast_to(logg, shape), t["logg"][0], t["logg"][-1])],
                       -1)
        return np.asarray(t["interp"](pts.reshape(-1, 3)).reshape(shape), float)


def log_prior_sum(priors: Sequence[Prior], values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sum of the priors' log densities; names missing from ``values`` are an error."""
    total: np.ndarray | float = 0.0
    for prior in priors:
        missing = [n for n in prior.names if n not in values]
        if missing:
            raise FitError(f"{type(prior).__name__} prior on {missing}, which are not parameters "
                           f"of this fit ({sorted(values)})")
        total = total + prior.log_prior(values)
    return np.asarray(total, float)
