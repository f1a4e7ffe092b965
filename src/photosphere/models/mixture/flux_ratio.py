"""The specific-flux ratio of two components: how much each contributes at every pixel.

For two continuum-normalised spectra ``n₁, n₂`` (``(..., n_pix)``) and continua ``C₁, C₂`` the
mixture ``F = (1 − c) F₁ + c F₂`` normalised by its own continuum is exactly::

    F / C = [(1 − c) n₁ + c r n₂] / [(1 − c) + c r],      r(λ) = C₂(λ) / C₁(λ)

so a method for the flux ratio is a way to get ``r`` at every model pixel. Three are provided
(issue 8; Starfish's "mixture model mode" defines ``q_m = f̄₂ / f̄₁`` per order m):

``"absolute"`` (method 1)
    Mix absolute fluxes: ``r = C₂ / C₁`` from the grid's interpolated continua. Nothing is
    approximated beyond the grid interpolation itself; the reference for the others.
``"blackbody"`` (method 2)
    ``r = B_λ(Teff₂) / B_λ(Teff₁)`` per pixel. Ignores line blanketing and the H⁻ opacity's
    departure from a black body; fails worst where molecular bands dominate (not in this grid).
``"mean_flux"`` (method 3)
    ``q_m = F̄₂ / F̄₁``, the ratio of the mean *absolute* flux per chunk m (stored per grid node),
    applied to the chunk-mean-normalised shapes ``n_i / ⟨n_i⟩_m`` as in Starfish; equivalently
    ``r_m = q_m ⟨n₁⟩_m / ⟨n₂⟩_m``, interpolated linearly in ln λ between chunk centres so the
    mixture has no steps at chunk edges. The table of ``q_m`` over pairs of nodes is separable,
    ``ln q_m(θ₁, θ₂) = ln F̄_m(θ₂) − ln F̄_m(θ₁)``, so one 3-D table of ``ln F̄_m`` per node
    suffices (not a 6-D table of pairs). It is interpolated *smoothly*: the black-body part
    ``ln B̄_m(Teff)`` (chunk-mean Planck function) is analytic, and only the small, slowly varying
    residual ``ln F̄_m − ln B̄_m`` is interpolated multilinearly between nodes. A plain linear
    interpolation of ``F̄`` (or of ``q`` over pairs) clings to the nodes: the Wien-like Teff
    dependence is convex, so it overestimates the flux between nodes by ~1-2 % at 4000 K.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ModelError
from ...grids.store import GridStore

#: the three ways to get the flux ratio; "absolute" is the default (see docs/mixtures.md)
RATIO_METHODS = ("absolute", "blackbody", "mean_flux")

#: second radiation constant h c / k in Å K
C2_ANGSTROM_K = 1.438776877e8


def planck_ratio(wavelength: torch.Tensor, teff_1: torch.Tensor, teff_2: torch.Tensor
                 ) -> torch.Tensor:
    """``B_λ(teff_2) / B_λ(teff_1)``: wavelength ``(n_pix,)`` Å; teff ``(...)`` K ->
    ``(..., n_pix)``; differentiable in both temperatures."""
    x1 = C2_ANGSTROM_K / (wavelength * teff_1[..., None])
    x2 = C2_ANGSTROM_K / (wavelength * teff_2[..., None])
    return torch.expm1(x1) / torch.expm1(x2)


def log_planck(wavelength: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """``ln B_λ(T)`` up to a constant (the λ⁻⁵ term kept): ``(..., n_pix)`` for teff ``(...)``."""
    x = C2_ANGSTROM_K / (np.asarray(wavelength, float) * np.asarray(teff, float)[..., None])
    return -5.0 * np.log(wavelength) - np.log(np.expm1(x))


def check_ratio_method(method: str) -> str:
    if method not in RATIO_METHODS:
        raise ModelError(f"flux-ratio method {method!r} is unknown; choose one of {RATIO_METHODS}")
    return method


class ChunkAverager:
    """Chunk means and their smooth expansion back to the pixels of a log-uniform grid.

    wavelength: ``(n_pix,)`` Å; chunk_edges: ``(n_chunks+1,)`` Å (the grid's ``chunk_edges``).
    ``mean(x (..., n_pix)) -> (..., n_chunks)`` is the plain mean over each chunk's pixels (as
    the grid's stored ``mean_flux``); ``expand(y (..., n_chunks)) -> (..., n_pix)`` interpolates
    linearly in ln λ between chunk centres (constant beyond the outer centres).
    """

    def __init__(self, wavelength: np.ndarray, chunk_edges: np.ndarray,
                 dtype: torch.dtype = torch.float64):
        wavelength = np.asarray(wavelength, float)
        edges = np.asarray(chunk_edges, float)
        n_chunks = len(edges) - 1
        which = np.clip(np.searchsorted(edges, wavelength, side="right") - 1, 0, n_chunks - 1)
        counts = np.bincount(which, minlength=n_chunks).astype(float)
        if np.any(counts == 0):
            raise ModelError(f"chunk edges {edges} leave a chunk without model pixels")
        average = np.zeros((n_chunks, wavelength.size))
        average[which, np.arange(wavelength.size)] = 1.0 / counts[which]
        self.n_chunks = n_chunks
        self.which = which
        self._average = torch.as_tensor(average.T, dtype=dtype)          # (n_pix, n_chunks)
        centres = np.array([np.log(wavelength[which == k]).mean() for k in range(n_chunks)])
        x = np.log(wavelength)
        expand = np.zeros((n_chunks, wavelength.size))
        if n_chunks == 1:
            expand[0] = 1.0
        else:
            k = np.clip(np.searchsorted(centres, x, side="right") - 1, 0, n_chunks - 2)
            a = np.clip((x - centres[k]) / (centres[k + 1] - centres[k]), 0.0, 1.0)
            expand[k, np.arange(x.size)] = 1.0 - a
            expand[k + 1, np.arange(x.size)] += a
        self._expand = torch.as_tensor(expand, dtype=dtype)              # (n_chunks, n_pix)
        self.centres = np.exp(centres)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self._average.to(x.dtype)

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self._expand.to(y.dtype)


class MeanFluxTable:
    """``ln F̄_m(θ)`` per chunk, smooth between grid nodes (method 3's table).

    interpolator: the component grid (a :class:`~photosphere.grids.interpolate.GridInterpolator`
    whose store has ``mean_flux``). The per-node table is ``ln F̄_m − ln B̄_m(Teff)`` (B̄_m: the
    Planck function averaged over chunk m's pixels); ``log_mean_flux(θ (..., n_labels))``
    returns ``(..., n_chunks)`` = that residual interpolated multilinearly (the grid's own cell
    locator, holes included) + ``ln B̄_m(Teff)`` evaluated analytically at θ.
    """

    def __init__(self, interpolator, averager: ChunkAverager):
        if "teff" not in interpolator.label_names:
            raise ModelError("the mean-flux ratio needs a grid with a teff axis")
        with GridStore.open(interpolator.path) as store:
            mean_flux = store.mean_flux_all()                            # (n_nodes, n_chunks)
            axes = [np.asarray(a, float) for a in store.axes.values()]
            present = store.present.ravel()
        self._teff_index = interpolator.label_names.index("teff")
        self.locator = interpolator.locator
        self.wavelength = np.asarray(interpolator.wavelength, float)
        self.averager = averager
        nodes_teff = np.meshgrid(*axes, indexing="ij")[self._teff_index].ravel()
        residual = np.zeros_like(mean_flux)
        ok = present & np.all(mean_flux > 0, axis=-1)
        residual[ok] = np.log(mean_flux[ok]) - self._log_planck_mean(nodes_teff[ok])
        self._residual = torch.as_tensor(residual, dtype=torch.float64)

    def _log_planck_mean(self, teff: np.ndarray) -> np.ndarray:
        """``ln B̄_m(T)`` (numpy, ``(n, n_chunks)``) for the table."""
        b = np.exp(log_planck(self.wavelength, teff) - log_planck(self.wavelength,
                                                                  np.array(5000.0)))
        return np.log(self.averager.mean(torch.as_tensor(b)).numpy())

    def log_planck_mean(self, teff: torch.Tensor) -> torch.Tensor:
        """``ln B̄_m(T)`` differentiable: teff ``(B,)`` -> ``(B, n_chunks)``."""
        wave = torch.as_tensor(self.wavelength, dtype=torch.float64)
        ref = C2_ANGSTROM_K / (wave * 5000.0)
        x = C2_ANGSTROM_K / (wave * teff[:, None])
        return torch.log(self.averager.mean(torch.expm1(ref) / torch.expm1(x)))

    def log_mean_flux(self, labels: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(labels, dtype=torch.float64)
        batch = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        idx, w = self.locator.locate(x)
        res = (w[..., None] * self._residual[idx]).sum(-2)
        out = res + self.log_planck_mean(x[:, self._teff_index])
        return out.reshape(*batch, out.shape[-1])


def mean_flux_ratio(table: MeanFluxTable, labels_1: torch.Tensor, labels_2: torch.Tensor
                    ) -> torch.Tensor:
    """``q_m = F̄_m(θ₂) / F̄_m(θ₁)``: ``(..., n_chunks)``."""
    return torch.exp(table.log_mean_flux(labels_2) - table.log_mean_flux(labels_1))


def mix_normalised(n_1: torch.Tensor, n_2: torch.Tensor, ratio: torch.Tensor,
                   fraction: torch.Tensor) -> torch.Tensor:
    """``[(1 − c) n₁ + c r n₂] / [(1 − c) + c r]``: the continuum-normalised mixture.

    n_1, n_2: ``(..., n_pix)`` normalised fluxes; ratio: ``(..., n_pix)`` continuum ratio
    ``C₂/C₁``; fraction: ``(...)`` solid-angle fraction c of component 2.
    """
    c = fraction[..., None]
    weight_2 = c * ratio
    return ((1.0 - c) * n_1 + weight_2 * n_2) / ((1.0 - c) + weight_2)


def light_fraction(ratio: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Fraction of the continuum light from component 2, ``c r / ((1 − c) + c r)``."""
    c = fraction[..., None] if ratio.ndim > fraction.ndim else fraction
    return c * ratio / ((1.0 - c) + c * ratio)


__all__ = ["RATIO_METHODS", "ChunkAverager", "MeanFluxTable", "check_ratio_method",
           "light_fraction", "log_planck", "mean_flux_ratio", "mix_normalised",
           "planck_ratio"]
