"""The error of multilinear interpolation in a grid, as low-rank templates.

In a cell of steps ``h_i`` at fractional position ``u_i`` (0 at the lower node, 1 at the upper)
linear interpolation along each axis misses, to second order,

    ε(θ) ≈ −½ Σ_i h_i² u_i (1 − u_i) ∂²f/∂x_i²(θ)

(the exact error for a quadratic). The model error is written ``Σ_k a_k T_k`` with independent
``a_k ~ N(0, 1)`` (signs and mixing left to the data), with two templates per label axis, both
zero at the nodes (``GridInterpolator.predict_error_templates``):

* curvature: ``T_i = s · ½ h_i² u_i (1 − u_i) f_ii(θ)``, ``f_ii`` the multilinear interpolation
  of the nodal second derivatives along axis ``i``;
* label shift: ``T_k = ∂f/∂x_k · sqrt(Σ_i (κ_ik u_i (1 − u_i) h_i²)²)``. Spectra interpolated
  between nodes resemble the true spectrum at slightly different labels; that part of the error
  is indistinguishable from a change of labels, so it biases fits, and only a template along
  ``∂f/∂x_k`` lets the likelihood widen σ for it.

Nodal second derivatives (:func:`second_derivatives`) are the three-point divided differences
with the grid's actual, possibly uneven, node spacing, between the nearest present nodes on
either side (a missing node is skipped). A node on the grid's edge along an axis has none of its
own: it takes that of the nearest node along the same axis that has one (zero when the line has
fewer than three present nodes).

``s`` and κ (:func:`calibrate`) are calibrated on the grid itself: every interior node ``j``
along every axis ``i`` is predicted by linear interpolation between ``j − 1`` and ``j + 1``
(the error ``e`` is known exactly there), and its curvature template ``T₁`` (``s = 1``) is built
from the second derivatives of the grid *without* node ``j``. ``s² = Σ |e|² / Σ |T₁|²`` over
those nodes and pixels: the templates then carry the RMS size of the interpolation errors the
grid itself shows, in cells twice its step (the smallest cells in which an error can be measured
without new synthesis). κ_ik is the RMS over those nodes of the label-k shift, per
``u_i (1 − u_i) h_i²``, found by least squares of ``e`` (less its projection on ``T₁``) on the
derivatives of the interpolant there.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Calibration:
    """Leave-one-out calibration of the templates on a grid (see the module docstring).

    scale: ``s`` of the curvature templates; shift: ``(d, d)`` κ, ``shift[i, k]`` the RMS label-k
    shift per ``u_i (1 − u_i) h_i²`` (label-k units per label-i unit²) that interpolation along
    axis i leaves; n_left_out: how many (node, axis) pairs they rest on (0: nothing could be
    left out, scale 1 and no shift templates)."""

    scale: float
    shift: np.ndarray
    n_left_out: int


def calibrate(flux: np.ndarray, axes: list[np.ndarray], present: np.ndarray,
              max_pixels: int = 4096) -> Calibration:
    """Leave every interior node out along every axis in turn and compare the linear
    interpolation from its two neighbours with the truth (see the module docstring), on every
    k-th pixel so that at most about ``max_pixels`` are used."""
    shape = tuple(len(a) for a in axes)
    d = len(axes)
    stride = max(1, np.shape(flux)[-1] // max_pixels)  # pooled statistics: a subset suffices
    f = np.asarray(flux, np.float64)[:, ::stride].reshape(*shape, -1)
    present = np.asarray(present, bool).reshape(shape)
    gradients = [np.gradient(f, np.asarray(x, float), axis=k) for k, x in enumerate(axes)]
    err2, tmpl2, count = 0.0, 0.0, 0
    shift2, shift_n = np.zeros((d, d)), np.zeros(d)
    for i, x in enumerate(axes):
        x = np.asarray(x, float)
        fi = np.moveaxis(f, i, 0).reshape(shape[i], -1, f.shape[-1])
        pi = np.moveaxis(present, i, 0).reshape(shape[i], -1)
        gi = [np.moveaxis(g, i, 0).reshape(fi.shape) for g in gradients]
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
            factor = u * (1 - u) * big ** 2
            template = (0.5 * factor * (w_lo * d_lo + w_hi * d_hi))[use]
            err = (fi[j] - ((1 - u) * fi[j - 1] + u * fi[j + 1]))[use]
            err2 += float(np.sum(err ** 2))
            tmpl2 += float(np.sum(template ** 2))
            count += int(use.sum())
            # the label shift that the error leaves once the curvature template has taken
            # its share: least squares of what remains on [∂f/∂x_0 .. ∂f/∂x_{d-1}]
            t2 = np.sum(template ** 2, -1, keepdims=True)
            rest = err - np.sum(err * template, -1, keepdims=True) / np.maximum(t2, 1e-300) \
                * template
            slopes = [((fi[j + 1] - fi[j - 1]) / big if k == i
                       else (1 - u) * gi[k][j - 1] + u * gi[k][j + 1])[use] for k in range(d)]
            design = np.stack(slopes, -1)                              # (m, n_pix, d)
            normal = design.transpose(0, 2, 1) @ design
            ridge = 1e-12 * np.trace(normal, axis1=1, axis2=2)[:, None, None] * np.eye(d)
            coef = np.linalg.solve(normal + ridge,
                                   design.transpose(0, 2, 1) @ rest[..., None])[..., 0]
            shift2[i] += np.sum((coef / factor) ** 2, axis=0)
            shift_n[i] += coef.shape[0]
    if count == 0 or not tmpl2 > 0:
        return Calibration(1.0, np.zeros((d, d)), 0)
    shift = np.sqrt(shift2 / np.maximum(shift_n, 1)[:, None])
    return Calibration(float(np.sqrt(err2 / tmpl2)), shift, count)
