"""Real-spectrum input path: 1D and échelle spectra onto the model layout; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import ToyLayout, ToySource

from photosphere.errors import InvalidSpectrumError
from photosphere.nn.data import C_KMS, EchelleSimulator, normalise_orders
from photosphere.nn.evaluate import check_images
from photosphere.nn.inputs import prepare_image
from photosphere.spectrum import EchelleSpectrum, Spectrum

torch.set_num_threads(1)
LABELS = torch.tensor([[5600.0, 4.2, -0.3, 4.0]])


@pytest.fixture(scope="module")
def sim():
    return EchelleSimulator(ToySource(), ToyLayout())


@pytest.fixture(scope="module")
def broadened(sim):
    """The toy star as a 1D spectrum at the source sampling, broadened like the simulator."""
    from photosphere.ops.lsf import gaussian_broaden
    from photosphere.ops.rotation import rotational_broaden

    flux = sim.source.predict(sim.source_labels(LABELS.double()))
    flux = rotational_broaden(flux, LABELS[:, 3].double(), sim.velocity_step)
    flux = gaussian_broaden(flux, 115_000.0, sim.velocity_step)[0].numpy()
    return sim.source_wavelength.numpy(), flux


def _expected(sim):
    return normalise_orders(sim.images(LABELS))[0].numpy()


def test_1d_spectrum_matches_simulated_image(sim, broadened):
    wave, flux = broadened
    out = prepare_image(Spectrum(wave, 7.0 * flux, medium="air"), ToyLayout().wavelength)
    assert out.image.shape == (8, 256) and out.filled_fraction == 0
    np.testing.assert_allclose(out.image, _expected(sim), atol=2e-3)


def test_rv_is_removed(sim, broadened):
    wave, flux = broadened
    rv = 25.0
    beta = rv / C_KMS
    shifted = Spectrum(wave * np.sqrt((1 + beta) / (1 - beta)), flux, medium="air")
    out = prepare_image(shifted, ToyLayout().wavelength, rv=rv)
    np.testing.assert_allclose(out.image, _expected(sim), atol=3e-3)
    unshifted = prepare_image(shifted, ToyLayout().wavelength)
    assert np.abs(unshifted.image - _expected(sim)).max() > 0.05


def test_echelle_in_layout_used_as_is(sim):
    img = sim.images(LABELS)[0].numpy()
    spec = EchelleSpectrum(ToyLayout().wavelength, 300 * img, medium="air")
    out = prepare_image(spec, ToyLayout().wavelength)
    np.testing.assert_allclose(out.image, _expected(sim), atol=1e-4)


def test_other_echelle_orders_merged_and_deblazed(sim, broadened):
    """Three blazed, overlapping orders of another instrument, with a gap, go onto the layout."""
    wave, flux = broadened
    starts = (5035.0, 5160.0, 5260.0)  # a gap at 5153-5160 Å
    rows_w, rows_f = [], []
    for s in starts:
        w = np.linspace(s, s + 118, 6000)
        blaze = 400 * (1 - 0.3 * ((w - w.mean()) / 60) ** 2)
        rows_w.append(w)
        rows_f.append(np.interp(w, wave, flux) * blaze / blaze)  # deblazed counts, scaled
        rows_f[-1] *= 400 + 0.5 * (w - w[0])  # residual slope of a deblazed order
    spec = EchelleSpectrum(np.stack(rows_w), np.stack(rows_f), medium="air",
                           order_numbers=np.array([40, 41, 42]))
    out = prepare_image(spec, ToyLayout().wavelength)
    assert out.orders_used == (40, 41, 42)
    assert 0.01 < out.filled_fraction < 0.05  # the gap is filled with the continuum
    ok = out.image != 1.0
    assert np.median(np.abs(out.image - _expected(sim))[ok]) < 0.01


def test_masked_pixels_interpolated(sim, broadened):
    wave, flux = broadened
    mask = np.zeros(len(wave), bool)
    mask[3000:3004] = True
    bad = flux.copy()
    bad[mask] = np.nan
    out = prepare_image(Spectrum.from_arrays(wave, bad, mask=mask, mask_nonfinite=True,
                                             medium="air"), ToyLayout().wavelength)
    assert np.all(np.isfinite(out.image))
    assert out.filled_fraction < 0.01


def test_too_little_coverage(broadened):
    wave, flux = broadened
    keep = wave < 5200
    with pytest.raises(InvalidSpectrumError, match="not covered"):
        prepare_image(Spectrum(wave[keep], flux[keep], medium="air"), ToyLayout().wavelength)
    with pytest.raises(InvalidSpectrumError, match="overlaps"):
        prepare_image(EchelleSpectrum(np.linspace(6000, 6100, 200)[None], np.ones((1, 200))),
                      ToyLayout().wavelength)


def test_a_gap_in_the_sampling_is_not_coverage(broadened):
    """A spectrum cut into pieces (pixels only around some lines) covers the layout's range
    but not the gaps between its pieces: those layout pixels are filled, not interpolated
    across, and too many of them are refused."""
    from photosphere.nn.inputs import GAP_STEPS, _sampled

    wave, flux = broadened
    layout = ToyLayout().wavelength
    lo, hi = float(layout.min()), float(layout.max())
    hole = (wave > lo + 0.3 * (hi - lo)) & (wave < lo + 0.7 * (hi - lo))
    covered = _sampled(wave[~hole], layout)
    inside = (layout > wave[hole][0]) & (layout < wave[hole][-1])
    assert not covered[inside].any() and covered[(layout < wave[hole][0] - 1)
                                                & (layout > wave[0] + 1)].all()
    assert _sampled(wave, layout)[(layout > wave[0]) & (layout < wave[-1])].all()
    step = np.median(np.diff(wave))
    small = np.ones(len(wave), bool)
    small[len(wave) // 2:len(wave) // 2 + int(GAP_STEPS) - 2] = False  # a short hole: covered
    assert _sampled(wave[small], layout)[(layout > wave[0] + step)
                                         & (layout < wave[-1] - step)].all()
    with pytest.raises(InvalidSpectrumError, match="not covered"):
        prepare_image(Spectrum(wave[~hole], flux[~hole], medium="air"), layout)


def test_image_checks():
    with pytest.raises(InvalidSpectrumError, match="8 orders × 4096 pixels, got an array of shape"):
        check_images(torch.ones(1, 1, 7, 4096), 8, 4096)  # one order missing
    with pytest.raises(InvalidSpectrumError, match=r"shape \(8, 4000\)"):
        check_images(torch.ones(8, 4000), 8, 4096)
    img = torch.ones(8, 4096)
    img[2, 17] = float("nan")
    with pytest.raises(InvalidSpectrumError, match="1 pixel"):
        check_images(img, 8, 4096)
    assert check_images(torch.ones(8, 4096), 8, 4096).shape == (1, 1, 8, 4096)
