"""The error of multilinear interpolation in a grid, as low-rank templates.

In a cell of steps ``h_i`` at fractional position ``u_i`` (0 at the lower node, 1 at the upper)
linear interpolation along each axis misses, to second order,

    ε(θ) ≈ −½ Σ_i h_i² u_i (1 − u_i) ∂²f/∂x_i²(θ)

(the exact error for a quadratic). One template per label axis, ``T_i = s · ½ h_i² u_i (1 − u_i)
f_ii(θ)``, with ``f_ii`` the multilinear interpolation of the nodal second derivatives along
axis ``i``; the model error is then ``Σ_i a_i T_i`` with ``a_i ~ N(0, 1)`` (the sign and the
mixing of the axes are left to the data). The templates vanish at the nodes by construction.

Nodal second derivatives (:func:`second_derivatives`) are the three-point divided differences
with the grid's actual, possibly uneven, node spacing, between the nearest present nodes on
either side (a missing node is skipped). A node on the grid's edge along an axis has none of its
own: it takes that of the nearest node along the same axis that has one (zero when the line has
fewer than three present nodes).

The scale ``s`` (:func:`leave_one_out_scale`) is calibrated on the grid itself: every interior
node ``j`` along every axis is predicted by linear interpolation between ``j − 1`` and ``j + 1``
(the error ``e`` is known exactly there), and its template is built from the second
derivatives of the grid *without* node ``j``. ``s² = Σ |e|² / Σ |T₁|²`` over those nodes and
pixels (``T₁`` the template with ``s = 1``): the templates then carry the RMS size of the
interpolation errors the grid itself shows, in cells twice its step (the smallest cells in which
an error can be measured without new synthesis).
"""

from __future__ import annotations

import numpy as np


def _divided_second(f_lo, f_mid, f_hi, h_lo, h_hi):
    """Three-point second derivative at the middle of nodes spaced ``h_lo``, ``h_hi``."""
    return 2.0 * ((f_hi - f_mid) / h_hi - (f_mid - f_lo) / h_lo) / (h_lo + h_hi)


def _fill_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Along axis 0, replace invalid entries by the nearest valid one (the lower one on a
    tie); zero where the whole line is invalid. values ``(n, M, n_pix)``, valid ``(n, M)``."""
    n = values.shape[0]
    out = np.zeros_like(values)
    done = np.zeros(valid.shape, bool)
    for offset in [o for k in range(n) for o in ((-k, k) if k else (0,))]:
        for j in range(n):
            src = j + offset
            if not 0 <= src < n:
                continue
            take = valid[src] & ~done[j]
            out[j, take] = values[src, take]
            done[j] |= take
    return out


def _nearest_present(present: np.ndarray, step: int) -> np.ndarray:
    """Per entry of ``present (n, M)``, the index of the nearest present node strictly below
    (``step=-1``) or above (``step=1``) along axis 0; -1 where there is none."""
    n = present.shape[0]
    out = np.full(present.shape, -1)
    order = range(n) if step == 1 else range(n - 1, -1, -1)
    last = np.full(present.shape[1], -1)
    for j in order:
        out[j] = last
        last = np.where(present[j], j, last)
    return out


def second_derivatives(flux: np.ndarray, axes: list[np.ndarray], present: np.ndarray
                       ) -> np.ndarray:
    """Nodal ``∂²f/∂x_i²`` per axis: ``(d, n_nodes, n_pix)`` float32, in flux per label unit².

    flux: ``(n_nodes, n_pix)`` in C order of the grid shape (missing nodes: any finite value);
    axes: node values per label; present: grid-shaped bool. A present node with present nodes
    on both sides along the axis (the nearest ones, skipping missing nodes) gets their divided
    difference; the others take the value of the nearest such node on their line.
    """
    shape = tuple(len(a) for a in axes)
    f = np.asarray(flux, np.float64).reshape(*shape, -1)
    present = np.asarray(present, bool).reshape(shape)
    out = np.empty((len(axes), *f.shape), np.float32)
    for i, x in enumerate(axes):
        x = np.asarray(x, float)
        fi = np.moveaxis(f, i, 0).reshape(shape[i], -1, f.shape[-1])
        pi = np.moveaxis(present, i, 0).reshape(shape[i], -1)
        lo, hi = _nearest_present(pi, -1), _nearest_present(pi, 1)
        valid = pi & (lo >= 0) & (hi >= 0)
        columns = np.arange(pi.shape[1])
        d2 = np.zeros_like(fi)
        for j in range(shape[i]):
            if not valid[j].any():
                continue
            a, b = np.maximum(lo[j], 0), np.maximum(hi[j], 0)
            d2[j] = _divided_second(fi[a, columns], fi[j], fi[b, columns],
                                    (x[j] - x[a])[:, None], (x[b] - x[j])[:, None])
        filled = _fill_nearest(np.where(valid[..., None], d2, 0.0), valid)
        rest = [s for k, s in enumerate(shape) if k != i]
        out[i] = np.moveaxis(filled.reshape(shape[i], *rest, -1), 0, i)
    return out.reshape(len(axes), -1, f.shape[-1])


def leave_one_out_scale(flux: np.ndarray, axes: list[np.ndarray], present: np.ndarray
                        ) -> tuple[float, int]:
    """The template scale ``s`` (see the module docstring) and the number of left-out nodes it
    rests on (node × axis pairs). Returns (1.0, 0) when the grid has no node to leave out
    (fewer than four nodes along every axis)."""
    shape = tuple(len(a) for a in axes)
    f = np.asarray(flux, np.float64).reshape(*shape, -1)
    present = np.asarray(present, bool).reshape(shape)
    err2, tmpl2, count = 0.0, 0.0, 0
    for i, x in enumerate(axes):
        x = np.asarray(x, float)
        fi = np.moveaxis(f, i, 0).reshape(shape[i], -1, f.shape[-1])
        pi = np.moveaxis(present, i, 0).reshape(shape[i], -1)
        for j in range(1, shape[i] - 1):
            big = x[j + 1] - x[j - 1]
            u = (x[j] - x[j - 1]) / big
            ok = pi[j - 1] & pi[j] & pi[j + 1]
            # second derivatives at j-1 and j+1 in the grid without node j
            lo_ok = ok & (pi[j - 2] if j >= 2 else False)
            hi_ok = ok & (pi[j + 2] if j + 2 < shape[i] else False)
            d_lo = (_divided_second(fi[j - 2], fi[j - 1], fi[j + 1], x[j - 1] - x[j - 2], big)
                    if j >= 2 else 0.0)
            d_hi = (_divided_second(fi[j - 1], fi[j + 1], fi[j + 2], big, x[j + 2] - x[j + 1])
                    if j + 2 < shape[i] else 0.0)
            # the nearest-node rule: a missing side takes the other side's value
            w_lo = np.where(lo_ok & hi_ok, 1 - u, np.where(lo_ok, 1.0, 0.0))[:, None]
            w_hi = np.where(lo_ok & hi_ok, u, np.where(hi_ok, 1.0, 0.0))[:, None]
            use = lo_ok | hi_ok
            if not use.any():
                continue
            fii = w_lo * d_lo + w_hi * d_hi
            template = 0.5 * big ** 2 * u * (1 - u) * fii
            err = fi[j] - ((1 - u) * fi[j - 1] + u * fi[j + 1])
            err2 += float(np.sum(err[use] ** 2))
            tmpl2 += float(np.sum(template[use] ** 2))
            count += int(use.sum())
    if count == 0 or not tmpl2 > 0:
        return 1.0, 0
    return float(np.sqrt(err2 / tmpl2)), count

