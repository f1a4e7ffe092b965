"""The ``photosphere info`` fields of auxiliary products (catalogues, grids, calibration files,
network weights, pixel masks), computed without building spectra; used by the product table in
:mod:`photosphere.io.registry`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import apogee, payne, telluric
from ._common import header_value, open_fits_lazy


def allstar(p: Path) -> dict[str, Any]:
    with open_fits_lazy(p) as hdul:  # headers only: DR17 allStar is several GB
        h1 = hdul[1].header
        n_rows = int(header_value(h1, "NAXIS2", 0) or 0)
        n_cols = int(header_value(h1, "TFIELDS", 0) or 0)
        columns = [str(header_value(h1, f"TTYPE{i}")) for i in range(1, n_cols + 1)]
    return {"shape": [n_rows], "n_rows": n_rows, "n_columns": n_cols, "columns": columns[:60]}


def rvsynthgrid(p: Path) -> dict[str, Any]:
    grid = apogee.read_rv_synthgrid(p)
    return {"shape": list(grid.flux.shape), "n_spectra": len(grid),
            "wavelength_min": float(grid.wavelength.min()),
            "wavelength_max": float(grid.wavelength.max()), "medium": grid.medium,
            "labels": {k: [float(v.min()), float(v.max())] for k, v in grid.labels.items()}}


def without_identity(summary: Callable[[Path], dict]) -> Callable[[Path], dict]:
    def run(p: Path) -> dict[str, Any]:
        out = summary(p)
        out.pop("product", None)
        out.pop("description", None)
        return out
    return run


def lblrtm(p: Path) -> dict[str, Any]:
    grid = telluric.read_lblrtm_grid(p)
    return {"shape": list(grid.transmission.shape), "species": grid.species,
            "wavelength_min": float(grid.wavelength.min()),
            "wavelength_max": float(grid.wavelength.max()), "medium": grid.medium,
            "airmass": grid.airmass.tolist(), "scale": grid.scale.tolist()}


def payne_auxiliary(product: str) -> Callable[[Path], dict]:
    def run(p: Path) -> dict[str, Any]:
        arrays = payne.read_payne_auxiliary(p)
        out: dict[str, Any] = {"arrays": {k: list(v.shape) for k, v in arrays.items()}}
        if product == "payne_emulator":
            out["shape"] = list(arrays["w_array_0"].shape)
            out["n_pixels"] = int(arrays["b_array_1"].shape[0])
            out["label_min"] = arrays["x_min"].tolist() if "x_min" in arrays else None
            out["label_max"] = arrays["x_max"].tolist() if "x_max" in arrays else None
        elif product in ("payne_wavelength", "apvisit_wavelength"):
            w = arrays["wavelength" if product == "payne_wavelength" else "wave"]
            out.update(shape=list(w.shape), wavelength_min=float(w.min()),
                       wavelength_max=float(w.max()), medium="vacuum")
        else:
            key = "pixels_cannon" if "pixels_cannon" in arrays else "apogee_mask"
            m = arrays[key]
            out.update(shape=list(m.shape), n_true=int(np.sum(m)))
        if product in ("payne_emulator", "payne_pixel_mask") and \
                (p.parent / payne.WAVELENGTH_FILE).exists():
            # defined on the ASPCAP grid: report its range when the companion grid is beside it
            w = payne.payne_wavelength(p)
            out.update(wavelength_min=float(w.min()), wavelength_max=float(w.max()),
                       medium="vacuum")
        return out
    return run
