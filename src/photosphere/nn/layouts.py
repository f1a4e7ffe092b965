"""Input layouts of the networks: the (n_orders, n_pixels) wavelength image a model reads.

* ``harpsn``: the study's HARPS-N 5050–5350 Å layout, 8 orders × 4096 pixels
  (:func:`~photosphere.nn.data.default_layout`).
* ``optical``: the seven line windows of the optical training set (Hβ, Mg b, Na D, Ca I/Fe I,
  Fe II 6238/6247, Fe I 6400–6440, Hα; 4821–6610 Å, ``grids.training_set.OPTICAL_WINDOWS``)
  cut into rows of 1 024 pixels at 1.25 km/s (R ≈ 120 000 Nyquist-sampled): each window's usable
  range (50 km/s inside its edges, room for rotation and LSF) is covered by the fewest rows of
  that length, spaced evenly, so neighbouring rows of a window overlap as échelle orders do.
  26 rows, 26 624 pixels.

A layout's rows fall into *windows* (:func:`layout_groups`): rows that overlap or touch belong to
one window. A model trained with ``window_dropout`` reads spectra that cover only some windows:
the others are filled with the continuum (:func:`~photosphere.nn.inputs.prepare_image`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError
from ..ops.echelle import OrderLayout
from .data import C_KMS, SOURCE_MARGIN_KMS

#: a gap wider than this (km/s) between one row's end and the next row's start starts a window
WINDOW_GAP_KMS = 100.0
#: the ``optical`` layout's pixel step (km/s) and row length (pixels)
OPTICAL_STEP_KMS = 1.25
OPTICAL_ROW_PIXELS = 1024


def windows_layout(windows: Sequence[tuple[float, float]], *, step_kms: float = OPTICAL_STEP_KMS,
                   n_pixels: int = OPTICAL_ROW_PIXELS, margin_kms: float = SOURCE_MARGIN_KMS,
                   medium: str = "air", name: str = "windows") -> OrderLayout:
    """Rows of ``n_pixels`` log-uniform pixels of ``step_kms`` covering each window (lo, hi) Å
    less ``margin_kms`` at both ends; the fewest rows that cover it, evenly spaced."""
    step = math.log1p(step_kms / C_KMS)
    row_span = step * (n_pixels - 1)
    rows = []
    for lo, hi in windows:
        a = math.log(lo) + math.log1p(margin_kms / C_KMS)
        b = math.log(hi) - math.log1p(margin_kms / C_KMS)
        if b - a < row_span:
            raise ModelError(f"window {lo:g}-{hi:g} Å is shorter than one row of {n_pixels} "
                             f"pixels at {step_kms:g} km/s after the {margin_kms:g} km/s margins;"
                             " use fewer pixels per row or a smaller step")
        n_rows = math.ceil((b - a) / row_span - 1e-9)
        starts = np.linspace(a, b - row_span, n_rows) if n_rows > 1 else np.array([a])
        rows += [np.exp(s + step * np.arange(n_pixels)) for s in starts]
    return OrderLayout(np.array(rows), medium=medium, name=name)


def optical_layout() -> OrderLayout:
    """The ``optical`` layout: the optical training set's windows (module docstring)."""
    from ..grids.training_set import OPTICAL_WINDOWS

    return windows_layout(OPTICAL_WINDOWS, name="optical windows 4821-6610 Å (26 × 1024)")


def layout_groups(wavelength: np.ndarray) -> np.ndarray:
    """(n_orders,) window index of each row of a layout ``wavelength`` (n_orders, n_pixels) Å:
    rows in wavelength order; a new window starts after a gap wider than
    :data:`WINDOW_GAP_KMS`."""
    wave = np.asarray(wavelength, dtype=float)
    order = np.argsort(wave[:, 0])
    groups = np.zeros(len(wave), dtype=int)
    current, reach = 0, wave[order[0], -1]
    for i in order[1:]:
        if wave[i, 0] > reach * (1 + WINDOW_GAP_KMS / C_KMS):
            current += 1
        groups[i] = current
        reach = max(reach, wave[i, -1])
    return groups


def layout_by_name(name: str, source=None) -> OrderLayout:
    """``harpsn`` (narrowed to ``source``'s coverage as :func:`~photosphere.nn.data.default_layout`
    does) or ``optical``."""
    from .data import default_layout

    if name == "harpsn":
        return default_layout(source)
    if name == "optical":
        return optical_layout()
    raise ModelError(f"layout {name!r} is not known; use 'harpsn', 'optical' or a wavelength file")
