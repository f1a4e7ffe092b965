import numpy as np
import pytest
import torch

from photosphere.errors import UnitsError
from photosphere.ops.airvac import air_to_vacuum, vacuum_to_air

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead


def test_known_value():
    # 5000 Å in vacuum is 4998.605 Å in air (n ≈ 1.000279)
    assert vacuum_to_air(5000.0) == pytest.approx(4998.6045, abs=2e-3)
    assert air_to_vacuum(4998.6045) == pytest.approx(5000.0, abs=2e-3)
    # Hα: 6562.80 Å air ↔ 6564.61 Å vacuum
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)


def test_round_trip(rng):
    wave = rng.uniform(2001.0, 25_000.0, 10_000)
    back = vacuum_to_air(air_to_vacuum(wave))
    np.testing.assert_allclose(back, wave, rtol=1e-12)
    there = air_to_vacuum(vacuum_to_air(wave))
    assert np.max(np.abs(there / wave - 1)) < 1e-8


def test_ultraviolet_unchanged():
    wave = np.array([1200.0, 1999.0])
    np.testing.assert_array_equal(vacuum_to_air(wave), wave)
    np.testing.assert_array_equal(air_to_vacuum(wave), wave)


def test_torch_differentiable_and_consistent():
    wave = torch.tensor([5000.0, 15500.0], dtype=torch.float64, requires_grad=True)
    air = vacuum_to_air(wave)
    np.testing.assert_allclose(air.detach().numpy(), vacuum_to_air(wave.detach().numpy()))
    assert torch.autograd.gradcheck(air_to_vacuum, (wave,))


def test_scalar_returns_float():
    assert isinstance(vacuum_to_air(5000), float)


@pytest.mark.parametrize("bad", [-5.0, 0.0, float("nan")])
def test_bad_wavelength(bad):
    with pytest.raises(UnitsError, match="Å"):
        vacuum_to_air(np.array([5000.0, bad]))
