"""A real spectrum degraded to a lower S/N on the network's pixels (nn.twin.added_sigma,
noisy_copies): the S/N the data then show (DER_SNR) is the one asked for. Skipped without
../shared/data."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from photosphere.io import read
from photosphere.nn.data import default_layout
from photosphere.nn.inputs import prepare_image
from photosphere.nn.twin import added_sigma, noisy_copies
from photosphere.ops.noise import estimate_snr

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def uves_sun_image() -> np.ndarray:
    layout = default_layout()
    return prepare_image(read(shared_file("optical/uves_sun_norm.txt")), layout.wavelength,
                         layout.medium).image


@pytest.mark.parametrize("target", [20.0, 50.0, 100.0])
def test_the_uves_sun_degraded_shows_the_asked_snr(uves_sun_image, target):
    image = uves_sun_image
    native = np.asarray(estimate_snr(image), dtype=float)
    assert np.all(native > 150)  # the atlas is far above every target
    degraded = noisy_copies(image, added_sigma(native, target), [0, 1])
    found = np.asarray(estimate_snr(degraded), dtype=float)  # (2, n_orders)
    assert np.median(found) == pytest.approx(target, rel=0.1)
    assert np.all(np.abs(found / target - 1) < 0.25)
