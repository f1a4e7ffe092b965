import numpy as np
import pytest
import torch

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.noise import add_noise, estimate_snr

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead


@pytest.mark.parametrize("snr", [10.0, 50.0, 300.0])
def test_injected_noise_has_requested_snr(snr):
    flux = np.full(10_000, 2.0)
    noisy, sigma = add_noise(flux, snr, rng=1)
    np.testing.assert_allclose(sigma, 2.0 / snr)
    assert np.std(noisy - flux) * snr / 2.0 == pytest.approx(1.0, rel=0.03)
    assert estimate_snr(noisy) == pytest.approx(snr, rel=0.04)


def test_der_snr_on_spectrum_with_lines():
    x = np.linspace(0, 1, 20_000)
    flux = 1 - 0.5 * np.exp(-0.5 * ((x - 0.5) / 0.002) ** 2) + 0.1 * np.sin(20 * x)
    noisy, _ = add_noise(flux, 80.0, rng=2, continuum=1.0)
    assert estimate_snr(noisy) == pytest.approx(80.0 * np.median(flux), rel=0.05)


def test_seeded_and_batched():
    flux = np.ones((3, 5000))
    a, _ = add_noise(flux, [10.0, 20.0, 40.0], rng=7)
    b, _ = add_noise(flux, [10.0, 20.0, 40.0], rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(estimate_snr(a), [10.0, 20.0, 40.0], rtol=0.06)


def test_per_pixel_snr_and_continuum():
    flux = np.linspace(0.5, 1.0, 100)
    _, sigma = add_noise(flux, np.full(100, 20.0), rng=0, continuum=1.0)
    np.testing.assert_allclose(sigma, 0.05)


def test_torch_in_torch_out_differentiable():
    flux = torch.ones(2, 1000, dtype=torch.float64, requires_grad=True)
    noisy, sigma = add_noise(flux, 50.0, rng=3)
    assert isinstance(noisy, torch.Tensor) and noisy.shape == flux.shape
    noisy.sum().backward()
    np.testing.assert_allclose(flux.grad.numpy(), 1.0)
    assert float(sigma.max()) == pytest.approx(0.02)


def test_mask_ignored_in_estimate():
    noisy, _ = add_noise(np.ones(5000), 40.0, rng=4)
    spiked = noisy.copy()
    spiked[::7] = 100.0
    mask = np.zeros(5000, bool)
    mask[::7] = True
    assert estimate_snr(spiked, mask) == pytest.approx(estimate_snr(noisy[~mask]), rel=1e-12)


@pytest.mark.parametrize("snr", [0.0, -3.0, float("nan")])
def test_bad_snr(snr):
    with pytest.raises(InvalidSpectrumError, match="snr"):
        add_noise(np.ones(10), snr, rng=0)


def test_bad_rng_and_too_few_pixels():
    with pytest.raises(InvalidSpectrumError, match="rng"):
        add_noise(np.ones(10), 10.0, rng="seed")
    with pytest.raises(InvalidSpectrumError, match="5 good"):
        estimate_snr(np.ones(4))


@pytest.mark.realdata
def test_der_snr_close_to_pipeline_snr_on_real_apvisit():
    from conftest import shared_file
    from photosphere.io.apogee import read_apvisit

    spec = read_apvisit(shared_file("apogee/apVisit-r13-5095-55844-128.fits"))
    per_chip = estimate_snr(spec.flux, spec.mask)
    assert per_chip.shape == (3,)
    assert np.median(per_chip) == pytest.approx(spec.meta.snr, rel=0.25)
