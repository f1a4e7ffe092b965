"""Radial–tangential macroturbulence kernel and the Doyle et al. (2014) relation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.macroturbulence import doyle_macroturbulence, radial_tangential_kernel


def test_radial_tangential_kernel_is_normalised_symmetric_and_scales():
    k = radial_tangential_kernel(0.5, 4.0).numpy()
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])
    assert np.argmax(k) == k.size // 2
    v = (np.arange(k.size) - k.size // 2) * 0.5
    k2 = radial_tangential_kernel(0.5, 2.0).numpy()
    v2 = (np.arange(k2.size) - k2.size // 2) * 0.5
    rms = np.sqrt(np.sum(k * v**2))
    rms2 = np.sqrt(np.sum(k2 * v2**2))
    assert rms / rms2 == pytest.approx(2.0, rel=0.02)
    # RT profile is cuspy: more central and more wing weight than a Gaussian of the same rms
    gauss = np.exp(-0.5 * (v / rms) ** 2)
    gauss /= gauss.sum()
    assert k[k.size // 2] > gauss[k.size // 2]
    np.testing.assert_allclose(radial_tangential_kernel(0.5, 0.0).numpy(), [0.0, 1.0, 0.0])
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


def test_batched_kernels_match_single_ones_and_are_smooth_in_zeta():
    zeta = torch.tensor([0.0, 0.3, 2.0, 5.0], dtype=torch.float64)
    batch = radial_tangential_kernel(1.0, zeta, half_width=25)
    assert batch.shape == (4, 51)
    torch.testing.assert_close(batch.sum(-1), torch.ones(4, dtype=torch.float64))
    single = radial_tangential_kernel(1.0, 5.0, half_width=25)
    torch.testing.assert_close(batch[3], single)
    # differentiable in ζ: the analytic gradient of the centre weight equals a finite difference
    z = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    radial_tangential_kernel(1.0, z, half_width=25)[0, 25].backward()
    h = 1e-5
    fd = (radial_tangential_kernel(1.0, 2.0 + h, half_width=25)[25]
          - radial_tangential_kernel(1.0, 2.0 - h, half_width=25)[25]) / (2 * h)
    assert z.grad[0].item() == pytest.approx(fd.item(), rel=1e-5)
    assert z.grad[0].item() < 0   # wider ζ, less weight in the centre
