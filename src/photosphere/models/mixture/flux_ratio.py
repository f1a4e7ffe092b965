"""The specific-flux ratio of two components: how much each contributes at every pixel.

For two continuum-normalised spectra ``n₁, n₂`` (``(..., n_pix)``) and continua ``C₁, C₂`` the
mixture ``F = (1 − c) F₁ + c F₂`` normalised by its own continuum is exactly::

    F / C = [(1 − c) n₁ + c r n₂] / [(1 − c) + c r],      r(λ) = C₂(λ) / C₁(λ)

so a method for the flux ratio is a way to get ``r`` at every model pixel. Three are provided
(issue 8; Starfish's "mixture model mode" defines ``q_m = f̄₂ / f̄₁`` per order m):

``"absolute"`` (method 1, the default)
    Mix absolute fluxes: ``r = C₂ / C₁`` from the grid's continua, per pixel. Nothing is
    approximated beyond the grid interpolation itself; the reference for the others. The
    continua are interpolated smoothly between nodes (:class:`ContinuumTable`: ``ln C − ln B``
    multilinear), which tracks Turbospectrum at mid-cell temperatures several times better than
    the chord of the grid's linear interpolation (docs/mixtures.md); at nodes both are exact.
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

from collections.abc import Callable

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


class _PlanckResidualTable:
    """A per-node table of ``ln X`` (``(n_nodes, K)``, X > 0: a continuum, a chunk-mean flux)
    interpolated smoothly: ``ln X − ln P(Teff)`` multilinearly with the grid's own cell locator
    (holes included), ``ln P`` analytically at the requested Teff. ``log_planck(T (B,)) ->
    (B, K)``: the log of the Planck function sampled like X (at its wavelengths, or averaged over
    its chunks) over its value at 5000 K (any constant cancels). Exact at the nodes."""

    def __init__(self, interpolator, values: np.ndarray, present: np.ndarray,
                 log_planck: Callable[[torch.Tensor], torch.Tensor]):
        if "teff" not in interpolator.label_names:
            raise ModelError("a smooth flux table needs a grid with a teff axis")
        self._teff_index = interpolator.label_names.index("teff")
        self.locator = interpolator.locator
        self.log_planck = log_planck
        axes = [a.numpy() for a in interpolator.locator.axes]
        nodes_teff = np.meshgrid(*axes, indexing="ij")[self._teff_index].ravel()
        residual = np.zeros(values.shape, float)
        ok = present & np.all(values > 0, axis=-1)
        with torch.no_grad():
            planck = self.log_planck(torch.as_tensor(nodes_teff[ok], dtype=torch.float64))
        residual[ok] = np.log(values[ok]) - planck.numpy()
        self._residual = torch.as_tensor(residual, dtype=torch.float64)

    def log_value(self, labels: torch.Tensor) -> torch.Tensor:
        """labels ``(..., n_labels)`` -> ``(..., K)`` interpolated ``ln X``."""
        x = torch.as_tensor(labels, dtype=torch.float64)
        batch = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        idx, w = self.locator.locate(x)
        out = (w[..., None] * self._residual[idx]).sum(-2) + self.log_planck(
            x[:, self._teff_index])
        return out.reshape(*batch, out.shape[-1])


def _planck_over_5000(wavelength: torch.Tensor, teff: torch.Tensor) -> torch.Tensor:
    """``B_λ(T) / B_λ(5000 K)``: wavelength ``(K,)`` Å, teff ``(B,)`` -> ``(B, K)``."""
    return planck_ratio(wavelength, torch.full_like(teff, 5000.0), teff)


class MeanFluxTable(_PlanckResidualTable):
    """``ln F̄_m(θ)`` per chunk, smooth between grid nodes (method 3's table).

    interpolator: the component grid (a :class:`~photosphere.grids.interpolate.GridInterpolator`
    whose store has ``mean_flux``); averager: its chunks. ``ln F̄_m − ln B̄_m(Teff)`` (B̄_m: the
    Planck function averaged over chunk m's pixels) is interpolated multilinearly;
    ``log_mean_flux(θ (..., n_labels)) -> (..., n_chunks)``.
    """

    def __init__(self, interpolator, averager: ChunkAverager):
        self.averager = averager
        self._wave = torch.as_tensor(np.asarray(interpolator.wavelength, float),
                                     dtype=torch.float64)
        with GridStore.open(interpolator.path) as store:
            values, present = store.mean_flux_all(), store.present.ravel()
        super().__init__(interpolator, values, present, self._log_planck)

    def _log_planck(self, teff: torch.Tensor) -> torch.Tensor:
        return torch.log(self.averager.mean(_planck_over_5000(self._wave, teff)))

    log_mean_flux = _PlanckResidualTable.log_value


class ContinuumTable(_PlanckResidualTable):
    """``ln C(λ; θ)`` at the grid's coarse continuum wavelengths, smooth between nodes.

    The grid interpolator interpolates the continuum *linearly* between nodes; since C rises
    like a Wien tail with Teff, the chord overestimates it between nodes (by up to ~2 % at
    4000-4250 K, 5200 Å; see docs/mixtures.md). Here ``ln C − ln B_λ(Teff)`` is interpolated
    instead. ``log_ratio(θ₁, θ₂) -> (..., n_pix)``: ``ln C₂/C₁`` on the full pixel grid (the
    coarse log ratio interpolated linearly in ln λ, as the grid expands its continuum).
    """

    def __init__(self, interpolator):
        with GridStore.open(interpolator.path) as store:
            values, present = store.continuum_coarse(), store.present.ravel()
            coarse = np.asarray(store.continuum_wavelength, float)
        self._wave = torch.as_tensor(coarse, dtype=torch.float64)
        super().__init__(interpolator, values, present, self._log_planck)
        xc, x = np.log(coarse), np.log(np.asarray(interpolator.wavelength, float))
        k = np.clip(np.searchsorted(xc, x, side="right") - 1, 0, xc.size - 2)
        self._k = torch.as_tensor(k)
        self._a = torch.as_tensor((x - xc[k]) / (xc[k + 1] - xc[k]), dtype=torch.float64)

    def _log_planck(self, teff: torch.Tensor) -> torch.Tensor:
        return torch.log(_planck_over_5000(self._wave, teff))

    def log_ratio(self, labels_1: torch.Tensor, labels_2: torch.Tensor) -> torch.Tensor:
        coarse = self.log_value(labels_2) - self.log_value(labels_1)
        left, right = coarse[..., self._k], coarse[..., self._k + 1]
        return left + self._a * (right - left)

    def continuum(self, labels: torch.Tensor) -> torch.Tensor:
        """``(..., n_pix)`` continuum erg/s/cm²/Å (smooth in Teff; for comparisons)."""
        coarse = self.log_value(labels)
        left, right = coarse[..., self._k], coarse[..., self._k + 1]
        return torch.exp(left + self._a * (right - left))


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


__all__ = ["RATIO_METHODS", "ChunkAverager", "ContinuumTable", "MeanFluxTable",
           "check_ratio_method", "light_fraction", "log_planck", "mean_flux_ratio",
           "mix_normalised", "planck_ratio"]
