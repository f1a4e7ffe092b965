import numpy as np
import pytest
import torch

from photosphere.errors import InvalidSpectrumError
from photosphere.ops.resample import rebin, rebin_with_uncertainty, resample
from photosphere.spectrum import EchelleSpectrum, Spectrum

torch.set_num_threads(1)  # small tensors on a shared machine: threads only add overhead


def _edges(w):
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]])


def _weight_matrix(wave_in, wave_out):
    """Slow reference: overlap of every input pixel with every output pixel / output width."""
    ei, eo = _edges(wave_in), _edges(wave_out)
    w = np.zeros((wave_out.size, wave_in.size))
    for k in range(wave_out.size):
        for i in range(wave_in.size):
            w[k, i] = max(0.0, min(eo[k + 1], ei[i + 1]) - max(eo[k], ei[i]))
        w[k] /= eo[k + 1] - eo[k]
    return w


@pytest.fixture
def grids(rng):
    wave_in = np.cumsum(rng.uniform(0.5, 1.5, 60)) + 5000.0
    wave_out = np.linspace(wave_in[3], wave_in[-4], 23)
    return wave_in, wave_out


def test_rebin_matches_dense_reference_and_conserves_flux(grids, rng):
    wave_in, wave_out = grids
    flux = rng.normal(1.0, 0.3, wave_in.size)
    out = rebin(wave_in, flux, wave_out).numpy()
    np.testing.assert_allclose(out, _weight_matrix(wave_in, wave_out) @ flux, rtol=1e-12)
    # ∫ f dλ over the output pixels equals the integral of the piecewise-constant input
    eo, ei = _edges(wave_out), _edges(wave_in)
    integral_out = np.sum(out * np.diff(eo))
    fine = np.linspace(eo[0], eo[-1], 400001)
    idx = np.searchsorted(ei, 0.5 * (fine[1:] + fine[:-1])) - 1
    integral_in = np.sum(flux[idx] * np.diff(fine))
    assert integral_out == pytest.approx(integral_in, rel=1e-5)


def test_rebin_identity_on_same_grid(grids, rng):
    wave_in, _ = grids
    flux = rng.normal(size=wave_in.size)
    np.testing.assert_allclose(rebin(wave_in, flux, wave_in).numpy(), flux, rtol=1e-12, atol=1e-12)


def test_rebin_fill_outside_and_partial_cover(grids):
    wave_in, _ = grids
    wave_out = np.linspace(wave_in[0] - 30, wave_in[-1] + 30, 40)
    out = rebin(wave_in, np.ones(wave_in.size), wave_out, fill=-1.0).numpy()
    assert out[0] == -1.0 and out[-1] == -1.0
    np.testing.assert_allclose(out[out != -1.0], 1.0, rtol=1e-12)


def test_rebin_batch_equals_loop(grids, rng):
    wave_in, wave_out = grids
    flux = rng.normal(size=(3, 2, wave_in.size))
    batched = rebin(wave_in, flux, wave_out).numpy()
    assert batched.shape == (3, 2, wave_out.size)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(batched[i, j], rebin(wave_in, flux[i, j], wave_out).numpy())


def test_rebin_model_batch_onto_echelle_orders(grids, rng):
    wave_in, _ = grids
    orders = np.stack([np.linspace(wave_in[2], wave_in[20], 9), np.linspace(wave_in[30],
                                                                           wave_in[50], 9)])
    flux = rng.normal(size=(3, wave_in.size))
    out = rebin(wave_in, flux[:, None, :], orders).numpy()
    assert out.shape == (3, 2, 9)
    for b in range(3):
        for k in range(2):
            np.testing.assert_allclose(out[b, k], rebin(wave_in, flux[b], orders[k]).numpy())


def test_rebin_gradcheck_wave_in_and_flux(rng):
    wave_in = torch.tensor(np.cumsum(rng.uniform(0.5, 1.5, 12)) + 100.0, requires_grad=True)
    flux = torch.tensor(rng.normal(size=12), requires_grad=True)
    lo, hi = float(wave_in[2].detach()) + 0.1, float(wave_in[-3].detach()) - 0.1
    wave_out = torch.linspace(lo, hi, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w, f: rebin(w, f, wave_out), (wave_in, flux))


def test_rebin_float32_keeps_dtype(grids):
    wave_in, wave_out = grids
    out = rebin(torch.tensor(wave_in, dtype=torch.float32),
                torch.ones(wave_in.size, dtype=torch.float32), wave_out)
    assert out.dtype == torch.float32


def test_uncertainty_propagation_matches_dense_reference(grids, rng):
    wave_in, wave_out = grids
    flux = rng.normal(1.0, 0.1, wave_in.size)
    sigma = rng.uniform(0.01, 0.1, wave_in.size)
    mask = np.zeros(wave_in.size, bool)
    mask[30] = True
    f, s, m = rebin_with_uncertainty(wave_in, flux, np.where(mask, np.inf, sigma), mask, wave_out)
    w = _weight_matrix(wave_in, wave_out)
    touched = (w[:, mask] > 0).any(axis=1)
    np.testing.assert_array_equal(m.numpy(), touched)
    assert touched.sum() >= 1
    np.testing.assert_allclose(s.numpy()[~touched], np.sqrt((w**2) @ sigma**2)[~touched],
                               rtol=1e-10)
    np.testing.assert_allclose(f.numpy()[~touched], (w @ flux)[~touched], rtol=1e-12)
    assert np.all(np.isinf(s.numpy()[touched]))


def test_uncertainty_of_mean_over_equal_pixels():
    # averaging 4 equal, independent input pixels divides sigma by 2
    wave_in = np.arange(5000.0, 5040.0, 1.0)
    wave_out = np.arange(5001.5, 5036.0, 4.0)
    _, s, m = rebin_with_uncertainty(wave_in, np.ones(40), np.full(40, 0.2),
                                     np.zeros(40, bool), wave_out)
    assert not m.any()
    np.testing.assert_allclose(s.numpy(), 0.1, rtol=1e-12)


def test_resample_spectrum_and_echelle(grids, rng):
    wave_in, wave_out = grids
    spec = Spectrum(wave_in, rng.normal(1, 0.1, wave_in.size), np.full(wave_in.size, 0.05))
    out = resample(spec, wave_out)
    assert isinstance(out, Spectrum) and out.has_uncertainty
    np.testing.assert_array_equal(out.wavelength, wave_out)
    ech = EchelleSpectrum(np.stack([wave_in, wave_in + 100]), np.ones((2, wave_in.size)))
    out2 = resample(ech, np.stack([wave_out, wave_out + 100]))
    assert out2.shape == (2, wave_out.size) and not out2.has_uncertainty
    np.testing.assert_allclose(out2.flux, 1.0)
    with pytest.raises(InvalidSpectrumError, match="n_pixels"):
        resample(ech, wave_out)


@pytest.mark.parametrize("bad", ["decreasing", "shape", "nan"])
def test_rebin_bad_input(grids, bad):
    wave_in, wave_out = grids
    flux = np.ones(wave_in.size)
    if bad == "decreasing":
        wave_in = wave_in[::-1]
    elif bad == "shape":
        flux = flux[:-1]
    else:
        wave_out = wave_out.copy()
        wave_out[3] = np.nan
    with pytest.raises(InvalidSpectrumError):
        rebin(wave_in, flux, wave_out)
