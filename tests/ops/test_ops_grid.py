import numpy as np
import pytest

from photosphere.errors import InvalidSpectrumError
from photosphere.ops._common import C_KMS
from photosphere.ops.grid import log_uniform_wavelength, velocity_step


def test_log_uniform_grid_has_constant_velocity_step():
    wave = log_uniform_wavelength(5000.0, 5100.0, 1.5)
    assert wave[0] == 5000.0
    assert wave[-1] <= 5100.0
    assert wave[-1] * np.exp(1.5 / C_KMS) > 5100.0
    np.testing.assert_allclose(np.diff(np.log(wave)) * C_KMS, 1.5, rtol=1e-9)
    assert velocity_step(wave) == pytest.approx(1.5, rel=1e-12)


def test_velocity_step_rejects_linear_grid():
    with pytest.raises(InvalidSpectrumError, match="not log-uniform"):
        velocity_step(np.linspace(4000, 6000, 1000))


def test_velocity_step_accepts_float32_grid():
    wave = log_uniform_wavelength(5000.0, 5100.0, 0.8).astype(np.float32)
    assert velocity_step(wave) == pytest.approx(0.8, rel=1e-3)


@pytest.mark.parametrize("args", [(5100.0, 5000.0, 1.0), (5000.0, 5100.0, 0.0),
                                  (5000.0, 5000.5, 100.0), (-1.0, 5.0, 1.0)])
def test_log_uniform_bad_input(args):
    with pytest.raises(InvalidSpectrumError):
        log_uniform_wavelength(*args)


def test_velocity_step_rejects_decreasing():
    with pytest.raises(InvalidSpectrumError, match="increasing"):
        velocity_step(log_uniform_wavelength(5000.0, 5100.0, 1.0)[::-1])


def test_log_uniform_runs_splits_windows_with_one_step():
    from photosphere.ops.grid import log_uniform_runs

    a = log_uniform_wavelength(5000.0, 5010.0, 1.0)
    b = log_uniform_wavelength(5100.0, 5120.0, 1.0)
    step, runs = log_uniform_runs(np.concatenate([a, b]))
    assert step == pytest.approx(1.0, rel=1e-6)
    assert runs == [(0, a.size), (a.size, a.size + b.size)]
    assert log_uniform_runs(a)[1] == [(0, a.size)]
    with pytest.raises(InvalidSpectrumError, match=r"one velocity step|different velocity steps"):
        log_uniform_runs(np.concatenate([a, log_uniform_wavelength(5100.0, 5120.0, 2.0)]))
    with pytest.raises(InvalidSpectrumError, match="increasing"):
        log_uniform_runs(np.concatenate([b, a]))
