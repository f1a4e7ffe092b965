"""Two-component photospheres as forward models: starspots and double-lined binaries.

Both mix two spectra of one grid (:class:`~photosphere.grids.interpolate.GridInterpolator`)
with a flux ratio from :mod:`.flux_ratio` and return a continuum-normalised spectrum on the
grid's wavelengths, so the general fitter (:func:`photosphere.infer.fit`,
:func:`photosphere.infer.sample`) fits them like any other forward model.

:class:`SpotModel`
    ``(teff, teff_spot, <shared grid labels>, filling_factor[, veiling])``: a photosphere at
    ``teff`` with a fraction ``filling_factor`` of the visible disc at ``teff_spot < teff``;
    log g, [Fe/H] (every non-Teff grid label), RV and vsini shared (the observation chain's).
:class:`BinaryModel`
    ``(<grid labels>_a, vsini_a, <grid labels>_b, vsini_b, radius_ratio | light_ratio,
    delta_rv[_e])``: two stars, each rotated by its own vsini (fit with ``rotation=False``), the
    secondary (b) shifted by ``delta_rv = rv_b − rv_a`` km/s *before* mixing; the chain's RV is
    the primary's. ``flux_ratio="radii"``: ``radius_ratio = R_b/R_a`` ∈ (0, 1] and the physical
    wavelength-dependent ratio ``(R_b/R_a)² C_b/C_a``; ``"free"``: ``light_ratio = L_b/L_a`` of
    the continua, constant over the window. ``n_epochs > 1``: one ``delta_rv_e`` per exposure,
    fitted through :class:`~photosphere.infer.epochs.EpochChain`.

Optional ``veiling``: a featureless continuum component of ``veiling`` × the stellar
continuum, ``(f + v) / (1 + v)`` (a hot spot, accretion shock or dust emission).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ...errors import ModelError, OutOfGridError
from ...model import labels_tensor
from ...ops.doppler import doppler_factor
from ...ops.rotation import rotational_broaden
from .flux_ratio import (
    ChunkAverager,
    ContinuumTable,
    MeanFluxTable,
    check_ratio_method,
    light_fraction,
    mean_flux_ratio,
    mix_normalised,
    planck_ratio,
)

DTYPE = torch.float64
VSINI_BOUNDS = (0.0, 100.0)
DELTA_RV_BOUNDS = (-250.0, 250.0)
VEILING_BOUNDS = (0.0, 3.0)
RADIUS_RATIO_BOUNDS = (0.05, 1.0)
LIGHT_RATIO_BOUNDS = (0.0, 1.0)


def shift_log_uniform(flux: torch.Tensor, rv: torch.Tensor, log_step: float) -> torch.Tensor:
    """Doppler-shift ``flux (..., n_pix)`` sampled log-uniformly (ln-λ step ``log_step``) by
    ``rv (...)`` km/s onto the same grid: a translation by ``ln D(rv) / log_step`` pixels,
    linear interpolation between pixels, edge values beyond the ends. Differentiable in both."""
    n = flux.shape[-1]
    shift = torch.log(doppler_factor(rv)) / log_step                       # (...) pixels
    source = torch.arange(n, dtype=DTYPE) - shift[..., None]               # (..., n_pix)
    source = source.clamp(0.0, n - 1.0)
    k = torch.floor(source.detach()).long().clamp(0, n - 2)
    t = source - k
    flux = flux.expand(*source.shape[:-1], n)
    left = torch.gather(flux, -1, k)
    right = torch.gather(flux, -1, k + 1)
    return left + t * (right - left)


class _TwoComponent:
    """Shared machinery: the grid, the flux-ratio method, input checks."""

    def __init__(self, grid, ratio: str = "absolute", veiling: bool = False):
        if not hasattr(grid, "predict_continuum"):
            raise ModelError(f"a mixture needs a grid model with continua (a GridInterpolator), "
                             f"got {type(grid).__name__}")
        if "teff" not in grid.label_names:
            raise ModelError(f"the grid's labels {grid.label_names} have no teff axis")
        self.grid = grid
        #: the precision the components are computed in (the grid's; the mixture's float64
        #: flux is made from them), read by the fit to choose how it differentiates
        self.prediction_precision = getattr(grid, "dtype", torch.float32)
        self.ratio = check_ratio_method(ratio)
        self.veiling = bool(veiling)
        self.wavelength = np.asarray(grid.wavelength, float)
        self.medium = grid.medium
        self.velocity_step = float(grid.velocity_step)
        self.log_step = float(np.log(self.wavelength[-1] / self.wavelength[0])
                              / (self.wavelength.size - 1))
        self._wave_t = torch.as_tensor(self.wavelength, dtype=DTYPE)
        self.averager = ChunkAverager(self.wavelength, grid.chunk_edges)
        self._table = MeanFluxTable(grid, self.averager) if ratio == "mean_flux" else None
        self._continua = ContinuumTable(grid) if ratio == "absolute" else None
        self.grid_bounds = dict(grid.bounds)

    # ------------------------------------------------------------------ pieces
    def _component(self, labels: torch.Tensor, name: str,
                   rename: dict[str, str] | None = None) -> torch.Tensor:
        """Normalised flux ``(B, n_pix)`` of one component; an OutOfGridError names the
        component and uses this model's label names (``rename``: grid name -> model name)."""
        try:
            return self.grid.predict(labels).to(DTYPE)
        except OutOfGridError as err:
            text = str(err)
            for grid_name, own in (rename or {}).items():
                text = re.sub(rf"\b{grid_name}\b", own, text)
            raise OutOfGridError(f"{name}: {text}") from None

    def continuum_ratio(self, labels_1: torch.Tensor, labels_2: torch.Tensor,
                        n_1: torch.Tensor, n_2: torch.Tensor) -> torch.Tensor:
        """``r = C₂/C₁`` per pixel ``(B, n_pix)`` by this model's method (rest frame, intrinsic
        spectra ``n_1, n_2`` before any broadening)."""
        if self.ratio == "absolute":
            return torch.exp(self._continua.log_ratio(labels_1, labels_2))
        t = self.grid.label_names.index("teff")
        if self.ratio == "blackbody":
            return planck_ratio(self._wave_t, labels_1[:, t], labels_2[:, t])
        q = mean_flux_ratio(self._table, labels_1, labels_2)              # (B, n_chunks)
        r_chunk = q * self.averager.mean(n_1) / self.averager.mean(n_2)
        return self.averager.expand(r_chunk)

    def _veil(self, flux: torch.Tensor, veiling: torch.Tensor | None) -> torch.Tensor:
        if veiling is None:
            return flux
        v = veiling[..., None]
        return (flux + v) / (1.0 + v)

    @staticmethod
    def _check_fraction(name: str, value: torch.Tensor) -> None:
        v = value.detach()
        bad = ~((v >= 0.0) & (v <= 1.0))
        if bool(bad.any()):
            raise OutOfGridError(f"{name}={float(v[bad][0]):.4g} is outside [0, 1]; it is a "
                                 "fraction of the visible disc, give a value in 0..1")

    def _as_batch(self, labels) -> tuple[torch.Tensor, tuple[int, ...]]:
        x = torch.as_tensor(labels).to(DTYPE)
        if x.ndim == 0 or x.shape[-1] != len(self.label_names):
            raise ModelError(f"labels have shape {tuple(x.shape)}; the last dimension must hold "
                             f"the {len(self.label_names)} labels {self.label_names}")
        return x.reshape(-1, x.shape[-1]), tuple(x.shape[:-1])

    def labels_tensor(self, **labels: float) -> torch.Tensor:
        """A ``(n_labels,)`` tensor from keyword labels in ``label_names`` order."""
        return labels_tensor(self.label_names, labels, DTYPE)


class SpotModel(_TwoComponent):
    """A spotted photosphere (see the module docstring).

    grid: a GridInterpolator; ratio: one of :data:`~.flux_ratio.RATIO_METHODS`; veiling: add a
    ``veiling`` label. ``predict(labels (..., n_labels)) -> (..., n_pix)`` normalised flux;
    ``spot_light_fraction(labels) -> (..., n_pix)`` the fraction of the continuum light from the
    spots. ``teff_spot >= teff`` or ``filling_factor`` outside [0, 1] raise OutOfGridError
    (the fitter treats those points as outside the model).
    """

    def __init__(self, grid, ratio: str = "absolute", veiling: bool = False):
        super().__init__(grid, ratio, veiling)
        self.shared = tuple(n for n in grid.label_names if n != "teff")
        self.label_names = (("teff", "teff_spot") + self.shared + ("filling_factor",)
                            + (("veiling",) if veiling else ()))
        b = self.grid_bounds
        # the spots are cooler: the photosphere cannot sit on the grid's coolest Teff node nor
        # the spots on its hottest (this also puts the centre of the box inside the model)
        axis = grid.locator.axes[grid.label_names.index("teff")]
        step = float(axis[1] - axis[0])
        lo, hi = b["teff"]
        self.bounds = {"teff": (lo + step, hi), "teff_spot": (lo, hi - step),
                       **{n: b[n] for n in self.shared}, "filling_factor": (0.0, 1.0)}
        if veiling:
            self.bounds["veiling"] = VEILING_BOUNDS

    def __repr__(self) -> str:
        return f"SpotModel(ratio={self.ratio!r}, veiling={self.veiling}, grid={self.grid!r})"

    def components(self, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor | None, tuple[int, ...]]:
        """Grid labels of the ambient photosphere and of the spots ``(B, n_grid_labels)``,
        the filling factor ``(B,)``, the veiling ``(B,)`` or None, and the batch shape."""
        x, batch = self._as_batch(labels)
        names = self.label_names
        teff, teff_spot = x[:, 0], x[:, 1]
        c = x[:, names.index("filling_factor")]
        self._check_fraction("filling_factor", c)
        cooler = (teff_spot.detach() < teff.detach())
        if not bool(cooler.all()):
            i = int(torch.nonzero(~cooler)[0])
            raise OutOfGridError(
                f"teff_spot={float(teff_spot[i]):.0f} K is not below teff={float(teff[i]):.0f} K; "
                "spots are the cooler component (equal temperatures make the two components "
                "identical and the filling factor meaningless); give teff_spot < teff")
        shared = {n: x[:, names.index(n)] for n in self.shared}
        grid_names = self.grid.label_names

        def assemble(t: torch.Tensor) -> torch.Tensor:
            return torch.stack([t if n == "teff" else shared[n] for n in grid_names], -1)

        veil = x[:, names.index("veiling")] if self.veiling else None
        return assemble(teff), assemble(teff_spot), c, veil, batch

    def predict(self, labels) -> torch.Tensor:
        """labels ``(..., n_labels)`` -> ``(..., n_pix)`` continuum-normalised flux."""
        amb, spot, c, veil, batch = self.components(labels)
        n_1 = self._component(amb, "the ambient photosphere")
        n_2 = self._component(spot, "the spots", {"teff": "teff_spot"})
        r = self.continuum_ratio(amb, spot, n_1, n_2)
        out = self._veil(mix_normalised(n_1, n_2, r, c), veil)
        return out.reshape(*batch, out.shape[-1])

    __call__ = predict

    def spot_light_fraction(self, labels) -> torch.Tensor:
        """``(..., n_pix)`` fraction of the continuum light that comes from the spots."""
        amb, spot, c, _, batch = self.components(labels)
        with torch.no_grad():
            n_1 = self._component(amb, "the ambient photosphere")
            n_2 = self._component(spot, "the spots", {"teff": "teff_spot"})
            out = light_fraction(self.continuum_ratio(amb, spot, n_1, n_2), c)
        return out.reshape(*batch, out.shape[-1])


class BinaryModel(_TwoComponent):
    """A double-lined binary (see the module docstring).

    grid: a GridInterpolator; ratio: flux-ratio method (used with ``flux_ratio="radii"``);
    flux_ratio: "radii" (label ``radius_ratio``) or "free" (label ``light_ratio``);
    n_epochs: exposures with their own ``delta_rv_e``; share: grid labels common to both stars
    (e.g. ``("feh",)``: one metallicity); veiling: add a ``veiling`` label; epsilon: limb
    darkening of the rotation kernels.
    ``predict(labels (..., n_labels)) -> (..., n_pix)`` (one epoch);
    ``predict_epochs(labels) -> (..., n_epochs, n_pix)``.
    """

    def __init__(self, grid, ratio: str = "absolute", flux_ratio: str = "radii",
                 n_epochs: int = 1, share: tuple[str, ...] = (), veiling: bool = False,
                 epsilon: float = 0.6):
        super().__init__(grid, ratio, veiling)
        if flux_ratio not in ("radii", "free"):
            raise ModelError(f"flux_ratio={flux_ratio!r} is unknown; choose 'radii' (from "
                             "radius_ratio and the components' surface fluxes) or 'free'")
        if int(n_epochs) < 1:
            raise ModelError(f"n_epochs={n_epochs} must be >= 1")
        unknown = [n for n in share if n not in grid.label_names or n == "teff"]
        if unknown:
            raise ModelError(f"share={share}: {unknown} cannot be shared; choose among "
                             f"{[n for n in grid.label_names if n != 'teff']}")
        self.flux_ratio = flux_ratio
        self.n_epochs = int(n_epochs)
        self.share = tuple(share)
        self.epsilon = float(epsilon)
        own = [n for n in grid.label_names if n not in self.share]
        self.ratio_name = "radius_ratio" if flux_ratio == "radii" else "light_ratio"
        self.rv_names = (("delta_rv",) if self.n_epochs == 1
                         else tuple(f"delta_rv_{e}" for e in range(self.n_epochs)))
        self.label_names = (tuple(f"{n}_a" for n in own) + ("vsini_a",)
                            + tuple(f"{n}_b" for n in own) + ("vsini_b",) + self.share
                            + (self.ratio_name,) + self.rv_names
                            + (("veiling",) if veiling else ()))
        b = self.grid_bounds
        self.bounds = {**{f"{n}_{s}": b[n] for s in "ab" for n in own},
                       "vsini_a": VSINI_BOUNDS, "vsini_b": VSINI_BOUNDS,
                       **{n: b[n] for n in self.share},
                       self.ratio_name: (RADIUS_RATIO_BOUNDS if flux_ratio == "radii"
                                         else LIGHT_RATIO_BOUNDS),
                       **{n: DELTA_RV_BOUNDS for n in self.rv_names}}
        if veiling:
            self.bounds["veiling"] = VEILING_BOUNDS

    def __repr__(self) -> str:
        return (f"BinaryModel(ratio={self.ratio!r}, flux_ratio={self.flux_ratio!r}, "
                f"n_epochs={self.n_epochs}, share={self.share}, grid={self.grid!r})")

    def components(self, labels) -> dict[str, torch.Tensor | tuple[int, ...] | None]:
        """Split labels: ``a``, ``b`` grid labels ``(B, n_grid_labels)``, ``vsini_a``,
        ``vsini_b``, ``ratio`` ``(B,)``, ``delta_rv`` ``(B, n_epochs)``, ``veiling``, ``batch``."""
        x, batch = self._as_batch(labels)
        names = self.label_names

        def col(n: str) -> torch.Tensor:
            return x[:, names.index(n)]

        def star(s: str) -> torch.Tensor:
            return torch.stack([col(n if n in self.share else f"{n}_{s}")
                                for n in self.grid.label_names], -1)

        ratio = col(self.ratio_name)
        lo, hi = self.bounds[self.ratio_name]
        bad = ~((ratio.detach() >= lo) & (ratio.detach() <= hi))
        if bool(bad.any()):
            raise OutOfGridError(f"{self.ratio_name}={float(ratio[bad][0]):.4g} is outside "
                                 f"[{lo:g}, {hi:g}]; {self._ratio_hint()}")
        return {"a": star("a"), "b": star("b"), "vsini_a": col("vsini_a"),
                "vsini_b": col("vsini_b"), "ratio": ratio,
                "delta_rv": torch.stack([col(n) for n in self.rv_names], -1),
                "veiling": col("veiling") if self.veiling else None, "batch": batch}

    def _rename(self, star: str) -> dict[str, str]:
        return {n: f"{n}_{star}" for n in self.grid.label_names if n not in self.share}

    def _ratio_hint(self) -> str:
        if self.flux_ratio == "radii":
            return "radius_ratio = R_b/R_a with b the smaller star (swap the components)"
        return "light_ratio = L_b/L_a with b the fainter star (swap the components)"

    def _broadened(self, flux: torch.Tensor, vsini: torch.Tensor) -> torch.Tensor:
        return rotational_broaden(flux, vsini, self.velocity_step, self.epsilon)

    def light_fraction_b(self, labels) -> torch.Tensor:
        """``(..., n_pix)`` fraction of the continuum light from star b."""
        parts = self.components(labels)
        with torch.no_grad():
            n_a = self._component(parts["a"], "star a", self._rename("a"))
            n_b = self._component(parts["b"], "star b", self._rename("b"))
            weight = self._weights(parts, n_a, n_b)
            out = weight / (1.0 + weight)
        return out.reshape(*parts["batch"], out.shape[-1])

    def _weights(self, parts, n_a: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
        """``L_b/L_a`` per pixel ``(B, n_pix)``: ``k² C_b/C_a`` (radii) or the free ratio."""
        if self.flux_ratio == "free":
            return parts["ratio"][:, None].expand_as(n_a)
        r = self.continuum_ratio(parts["a"], parts["b"], n_a, n_b)
        return parts["ratio"][:, None] ** 2 * r

    def predict_epochs(self, labels) -> torch.Tensor:
        """labels ``(..., n_labels)`` -> ``(..., n_epochs, n_pix)`` normalised flux, in the
        rest frame of star a (the chain applies rv_a of each exposure)."""
        parts = self.components(labels)
        n_a = self._component(parts["a"], "star a", self._rename("a"))
        n_b = self._component(parts["b"], "star b", self._rename("b"))
        weight = self._weights(parts, n_a, n_b)
        f_a = self._broadened(n_a, parts["vsini_a"])
        f_b = self._broadened(n_b, parts["vsini_b"])
        out = []
        for e in range(self.n_epochs):
            shifted = shift_log_uniform(f_b, parts["delta_rv"][:, e], self.log_step)
            mixed = (f_a + weight * shifted) / (1.0 + weight)
            out.append(self._veil(mixed, parts["veiling"]))
        flux = torch.stack(out, -2)
        return flux.reshape(*parts["batch"], self.n_epochs, flux.shape[-1])

    def predict(self, labels) -> torch.Tensor:
        """labels ``(..., n_labels)`` -> ``(..., n_pix)`` (single-epoch models only)."""
        if self.n_epochs != 1:
            raise ModelError(f"this binary has {self.n_epochs} epochs and predicts one spectrum "
                             "per epoch (predict_epochs); fit it through EpochChain (fit_mixture "
                             "does this for a list of exposures)")
        return self.predict_epochs(labels)[..., 0, :]

    __call__ = predict


__all__ = ["BinaryModel", "SpotModel", "shift_log_uniform"]
