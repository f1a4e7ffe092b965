"""Radial–tangential macroturbulence kernel and the Doyle et al. (2014) relation."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.macroturbulence import doyle_macroturbulence, radial_tangential_kernel


def test_radial_tangential_kernel_is_normalised_symmetric_and_scales():
    k = radial_tangential_kernel(0.5, 4.0)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])
    assert np.argmax(k) == k.size // 2
    v = (np.arange(k.size) - k.size // 2) * 0.5
    k2 = radial_tangential_kernel(0.5, 2.0)
    v2 = (np.arange(k2.size) - k2.size // 2) * 0.5
    rms = np.sqrt(np.sum(k * v**2))
    rms2 = np.sqrt(np.sum(k2 * v2**2))
    assert rms / rms2 == pytest.approx(2.0, rel=0.02)
    # RT profile is cuspy: more central and more wing weight than a Gaussian of the same rms
    gauss = np.exp(-0.5 * (v / rms) ** 2)
    gauss /= gauss.sum()
    assert k[k.size // 2] > gauss[k.size // 2]
    np.testing.assert_array_equal(radial_tangential_kernel(0.5, 0.0), [1.0])
def test_kernel_refuses_bad_zeta_and_step():
    with pytest.raises(InvalidSpectrumError, match="ζ"):
        radial_tangential_kernel(0.5, -1.0)
    with pytest.raises(InvalidSpectrumError, match="velocity_step"):
        radial_tangential_kernel(0.0, 3.0)


def test_doyle_relation_gives_the_solar_value_and_grows_with_teff():
    assert doyle_macroturbulence(5777.0, 4.44) == pytest.approx(3.21)
    # 6200 K, 4.3: 3.21 + 2.33e-3*423 + 2e-6*423**2 - 2*(-0.14)
    assert doyle_macroturbulence(6200.0, 4.3) == pytest.approx(
        3.21 + 2.33e-3 * 423 + 2e-6 * 423**2 + 0.28)
    # outside the calibration box it is held at the box edge, not extrapolated
    assert doyle_macroturbulence(7000.0, 4.3) == doyle_macroturbulence(6400.0, 4.3)
    assert doyle_macroturbulence(4500.0, 2.0) == doyle_macroturbulence(5200.0, 4.0)
    with pytest.raises(InvalidSpectrumError):
        doyle_macroturbulence(float("nan"), 4.4)
