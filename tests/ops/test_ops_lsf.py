import numpy as np
import pytest
import torch
from _lines import C_KMS, equivalent_width, fwhm_kms, gaussian_line

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.ops.lsf import (
    broaden_spectrum,
    gaussian_broaden,
    gaussian_kernel,
    instrumental_broaden,
    variable_gaussian_broaden,
)
from photosphere.spectrum import EchelleSpectrum, Spectrum

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead

DV = 0.5
WAVE = log_uniform_wavelength(4995.0, 5005.0, DV)


@pytest.mark.parametrize("resolution", [np.inf, 1e6, 115_000.0, 22_500.0])
def test_kernel_normalised_and_symmetric(resolution):
    k = gaussian_kernel(DV, resolution).numpy()
    assert k.sum() == pytest.approx(1.0, abs=1e-13)
    np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    if np.isinf(resolution):
        np.testing.assert_array_equal(k, [0.0, 0.0, 1.0, 0.0, 0.0])
    else:  # second moment of the Gaussian, unchanged by the interpolation
        offsets = np.arange(k.size) - k.size // 2
        sigma_px = 299792.458 / resolution / 2.3548200450309493 / DV
        assert np.sum(k * offsets**2) == pytest.approx(sigma_px**2, rel=1e-6, abs=1e-14)


def test_infinite_resolution_is_identity(rng):
    flux = rng.normal(1, 0.1, (3, 100))
    out = gaussian_broaden(flux, torch.tensor([np.inf, np.inf, np.inf]), DV)
    np.testing.assert_array_equal(out.numpy(), flux)


def test_delta_line_gives_kernel():
    flux = np.ones(WAVE.size)
    centre = WAVE.size // 2
    flux[centre] = 0.0
    out = gaussian_broaden(flux, 30_000.0, DV).numpy()
    k = gaussian_kernel(DV, 30_000.0).numpy()
    h = k.size // 2
    np.testing.assert_allclose((1 - out)[centre - h: centre + h + 1], k, atol=1e-14)


@pytest.mark.parametrize("resolution", [200_000.0, 50_000.0, 8_000.0])
def test_conserves_equivalent_width_and_flux(resolution):
    flux = gaussian_line(WAVE, sigma_kms=2.0)
    out = gaussian_broaden(flux, resolution, DV).numpy()
    assert equivalent_width(WAVE, out) == pytest.approx(equivalent_width(WAVE, flux), rel=1e-7)
    assert out.sum() == pytest.approx(flux.sum(), rel=1e-12)


def test_fwhm_adds_in_quadrature():
    sigma_line = 2.0
    resolution = 40_000.0
    out = gaussian_broaden(gaussian_line(WAVE, sigma_kms=sigma_line), resolution, DV).numpy()
    expected = np.hypot(sigma_line * 2.3548200450309493, C_KMS / resolution)
    assert fwhm_kms(WAVE, out) == pytest.approx(expected, rel=2e-3)


def test_per_order_resolution_batch_equals_loop(rng):
    flux = rng.normal(1, 0.05, (4, 300))
    resolution = np.array([20_000.0, 50_000.0, np.inf, 115_000.0])
    batched = gaussian_broaden(flux, resolution, DV).numpy()
    for i in range(4):
        np.testing.assert_allclose(batched[i], gaussian_broaden(flux[i], resolution[i], DV).numpy(),
                                   atol=1e-13)


def test_variable_resolution_constant_equals_convolution(rng):
    flux = rng.normal(1, 0.05, (2, 200))
    const = variable_gaussian_broaden(flux, np.full(200, 30_000.0), DV).numpy()
    np.testing.assert_allclose(const, gaussian_broaden(flux, 30_000.0, DV).numpy(), atol=1e-13)


def test_variable_resolution_changes_width_along_spectrum():
    wave = log_uniform_wavelength(4990.0, 5010.0, DV)
    flux = (gaussian_line(wave, 4995.0, sigma_kms=1.0) + gaussian_line(wave, 5005.0, sigma_kms=1.0)
            - 1)
    resolution = np.interp(wave, [4990.0, 5010.0], [20_000.0, 60_000.0])
    out = variable_gaussian_broaden(flux, resolution, DV).numpy()
    for centre in (4995.0, 5005.0):
        near = np.abs(wave - centre) < 2.0
        r_here = np.interp(centre, [4990.0, 5010.0], [20_000.0, 60_000.0])
        expected = np.hypot(2.3548200450309493, C_KMS / r_here)
        assert fwhm_kms(wave[near], out[near], centre) == pytest.approx(expected, rel=2e-2)


def test_gradcheck_resolution_and_flux(rng):
    flux = torch.tensor(rng.normal(1, 0.1, (2, 14)), requires_grad=True)
    resolution = torch.tensor([300_000.0, 60_000.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, r: gaussian_broaden(f, r, DV), (flux, resolution))
    per_pixel = torch.linspace(50_000.0, 90_000.0, 14, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: variable_gaussian_broaden(flux.detach(), r, DV),
                                    (per_pixel,))


def test_linear_grid_matches_log_grid():
    lin = np.arange(4995.0, 5005.0, 0.008)
    log = log_uniform_wavelength(4995.0, 5005.0, 0.45)
    res = []
    for wave in (lin, log):
        out = instrumental_broaden(wave, gaussian_line(wave, sigma_kms=1.5), 25_000.0)
        assert isinstance(out, np.ndarray)
        res.append((equivalent_width(wave, out), fwhm_kms(wave, out)))
    assert res[0][0] == pytest.approx(res[1][0], rel=1e-3)
    assert res[0][1] == pytest.approx(res[1][1], rel=5e-3)
    assert res[0][1] == pytest.approx(np.hypot(1.5 * 2.3548200450309493, C_KMS / 25_000), rel=5e-3)


def test_instrumental_broaden_r_of_lambda_on_linear_grid():
    wave = np.arange(4995.0, 5005.0, 0.008)
    flux = torch.tensor(gaussian_line(wave, sigma_kms=1.0))
    out = instrumental_broaden(wave, flux, np.full(wave.size, 25_000.0))
    assert isinstance(out, torch.Tensor)
    same = instrumental_broaden(wave, flux, 25_000.0)
    np.testing.assert_allclose(out.numpy(), same.numpy(), atol=1e-10)


def test_broaden_spectrum_per_order():
    wave = np.stack([np.linspace(4990, 5000, 900), np.linspace(5000, 5010, 900)])
    flux = np.stack([gaussian_line(wave[0], 4995.0, sigma_kms=1.0),
                     gaussian_line(wave[1], 5005.0, sigma_kms=1.0)])
    spec = EchelleSpectrum(wave, flux)
    out = broaden_spectrum(spec, [20_000.0, 80_000.0])
    widths = [fwhm_kms(wave[i], out.flux[i], c) for i, c in enumerate((4995.0, 5005.0))]
    assert widths[0] > 2 * widths[1]
    one = broaden_spectrum(Spectrum(wave[0], flux[0]), 20_000.0)
    np.testing.assert_allclose(one.flux, out.flux[0])
    with pytest.raises(InvalidSpectrumError, match="per order"):
        broaden_spectrum(spec, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("resolution", [0.0, -5.0, float("nan")])
def test_bad_resolution(resolution):
    with pytest.raises(InvalidSpectrumError, match="resolution"):
        gaussian_broaden(np.ones(30), resolution, DV)


def test_bad_velocity_step():
    with pytest.raises(InvalidSpectrumError, match="velocity_step"):
        gaussian_broaden(np.ones(30), 1e4, -1.0)


@pytest.mark.parametrize("resolution", [500_000.0, 115_000.0, 20_000.0])
def test_matches_analytic_gaussian_convolution(resolution):
    # a Gaussian line (σ0) convolved with a Gaussian LSF is a Gaussian of σ = hypot(σ0, σ_R)
    # with the same equivalent width; checks both the log-grid and the any-grid path
    sigma0 = 2.0
    sigma_r = C_KMS / resolution / 2.3548200450309493
    sigma = np.hypot(sigma0, sigma_r)
    for wave in (WAVE, np.arange(4995.0, 5005.0, 0.009)):
        expected = gaussian_line(wave, depth=0.6 * sigma0 / sigma, sigma_kms=sigma)
        out = instrumental_broaden(wave, gaussian_line(wave, sigma_kms=sigma0), resolution)
        np.testing.assert_allclose(out, expected, atol=2e-4)
