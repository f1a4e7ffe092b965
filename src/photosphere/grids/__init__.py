"""Synthetic grids: presets, the HDF5 store, builds, interpolation, emulation, PHOENIX ingest.

Names are imported on first use, so that importing a submodule (for example the synthesis code on
a Dask worker) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GridSpec": "presets", "get_preset": "presets", "load_grid_spec": "presets",
    "default_grid_path": "presets", "GridStore": "store", "build_grid": "build",
    "GridInterpolator": "interpolate", "PCAGPEmulator": "emulator", "ingest_phoenix": "phoenix",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
