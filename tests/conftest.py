"""Shared test fixtures: seeded RNG and the real-data folder (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$PHOTOSPHERE_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("PHOTOSPHERE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set PHOTOSPHERE_SHARED_DATA)")
    return path


def shared_file(relative: str) -> Path:
    """Path of a file in the shared data folder, skipping the test when it is absent."""
    path = shared_data_dir() / relative
    if not path.exists():
        pytest.skip(f"real data file {path} is absent")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)
