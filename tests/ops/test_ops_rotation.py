import numpy as np
import pytest
import torch
from _lines import equivalent_width, fwhm_kms, gaussian_line

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.grid import log_uniform_wavelength
from photosphere.ops.rotation import broaden_spectrum, rotation_kernel, rotational_broaden
from photosphere.spectrum import EchelleSpectrum, Spectrum

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead

DV = 1.0  # km/s per pixel
WAVE = log_uniform_wavelength(4990.0, 5010.0, DV)


def gray(v, vsini, eps):
    x = np.clip(v / vsini, -1, 1)
    return (2 * (1 - eps) * np.sqrt(1 - x**2) + np.pi * eps / 2 * (1 - x**2)) / (
        np.pi * vsini * (1 - eps / 3))


@pytest.mark.parametrize("vsini", [0.0, 0.2, 0.7, 3.3, 40.0])
@pytest.mark.parametrize("eps", [0.0, 0.6, 1.0])
def test_kernel_is_normalised_with_exact_second_moment(vsini, eps):
    k = rotation_kernel(DV, vsini, eps).numpy()
    offsets = np.arange(k.size) - k.size // 2
    assert k.sum() == pytest.approx(1.0, abs=1e-13)
    np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    # ∫ x² g(x) dx of the Gray profile, times vsini²: the interpolation adds no smoothing
    mean_x2 = ((1 - eps) / 4 + 2 * eps / 15) / (1 - eps / 3)
    assert np.sum(k * (offsets * DV) ** 2) == pytest.approx(mean_x2 * vsini**2, rel=1e-10,
                                                            abs=1e-14)


def test_zero_vsini_kernel_is_delta():
    k = rotation_kernel(DV, 0.0).numpy()
    np.testing.assert_array_equal(k, [0.0, 0.0, 1.0, 0.0, 0.0])


def test_kernel_matches_gray_profile_for_wide_kernel():
    vsini, eps = 60.0, 0.6
    k = rotation_kernel(DV, vsini, eps).numpy()
    v = (np.arange(k.size) - k.size // 2) * DV
    interior = np.abs(v) < 0.9 * vsini
    np.testing.assert_allclose(k[interior], gray(v[interior], vsini, eps) * DV, rtol=2e-3)


def test_delta_line_broadened_gives_kernel():
    flux = np.ones(WAVE.size)
    centre = WAVE.size // 2
    flux[centre] = 0.5
    out = rotational_broaden(flux, 25.0, DV, 0.6).numpy()
    k = rotation_kernel(DV, 25.0, 0.6).numpy()
    h = k.size // 2
    np.testing.assert_allclose((1 - out)[centre - h: centre + h + 1], 0.5 * k, atol=1e-14)
    np.testing.assert_allclose(out[: centre - h], 1.0, atol=1e-14)


@pytest.mark.parametrize("vsini", [0.5, 8.0, 45.0])
def test_broadening_conserves_equivalent_width_and_flux(vsini):
    flux = gaussian_line(WAVE)
    out = rotational_broaden(flux, vsini, DV).numpy()
    assert equivalent_width(WAVE, out) == pytest.approx(equivalent_width(WAVE, flux), rel=1e-7)
    assert out.sum() == pytest.approx(flux.sum(), rel=1e-12)
    assert out.min() > flux.min()  # shallower


def test_zero_vsini_is_exact_identity(rng):
    flux = rng.normal(1, 0.1, (2, 300))
    out = rotational_broaden(flux, torch.tensor([0.0, 0.0]), DV)
    np.testing.assert_array_equal(out.numpy(), flux)


def test_direct_and_fft_agree(rng):
    flux = torch.tensor(rng.normal(1, 0.1, (3, 500)))
    vsini = torch.tensor([5.0, 90.0, 150.0])
    direct = rotational_broaden(flux, vsini, DV, method="direct")
    fft = rotational_broaden(flux, vsini, DV, method="fft")
    np.testing.assert_allclose(direct.numpy(), fft.numpy(), atol=1e-12)


def test_batch_equals_loop(rng):
    flux = rng.normal(1, 0.1, (2, 3, 200))
    vsini = np.array([[1.0, 10.0, 30.0], [0.0, 2.5, 60.0]])
    batched = rotational_broaden(flux, torch.tensor(vsini), DV).numpy()
    for i in range(2):
        for j in range(3):
            one = rotational_broaden(flux[i, j], vsini[i, j], DV).numpy()
            np.testing.assert_allclose(batched[i, j], one, atol=1e-13)


def test_gradcheck_vsini_and_flux(rng):
    flux = torch.tensor(rng.normal(1, 0.1, (2, 16)), requires_grad=True)
    vsini = torch.tensor([0.4, 4.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, v: rotational_broaden(f, v, DV), (flux, vsini))


def test_gradient_nonzero_below_one_pixel():
    flux = torch.tensor(gaussian_line(WAVE, sigma_kms=1.0))
    vsini = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    rotational_broaden(flux, vsini, DV).min().backward()
    assert float(vsini.grad) > 0  # line gets shallower as vsini grows


def test_gradient_near_zero_vsini():
    flux = torch.tensor(gaussian_line(WAVE, sigma_kms=1.0))
    zero = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    rotational_broaden(flux, zero, DV).min().backward()
    assert abs(float(zero.grad)) < 1e-15  # broadening is quadratic in vsini at 0
    vsini = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    rotational_broaden(flux, vsini, DV).min().backward()
    h = 1e-6
    slope = (rotational_broaden(flux, 0.3 + h, DV).min()
             - rotational_broaden(flux, 0.3 - h, DV).min()) / (2 * h)
    assert float(vsini.grad) == pytest.approx(float(slope), rel=1e-5)
    assert float(vsini.grad) > 0


def test_linear_grid_matches_log_grid():
    lin = np.arange(4990.0, 5010.0, 0.01)
    log = log_uniform_wavelength(4990.0, 5010.0, 0.6)
    results = []
    for wave in (lin, log):
        spec = Spectrum(wave, gaussian_line(wave, sigma_kms=2.0), medium="air")
        out = broaden_spectrum(spec, 20.0)
        results.append((equivalent_width(wave, out.flux), fwhm_kms(wave, out.flux)))
    (ew_lin, fw_lin), (ew_log, fw_log) = results
    assert ew_lin == pytest.approx(ew_log, rel=1e-3)
    assert fw_lin == pytest.approx(fw_log, rel=5e-3)
    assert fw_lin > 25.0  # broadened well beyond the 4.7 km/s intrinsic FWHM


def test_broaden_spectrum_echelle_and_zero():
    wave = np.stack([np.linspace(4990, 5000, 800), np.linspace(5000, 5010, 800)])
    flux = np.stack([gaussian_line(wave[0], center=4995.0), gaussian_line(wave[1], center=5005.0)])
    mask = np.zeros_like(flux, bool)
    mask[0, 10] = True
    spec = EchelleSpectrum(wave, flux, np.full_like(flux, 0.01), mask=mask)
    out = broaden_spectrum(spec, 15.0)
    assert out.shape == spec.shape and out.mask[0, 10] and out.has_uncertainty
    assert np.all(out.flux.min(axis=1) > flux.min(axis=1))
    assert broaden_spectrum(spec, 0.0) is spec


def test_linear_grid_path_is_accurate():
    # analytic reference: a Gaussian line (σ0) broadened by a narrow rotation profile has, to
    # second order, the variance σ0² + <v²>; compare the any-grid path with the log-grid path
    lin = np.arange(4995.0, 5005.0, 0.01)
    log = log_uniform_wavelength(4995.0, 5005.0, 0.3)
    out_lin = broaden_spectrum(Spectrum(lin, gaussian_line(lin, sigma_kms=2.0)), 5.0).flux
    out_log = rotational_broaden(gaussian_line(log, sigma_kms=2.0), 5.0, 0.3).numpy()
    np.testing.assert_allclose(out_lin, np.interp(lin, log, out_log), atol=5e-4)


@pytest.mark.parametrize("kwargs", [dict(vsini=-1.0), dict(epsilon=1.5), dict(velocity_step=0.0),
                                    dict(vsini=float("nan"))])
def test_bad_input(kwargs):
    args = dict(flux=np.ones(50), vsini=5.0, velocity_step=DV, epsilon=0.6) | kwargs
    with pytest.raises(InvalidSpectrumError):
        rotational_broaden(**args)


def test_nan_flux_rejected():
    flux = np.ones(50)
    flux[3] = np.nan
    with pytest.raises(InvalidSpectrumError, match="NaN"):
        rotational_broaden(flux, 5.0, DV)
