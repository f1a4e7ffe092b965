"""Batched, differentiable interpolation in a grid store (PyTorch): labels -> spectra.

Missing-node policy. Inside a cell whose 2^d corner nodes all exist the interpolation is
multilinear. A cell with missing corners (ATLAS9 has no low-log g models at high Teff) is split
into Kuhn simplices, but only along the axes on which its missing pattern depends (the "hole
axes"; for the ATLAS9 hole: teff and logg, the same at every [Fe/H]): the weights are barycentric
in the simplex of the hole axes that contains the point, times multilinear in the other axes.
Per cell, the axes are reflected so that the simplex diagonal avoids the missing corners where
possible. A point whose simplex needs a missing node raises
:class:`~photosphere.errors.OutOfGridError` naming that node. With one missing corner in the
(teff, logg) square the usable region is then exactly the triangle of the three present
corners (their convex hull), and since a simplex restricted to any edge is linear, the
interpolant stays continuous across cell faces whenever the hole depends on at most two axes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError, OutOfGridError
from ..model import labels_tensor
from . import interpolation_error
from .presets import LABEL_UNITS
from .store import GridStore

_EPS = 1e-9


def _fmt(name: str, value: float) -> str:
    return f"{value:.0f}" if name == "teff" else f"{value:.4g}"


def out_of_grid_message(name: str, value: float, lo: float, hi: float) -> str:
    unit = LABEL_UNITS.get(name, "").split(" ")[0]
    unit = f" {unit}" if unit else ""
    return (f"{name}={_fmt(name, value)} is outside the grid ({_fmt(name, lo)}-{_fmt(name, hi)}"
            f"{unit}); pass a grid that covers it or fix {name}")


class CellLocator:
    """Corner indices and interpolation weights on a rectilinear grid with missing nodes.

    axes: per-label node values; present: axis-shaped bool (False = node missing).
    """

    def __init__(self, label_names: tuple[str, ...], axes: list[np.ndarray], present: np.ndarray,
                 device: torch.device | None = None):
        self.label_names = label_names
        self.axes = [torch.as_tensor(np.asarray(a, float), dtype=torch.float64, device=device)
                     for a in axes]
        self.shape = tuple(a.size for a in axes)
        d = len(axes)
        if any(n < 2 for n in self.shape):
            raise ModelError(f"every interpolation axis needs >= 2 nodes, got shape {self.shape}")
        strides = np.array([int(np.prod(self.shape[k + 1:])) for k in range(d)])
        bits = np.array(list(itertools.product([0, 1], repeat=d)))[:, ::-1].copy()  # bit k = axis k
        self.bits = torch.as_tensor(bits, dtype=torch.bool, device=device)  # (2^d, d)
        self.codes = torch.arange(2 ** d, device=device)
        self.powers = torch.bitwise_left_shift(torch.ones(d, dtype=torch.long, device=device),
                                               torch.arange(d, device=device))  # bit of axis k
        self.corner_offset = torch.as_tensor(bits @ strides, dtype=torch.long, device=device)
        self.strides = torch.as_tensor(strides, dtype=torch.long, device=device)
        present = np.asarray(present, bool)
        self.present = torch.as_tensor(present.ravel(), device=device)
        self.complete = bool(present.all())
        self._cell_tables(present, bits, strides, device)
        self.bounds = {n: (float(a[0]), float(a[-1])) for n, a in zip(label_names, axes,
                                                                      strict=True)}

    def _cell_tables(self, present: np.ndarray, bits: np.ndarray, strides: np.ndarray,
                     device) -> None:
        """Per cell: complete?, the hole axes, and the reflection that best avoids missing nodes."""
        d = len(self.shape)
        cells = tuple(n - 1 for n in self.shape)
        self.cell_strides = torch.as_tensor([int(np.prod(cells[k + 1:])) for k in range(d)],
                                            dtype=torch.long, device=device)
        lower = np.stack(np.meshgrid(*[np.arange(c) for c in cells], indexing="ij"),
                         -1).reshape(-1, d)
        corner_nodes = (lower @ strides)[:, None] + (bits @ strides)[None, :]
        corners_present = present.ravel()[corner_nodes]  # (n_cells, 2^d)
        complete = corners_present.all(axis=1)
        hole_axes = np.zeros((lower.shape[0], d), bool)
        flips = np.zeros((lower.shape[0], d), bool)
        codes = np.arange(2 ** d)
        for c in np.flatnonzero(~complete):
            p = corners_present[c]
            axes_c = [k for k in range(d) if np.any(p != p[codes ^ (1 << k)])]
            hole_axes[c, axes_c] = True
            flips[c] = _best_reflection(p, axes_c, d)
        self.cell_complete = torch.as_tensor(complete, device=device)
        self.cell_hole_axes = torch.as_tensor(hole_axes, device=device)
        self.cell_flips = torch.as_tensor(flips, device=device)

    def check(self, x: torch.Tensor) -> None:
        """OutOfGridError naming the first label outside the axes (or NaN)."""
        xd = x.detach()
        for k, name in enumerate(self.label_names):
            lo, hi = self.bounds[name]
            col = xd[:, k]
            bad = ~((col >= lo - _EPS * max(1.0, abs(lo))) & (col <= hi + _EPS * max(1.0, abs(hi))))
            if bool(bad.any()):
                v = float(col[bad][0])
                raise OutOfGridError(out_of_grid_message(name, v, lo, hi))

    def cell(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
        """labels (B, d) float64 -> lower-corner node (B,), cell index (B,), fractional position
        in the cell ``t`` (B, d) (differentiable) and the cell's steps (B, d), label units."""
        base = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        cell = torch.zeros_like(base)
        ts, steps = [], []
        for k, ax in enumerate(self.axes):
            col = x[:, k]
            i = torch.clamp(torch.searchsorted(ax, col.detach().contiguous(), right=True) - 1,
                            0, ax.numel() - 2)
            lo, hi = ax[i], ax[i + 1]
            ts.append(((col - lo) / (hi - lo)).clamp(0.0, 1.0))
            steps.append(hi - lo)
            base = base + i * self.strides[k]
            cell = cell + i * self.cell_strides[k]
        return base, cell, torch.stack(ts, dim=-1), torch.stack(steps, dim=-1)

    def locate(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels (B, d) -> corner flat indices (B, 2^d) and weights (B, 2^d) (differentiable)."""
        x = labels.to(torch.float64)
        self.check(x)
        base, cell, t, _ = self.cell(x)
        idx = base[:, None] + self.corner_offset[None, :]  # (B, 2^d)
        w = _multilinear(t, self.bits)
        if self.complete:
            return idx, w
        partial = ~self.cell_complete[cell]
        if bool(partial.any()):
            ws = self._simplex_weights(t, self.cell_hole_axes[cell], self.cell_flips[cell])
            w = torch.where(partial[:, None], ws, w)
            needs_missing = (w.detach() > _EPS) & ~self.present[idx]
            if bool(needs_missing.any()):
                self._raise_missing(x, idx, needs_missing)
        return idx, w

    def _simplex_weights(self, t: torch.Tensor, hole: torch.Tensor,
                         flip: torch.Tensor) -> torch.Tensor:
        """Kuhn-simplex weights on the hole axes × multilinear on the others: (B, 2^d)."""
        B, d = t.shape
        tf = torch.where(flip, 1 - t, t)
        key = torch.where(hole, tf, torch.full_like(tf, -1.0))
        vals, perm = torch.sort(key, dim=-1, descending=True)
        n_hole = hole.sum(dim=-1, keepdim=True)
        position = torch.arange(d, device=t.device)[None, :]
        vals = torch.where(position < n_hole, vals, torch.zeros_like(vals))
        step = torch.where(position < n_hole, torch.bitwise_left_shift(torch.ones_like(perm), perm),
                           torch.zeros_like(perm))
        chain = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=t.device),
                           torch.cumsum(step, dim=-1)], dim=-1)  # (B, d+1) vertex codes
        one = torch.ones(B, 1, dtype=t.dtype, device=t.device)
        padded = torch.cat([one, vals, torch.zeros_like(one)], dim=-1)
        bary = padded[:, :-1] - padded[:, 1:]  # (B, d+1); zero beyond the hole axes
        simplex = torch.zeros(B, 2 ** d, dtype=t.dtype, device=t.device)
        simplex = simplex.scatter_add(1, chain, bary)
        hole_code = (hole.long() * self.powers).sum(-1)
        flip_code = (flip.long() * self.powers).sum(-1)
        # corner c (original orientation) sits at c XOR flip in the reflected cell
        reflected = self.codes[None, :] ^ flip_code[:, None]
        w_hole = simplex.gather(1, reflected & hole_code[:, None])
        other = _multilinear(t, self.bits, exclude=hole)
        return w_hole * other

    def _raise_missing(self, x: torch.Tensor, idx: torch.Tensor, needs: torch.Tensor) -> None:
        row = int(torch.nonzero(needs.any(dim=-1))[0])
        node = int(idx[row][needs[row]][0])
        where = np.unravel_index(node, self.shape)
        point = ", ".join(f"{n}={_fmt(n, float(v))}" for n, v in zip(self.label_names, x[row],
                                                                     strict=True))
        missing = ", ".join(f"{n}={_fmt(n, float(self.axes[k][where[k]]))}"
                            for k, n in enumerate(self.label_names))
        raise OutOfGridError(f"({point}) is outside the computed part of the grid: it needs the "
                             f"node ({missing}), which the grid lacks (no model atmosphere); "
                             "move the labels towards computed nodes or use a grid with this node")


def _multilinear(t: torch.Tensor, bits: torch.Tensor,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Multilinear corner weights (B, 2^d) from t (B, d); axes in ``exclude`` (B, d) count as 1."""
    factors = torch.where(bits[None], t[:, None, :], 1 - t[:, None, :])
    if exclude is not None:
        factors = torch.where(exclude[:, None, :], torch.ones_like(factors), factors)
    return factors.prod(dim=-1)


def _best_reflection(corners_present: np.ndarray, hole_axes: list[int], d: int) -> np.ndarray:
    """The reflection of the hole axes whose Kuhn simplices touch the fewest missing corners."""
    best, best_bad = np.zeros(d, bool), None
    for mask in itertools.product([False, True], repeat=len(hole_axes)):
        flip_code = sum(1 << k for k, m in zip(hole_axes, mask, strict=True) if m)
        bad = 0
        for order in itertools.permutations(hole_axes):
            code, chain = 0, [0]
            for k in order:
                code |= 1 << k
                chain.append(code)
            bad += any(not corners_present[c ^ flip_code] for c in chain)
        if best_bad is None or bad < best_bad:
            best_bad = bad
            best = np.array([k in hole_axes and mask[hole_axes.index(k)] for k in range(d)])
    return best


class GridInterpolator:
    """Multilinear interpolation of a grid file, batched and differentiable (a forward model).

    label_names: the grid's axes; bounds: ``{name: (min, max)}``; wavelength: (n_pix,) Å
    log-uniform in ``medium``. ``predict(labels (..., n_labels)) -> (..., n_pix)`` normalised flux;
    ``predict_continuum`` and ``predict_absolute`` in erg/s/cm²/Å; ``predict_mean_flux`` per chunk;
    ``predict_error_templates`` the interpolation error as low-rank templates (for fits).
    The whole grid is held in memory as a float32 tensor.
    """

    def __init__(self, store: GridStore | str | Path, *, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32):
        own = not isinstance(store, GridStore)
        store = GridStore.open(store) if own else store
        try:
            self.path = store.path
            self.label_names = store.label_names
            self.fixed_labels = dict(store.fixed_labels)
            self.wavelength = store.wavelength.copy()
            self.medium = store.medium
            self.velocity_step = store.velocity_step
            self.chunk_edges = store.chunk_edges.copy()
            self.device = torch.device(device) if device is not None else torch.device("cpu")
            self.dtype = dtype
            self.locator = CellLocator(store.label_names, list(store.axes.values()),
                                       store.present, device=self.device)
            as_t = lambda a: torch.as_tensor(np.nan_to_num(a), dtype=dtype, device=self.device)  # noqa: E731
            self._flux = as_t(store.flux_all())
            self._continuum = as_t(store.continuum_coarse())
            self._mean_flux = as_t(store.mean_flux_all())
            # ln-λ linear interpolation of the coarse continuum onto the full wavelengths
            xc, x = np.log(store.continuum_wavelength), np.log(store.wavelength)
            k = np.clip(np.searchsorted(xc, x, side="right") - 1, 0, xc.size - 2)
            self._cont_k = torch.as_tensor(k, device=self.device)
            self._cont_a = torch.as_tensor((x - xc[k]) / (xc[k + 1] - xc[k]), dtype=dtype,
                                           device=self.device)
        finally:
            if own:
                store.close()

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(self.locator.bounds)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def __repr__(self) -> str:
        b = ", ".join(f"{n} {lo:g}..{hi:g}" for n, (lo, hi) in self.bounds.items())
        return f"GridInterpolator({b}; {self.wavelength.size} px)"

    def _as_labels(self, labels) -> tuple[torch.Tensor, tuple[int, ...]]:
        x = torch.as_tensor(labels, device=self.device)
        if not torch.is_floating_point(x):
            x = x.to(torch.float64)
        if x.ndim == 0 or x.shape[-1] != self.n_labels:
            raise ModelError(f"labels have shape {tuple(x.shape)}; the last dimension must hold "
                             f"the {self.n_labels} labels {self.label_names}")
        return x.reshape(-1, self.n_labels), tuple(x.shape[:-1])

    def _interpolate(self, table: torch.Tensor, labels) -> torch.Tensor:
        x, batch = self._as_labels(labels)
        idx, w = self.locator.locate(x)
        w = w.to(self.dtype)
        out = torch.zeros(x.shape[0], table.shape[-1], dtype=self.dtype, device=self.device)
        for c in range(idx.shape[1]):
            out.addcmul_(w[:, c, None], torch.index_select(table, 0, idx[:, c]))
        return out.reshape(*batch, table.shape[-1])

    def predict(self, labels) -> torch.Tensor:
        """labels (..., n_labels) in physical units -> (..., n_pix) normalised flux."""
        return self._interpolate(self._flux, labels)

    __call__ = predict

    def _error_table(self) -> tuple[torch.Tensor, interpolation_error.Calibration]:
        """Nodal second derivatives ``(d, n_nodes, n_pix)`` and the leave-one-out calibration,
        computed once from the grid held (see :mod:`photosphere.grids.interpolation_error`)."""
        cached = self.__dict__.get("_error_cache")
        if cached is None or cached[0] is not self._flux or cached[1] is not self.locator:
            flux = self._flux.cpu().numpy()
            axes = [a.cpu().numpy() for a in self.locator.axes]
            present = self.locator.present.cpu().numpy().reshape(self.locator.shape)
            table = torch.as_tensor(interpolation_error.second_derivatives(flux, axes, present),
                                    dtype=self.dtype, device=self.device)
            cached = (self._flux, self.locator, table,
                      interpolation_error.calibrate(flux, axes, present))
            self._error_cache = cached
        return cached[2], cached[3]

    @property
    def error_calibration(self) -> interpolation_error.Calibration:
        """The leave-one-out calibration of :meth:`predict_error_templates` on this grid."""
        return self._error_table()[1]

    def predict_error_templates(self, labels) -> torch.Tensor:
        """labels (..., n_labels) -> (..., 2 n_labels, n_pix) interpolation-error templates of
        the normalised flux; the model error is ``Σ_k a_k T_k`` with ``a_k ~ N(0, 1)``, and
        every template vanishes at the nodes. See
        :mod:`photosphere.grids.interpolation_error`.

        Rows 0..d-1, curvature: ``s · ½ h_i² u_i (1 − u_i) f_ii`` (cell step ``h_i``,
        fractional position ``u_i``, interpolated nodal second derivative ``f_ii``). Rows
        d..2d-1, label shift: ``∂f/∂x_k · sqrt(Σ_i (κ_ik u_i (1 − u_i) h_i²)²)`` with the
        multilinear derivative of the interpolant in the cell. ``s`` and κ:
        :attr:`error_calibration`."""
        x, batch = self._as_labels(labels)
        table, cal = self._error_table()
        x = x.to(torch.float64)
        idx, w = self.locator.locate(x)
        _, _, t, steps = self.locator.cell(x)
        w = w.to(self.dtype)
        d, n_pix = self.n_labels, table.shape[-1]
        curvature = torch.zeros(x.shape[0], d, n_pix, dtype=self.dtype, device=self.device)
        for c in range(idx.shape[1]):
            curvature.addcmul_(w[:, c, None, None], table[:, idx[:, c]].transpose(0, 1))
        position = t * (1 - t) * steps ** 2                                     # (B, d)
        curvature = (0.5 * cal.scale * position).to(self.dtype)[..., None] * curvature
        # ∂f/∂x_k in the cell: the interpolant on its upper minus its lower face along k
        lower = x - t * steps
        faces = []
        for k in range(d):
            for edge in (lower[:, k], lower[:, k] + steps[:, k]):
                faces.append(torch.cat([x[:, :k], edge[:, None], x[:, k + 1:]], -1))
        slope = (self._face_difference(torch.stack(faces, 1).reshape(x.shape[0], d, 2, d))
                 / steps.to(self.dtype)[..., None])
        kappa2 = torch.as_tensor(cal.shift ** 2, dtype=torch.float64, device=self.device)
        size = (position ** 2 @ kappa2).clamp_min(1e-300).sqrt()              # (B, d) labels
        shift = size.to(self.dtype)[..., None] * slope
        return torch.cat([curvature, shift], 1).reshape(*batch, 2 * d, n_pix)

    def _face_difference(self, faces: torch.Tensor) -> torch.Tensor:
        """Upper minus lower face flux ``(B, d, n_pix)`` for face labels ``(B, d, 2, d)``. In a
        cell with missing corners a face point can fall in the hole: that row and axis get no
        difference (zero, so no label-shift template there) instead of an error."""
        try:
            flux = self.predict(faces)
            return flux[:, :, 1] - flux[:, :, 0]
        except OutOfGridError:
            if faces.shape[0] * faces.shape[1] == 1:
                return torch.zeros(1, 1, self.wavelength.size, dtype=self.dtype,
                                   device=self.device)
            return torch.stack([torch.cat([self._face_difference(faces[b:b + 1, k:k + 1])
                                           for k in range(faces.shape[1])], 1)[0]
                                for b in range(faces.shape[0])])

    def predict_continuum(self, labels) -> torch.Tensor:
        """labels (..., n_labels) -> (..., n_pix) continuum surface flux, erg/s/cm²/Å."""
        coarse = self._interpolate(self._continuum, labels)
        left, right = coarse[..., self._cont_k], coarse[..., self._cont_k + 1]
        return left + self._cont_a * (right - left)

    def predict_absolute(self, labels) -> torch.Tensor:
        """labels (..., n_labels) -> (..., n_pix) surface flux, erg/s/cm²/Å."""
        return self.predict(labels) * self.predict_continuum(labels)

    def predict_mean_flux(self, labels) -> torch.Tensor:
        """labels (..., n_labels) -> (..., n_chunks) mean surface flux per ``chunk_edges`` chunk."""
        return self._interpolate(self._mean_flux, labels)

    def observe(self, labels, *, vsini=0.0, resolution=None, rv=0.0, wavelength=None,
                epsilon: float = 0.6) -> torch.Tensor:
        """Model flux through the observation chain; see :func:`observe`."""
        return observe(self, labels, vsini=vsini, resolution=resolution, rv=rv,
                       wavelength=wavelength, epsilon=epsilon)

    def labels_tensor(self, **labels: float) -> torch.Tensor:
        """A (n_labels,) tensor from keyword labels, in ``label_names`` order."""
        return labels_tensor(self.label_names, labels)



def observe(model, labels, *, vsini=0.0, resolution=None, rv=0.0, wavelength=None,
            epsilon: float = 0.6) -> torch.Tensor:
    """A grid model's spectrum as observed: the easy call over the photosphere.ops primitives.

    model.predict(labels) on the model's log-uniform grid -> rotational broadening (``vsini``
    km/s, linear limb darkening ``epsilon``; ops.rotation) -> Gaussian LSF of resolving power
    ``resolution`` (ops.lsf; None: none) -> Doppler shift by ``rv`` km/s (ops.doppler) ->
    flux-conserving rebinning onto ``wavelength`` (Å, observed frame; default the model's own;
    ops.resample). labels (..., n_labels); vsini, resolution, rv scalars or broadcastable to the
    batch. Returns (..., n_out) float64, differentiable in labels, vsini, resolution and rv;
    output pixels outside the shifted model range are NaN.
    """
    from ..ops.doppler import shift_wavelength
    from ..ops.lsf import gaussian_broaden
    from ..ops.resample import rebin
    from ..ops.rotation import rotational_broaden

    flux = model.predict(labels).to(torch.float64)
    vsini_t = torch.as_tensor(vsini, dtype=torch.float64)
    if bool((vsini_t != 0).any()) or vsini_t.requires_grad:
        flux = rotational_broaden(flux, vsini_t, model.velocity_step, epsilon)
    if resolution is not None:
        flux = gaussian_broaden(flux, resolution, model.velocity_step)
    rest = torch.as_tensor(model.wavelength, dtype=torch.float64)
    shifted = shift_wavelength(rest, torch.as_tensor(rv, dtype=torch.float64))
    out = rest if wavelength is None else torch.as_tensor(wavelength, dtype=torch.float64)
    return rebin(shifted, flux, out)
