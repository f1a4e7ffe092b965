"""The operators chained as the observation chain uses them, and the public re-exports."""

import numpy as np
import pytest
import torch
from _lines import gaussian_line

import photosphere.ops as ops
from photosphere.ops import lsf, rotation
from photosphere.spectrum import Spectrum

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead


def test_public_names_resolve():
    for name in ops.__all__:
        assert getattr(ops, name) is not None


def _chain(model_wave, model_flux, data_wave, rv, vsini, resolution):
    dv = ops.velocity_step(model_wave)
    broadened = ops.rotational_broaden(model_flux, vsini, dv)
    broadened = ops.gaussian_broaden(broadened, resolution, dv)
    shifted_wave = ops.shift_wavelength(torch.as_tensor(model_wave), rv)
    return ops.rebin(shifted_wave, broadened, data_wave)


def test_chain_gradients_in_rv_vsini_resolution():
    model_wave = ops.log_uniform_wavelength(4995.0, 5005.0, 1.0)
    model_flux = torch.tensor(gaussian_line(model_wave, sigma_kms=2.0))
    data_wave = torch.linspace(4998.0, 5002.0, 12, dtype=torch.float64)
    params = (torch.tensor(3.0, dtype=torch.float64, requires_grad=True),
              torch.tensor(6.0, dtype=torch.float64, requires_grad=True),
              torch.tensor(60_000.0, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(
        lambda rv, vs, r: _chain(model_wave, model_flux, data_wave, rv, vs, r), params,
        eps=1e-4, atol=1e-6)


def test_rv_recovered_by_gauss_newton():
    model_wave = ops.log_uniform_wavelength(4995.0, 5005.0, 1.0)
    model_flux = torch.tensor(gaussian_line(model_wave, sigma_kms=4.0))
    data_wave = torch.linspace(4998.0, 5002.0, 120, dtype=torch.float64)
    observed = _chain(model_wave, model_flux, data_wave, torch.tensor(7.3, dtype=torch.float64),
                      5.0, 50_000.0)

    def residual(v):
        return _chain(model_wave, model_flux, data_wave, v, 5.0, 50_000.0) - observed

    rv = torch.tensor(0.0, dtype=torch.float64)
    for _ in range(10):  # Gauss-Newton with the autograd Jacobian d(model)/d(rv)
        jac = torch.autograd.functional.jacobian(residual, rv)
        rv = rv - (jac @ residual(rv)) / (jac @ jac)
    assert float(rv.detach()) == pytest.approx(7.3, abs=1e-4)


def test_easy_wrappers_equal_primitives_on_log_grid():
    wave = ops.log_uniform_wavelength(4995.0, 5005.0, 0.8)
    flux = gaussian_line(wave)
    spec = Spectrum(wave, flux)
    np.testing.assert_allclose(rotation.broaden_spectrum(spec, 12.0).flux,
                               ops.rotational_broaden(flux, 12.0, 0.8).numpy(), atol=1e-13)
    np.testing.assert_allclose(lsf.broaden_spectrum(spec, 40_000.0).flux,
                               ops.gaussian_broaden(flux, 40_000.0, 0.8).numpy(), atol=1e-13)
