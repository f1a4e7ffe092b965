import numpy as np
import pytest
import torch

from photosphere.errors import InvalidSpectrumError
from photosphere.ops._common import C_KMS
from photosphere.ops.doppler import (
    apply_barycentric_correction,
    doppler_factor,
    doppler_shift,
    shift_wavelength,
)
from photosphere.spectrum import EchelleSpectrum, Spectrum, SpectrumMeta

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead


def test_doppler_factor_relativistic_value():
    rv = 0.1 * C_KMS
    assert doppler_factor(rv) == pytest.approx(np.sqrt(1.1 / 0.9), rel=1e-14)
    assert doppler_factor(0.0) == 1.0
    # to first order it is 1 + v/c
    assert doppler_factor(3.0) == pytest.approx(1 + 3.0 / C_KMS, rel=1e-10)


def test_shift_then_inverse_shift_is_identity(rng):
    wave = np.sort(rng.uniform(4000, 7000, 500))
    rv = rng.uniform(-300, 300, 4)
    there = shift_wavelength(wave, rv)
    assert there.shape == (4, 500)
    back = shift_wavelength(there, -rv)
    np.testing.assert_allclose(back, np.broadcast_to(wave, (4, 500)), rtol=1e-15)


def test_shift_torch_is_differentiable():
    wave = torch.linspace(5000, 5010, 11, dtype=torch.float64)
    rv = torch.tensor([10.0, -20.0], dtype=torch.float64, requires_grad=True)
    out = shift_wavelength(wave, rv)
    assert out.shape == (2, 11)
    assert torch.autograd.gradcheck(lambda v: shift_wavelength(wave, v), (rv,))


def test_doppler_factor_rejects_superluminal():
    with pytest.raises(InvalidSpectrumError, match="km/s"):
        doppler_factor(3e5)
    with pytest.raises(InvalidSpectrumError):
        doppler_factor(torch.tensor([1.0, 4e5]))


def test_doppler_shift_spectrum_keeps_flux_and_meta():
    spec = Spectrum(np.linspace(5000, 5010, 20), np.ones(20), np.full(20, 0.1),
                    meta=SpectrumMeta(object_name="star"))
    out = doppler_shift(spec, 30.0)
    np.testing.assert_allclose(out.wavelength, spec.wavelength * doppler_factor(30.0))
    np.testing.assert_array_equal(out.flux, spec.flux)
    assert out.meta.object_name == "star"
    np.testing.assert_allclose(doppler_shift(out, -30.0).wavelength, spec.wavelength, rtol=1e-15)


def test_barycentric_correction_from_meta_and_not_twice():
    wave = np.tile(np.linspace(5000, 5010, 20), (2, 1)) + np.array([[0.0], [20.0]])
    spec = EchelleSpectrum(wave, np.ones((2, 20)),
                           meta=SpectrumMeta(barycentric_correction=-12.5))
    out = apply_barycentric_correction(spec)
    np.testing.assert_allclose(out.wavelength, wave * doppler_factor(-12.5))
    assert out.meta.barycentric_correction == 0.0
    assert out.meta.extra["barycentric_correction_applied"] == -12.5
    again = apply_barycentric_correction(out)
    np.testing.assert_array_equal(again.wavelength, out.wavelength)


def test_barycentric_correction_unknown_raises():
    spec = Spectrum(np.linspace(5000, 5010, 20), np.ones(20))
    with pytest.raises(InvalidSpectrumError, match="berv"):
        apply_barycentric_correction(spec)
