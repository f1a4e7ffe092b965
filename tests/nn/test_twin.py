"""The synthetic twin of a star (nn.twin): one spectrum as a source, imaged as the model's grid
is; noise at a per-order σ, degrading to a lower S/N; the real image against its twin."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _toy import ToyLayout, ToySource

from photosphere.errors import InvalidSpectrumError, ModelError
from photosphere.grids.line_strengths import LineStrengths
from photosphere.grids.presets import GridSpec
from photosphere.nn.data import DataConfig, EchelleSimulator, normalise_orders
from photosphere.nn.twin import (
    FixedSource,
    added_sigma,
    line_shift,
    noisy_copies,
    order_mismatch,
    residual_peaks,
    synthesize_twin,
    twin_simulator,
)

torch.set_num_threads(1)
STAR = {"teff": 5600.0, "logg": 4.2, "feh": -0.3}
ROW = [STAR["teff"], STAR["logg"], STAR["feh"]]


@pytest.fixture(scope="module")
def toy():
    return ToySource()


@pytest.fixture(scope="module")
def source(toy):
    flux = toy.predict(torch.tensor([[*ROW, 0.0]]))[0].numpy()
    return FixedSource(toy.wavelength, flux, STAR)


def _checkpoint(layout, line_strengths=None, **data):
    cfg = DataConfig(resolution=60_000.0, **data).to_dict()
    cfg.update(layout_wavelength=layout.wavelength.tolist(), layout_medium="air")
    if line_strengths is not None:
        cfg["line_strengths"] = line_strengths.to_dict()
    return SimpleNamespace(data=cfg)


def test_fixed_source_gives_its_spectrum_only_at_its_labels(source):
    out = source.predict(torch.tensor([ROW, ROW]))
    assert out.shape == (2, source.wavelength.size)
    np.testing.assert_array_equal(out[1].numpy(), source.flux)
    assert source.bounds["logg"] == pytest.approx((4.2, 4.2), abs=2e-3)
    with pytest.raises(ModelError, match="holds only the spectrum"):
        source.predict(torch.tensor([[5700.0, 4.2, -0.3]]))
    with pytest.raises(InvalidSpectrumError, match="one shape"):
        FixedSource(source.wavelength, source.flux[:-1], STAR)
    with pytest.raises(ModelError, match="lack"):
        FixedSource(source.wavelength, source.flux, {"teff": 5600.0})


def test_the_twin_is_imaged_like_the_models_grid(toy, source):
    layout = ToyLayout(n_pixels=512)
    ck = _checkpoint(layout)
    labels = torch.tensor([[*ROW, 6.0]])
    twin = twin_simulator(ck, source).images(labels, resolution=torch.tensor([50_000.0]),
                                             macroturbulence=torch.tensor([3.0]))
    grid = EchelleSimulator(toy, layout, 60_000.0).images(
        labels, resolution=torch.tensor([50_000.0]), macroturbulence=torch.tensor([3.0]))
    np.testing.assert_allclose(twin.numpy(), grid.numpy(), atol=1e-6)
    # the checkpoint's line strengths are applied: f -> f ** c
    c = np.full(source.wavelength.size, 2.0)
    strengths = LineStrengths(source.wavelength, c)
    squared = FixedSource(source.wavelength, source.flux ** 2, STAR)
    corrected = twin_simulator(_checkpoint(layout, strengths), source).images(labels)
    direct = twin_simulator(ck, squared).images(labels)
    np.testing.assert_allclose(corrected.numpy(), direct.numpy(), atol=1e-6)


def test_synthesize_twin_runs_the_grids_synthesis_at_any_labels():
    spec = GridSpec(name="toy", axes={"teff": (5000.0, 6000.0), "logg": (4.0, 4.5),
                                      "feh": (-0.5, 0.0)},
                    wavelength_min=5100.0, wavelength_max=5110.0, velocity_step=1.0,
                    fixed={"alpha": 0.2, "vmic": 1.3}, synthesis_step=0.005)
    calls = []

    def synthesizer(teff, logg, feh, alpha, vmic, *, wavelength_min, wavelength_max, step,
                    atmosphere):
        calls.append((teff, logg, feh, alpha, vmic, wavelength_min, wavelength_max, step,
                      atmosphere))
        wave = np.arange(wavelength_min, wavelength_max + step / 2, step)
        flux = 1 - 0.6 * np.exp(-0.5 * ((wave - 5105.0) / 0.08) ** 2)
        return SimpleNamespace(wavelength=wave, flux=flux, continuum=np.full_like(wave, 3e6),
                               provenance={"atmosphere_id": "toy"})

    twin = synthesize_twin({"teff": 5432.0, "logg": 4.31, "feh": -0.27}, spec,
                           synthesizer=synthesizer)
    assert calls == [(5432.0, 4.31, -0.27, 0.2, 1.3, 5099.0, 5111.0, 0.005, "atlas9")]
    assert twin.wavelength[0] == pytest.approx(5100.0) and twin.wavelength[-1] >= 5110.0
    assert np.allclose(np.diff(np.log(twin.wavelength)) * 299_792.458, 1.0)
    # the line, averaged over 1 km/s (0.017 Å) bins of the grid's sampling
    line = 1 - 0.6 * np.exp(-0.5 * ((twin.wavelength - 5105.0) / 0.08) ** 2)
    np.testing.assert_allclose(twin.flux, line, atol=0.01)
    assert twin.provenance["fixed"] == {"alpha": 0.2, "vmic": 1.3}
    assert twin.predict(torch.tensor([[5432.0, 4.31, -0.27]])).shape == (1, twin.flux.size)


def test_added_sigma_brings_the_total_to_the_target():
    now = np.array([300.0, 150.0, 50.0])
    sigma = added_sigma(now, 50.0)
    np.testing.assert_allclose(np.hypot(1 / now, sigma), 1 / 50.0)
    assert sigma[-1] == 0.0
    with pytest.raises(InvalidSpectrumError, match="below the target 100"):
        added_sigma(now, 100.0)
    with pytest.raises(InvalidSpectrumError, match="positive"):
        added_sigma(now, 0.0)


def test_noisy_copies_are_seeded_and_have_the_asked_noise(source):
    clean = twin_simulator(_checkpoint(ToyLayout(n_pixels=2048)), source).images(
        torch.tensor([[*ROW, 2.0]]))[0].numpy()
    sigma = np.linspace(0.005, 0.04, 8)
    a = noisy_copies(clean, sigma, [1, 2])
    b = noisy_copies(clean, sigma, [1, 2])
    assert a.shape == (2, *clean.shape) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])
    reference = normalise_orders(torch.from_numpy(clean)).numpy()
    # the upper-envelope normalisation of a noisy order sits a fraction of σ high (a level
    # shift), so compare the scatter about the mean difference
    np.testing.assert_allclose(np.std(a - reference, axis=-1).mean(0), sigma, rtol=0.1)
    # kept-out pixels (e.g. filled with the continuum) get no noise; σ 0 is the clean image
    keep = np.zeros(clean.shape, bool)
    np.testing.assert_allclose(noisy_copies(clean, sigma, [3], keep=keep)[0], reference,
                               atol=1e-6)
    np.testing.assert_allclose(noisy_copies(clean, 0.0, [3])[0], reference, atol=1e-6)
    with pytest.raises(InvalidSpectrumError, match="n_orders, n_pixels"):
        noisy_copies(clean[0], 0.01, [1])
    with pytest.raises(InvalidSpectrumError, match="keep has shape"):
        noisy_copies(clean, 0.01, [1], keep=keep[:2])


def test_order_mismatch_separates_noise_from_a_missing_line(source, rng):
    model = twin_simulator(_checkpoint(ToyLayout(n_pixels=2048)), source).images(
        torch.tensor([[*ROW, 2.0]]))[0].numpy().astype(float)
    image = 1.02 * model + rng.normal(0, 0.01, model.shape)
    found = order_mismatch(image, model)
    np.testing.assert_allclose(found.residual_rms, 0.01, rtol=0.15)
    np.testing.assert_allclose(found.noise_rms, 0.01, rtol=0.25)
    assert np.all(found.mismatch_rms < 0.006)
    x = np.arange(model.shape[1])
    image[3] -= 0.4 * np.exp(-0.5 * ((x - 700) / 3.0) ** 2)  # a line the twin lacks
    found = order_mismatch(image, model)
    assert np.argmax(found.mismatch_rms) == 3 and found.mismatch_rms[3] > 0.02
    assert np.argmin(found.residual[3]) == pytest.approx(700, abs=2)
    # pixels left out (e.g. a CCD gap filled with the continuum) do not count
    keep = np.ones(model.shape, bool)
    keep[3, 680:720] = False
    masked = order_mismatch(image, model, keep)
    assert masked.mismatch_rms[3] < 0.006 and np.isnan(masked.residual[3, 700])
    with pytest.raises(InvalidSpectrumError, match="one"):
        order_mismatch(image, model[:2])


def test_residual_peaks_are_one_per_line():
    wave = np.linspace(5000, 5010, 1001)
    res = np.zeros_like(wave)
    res[[100, 101, 500, 800]] = [-0.3, -0.29, 0.2, -0.1]
    peaks = residual_peaks(wave, res, n=3, separation=0.3)
    assert [round(w, 2) for w, _ in peaks] == [5001.0, 5005.0, 5008.0]
    assert peaks[0][1] == pytest.approx(-0.3)


def test_line_shift_finds_the_rv_left_in_an_image(source):
    sim = twin_simulator(_checkpoint(ToyLayout(n_pixels=2048)), source)
    row = torch.tensor([[*ROW, 3.0]])
    rest = normalise_orders(sim.images(row)).numpy()[0]
    shifted = normalise_orders(sim.images(row, rv=torch.tensor([4.0]))).numpy()[0]
    wave = ToyLayout(n_pixels=2048).wavelength
    pixel_kms = float(np.median(np.diff(wave) / wave[:, :-1])) * 299_792.458
    assert line_shift(shifted, rest, pixel_kms) == pytest.approx(4.0, abs=0.3)
    assert line_shift(rest, shifted, pixel_kms) == pytest.approx(-4.0, abs=0.3)
    assert line_shift(rest, rest, pixel_kms) == pytest.approx(0.0, abs=0.05)
    with pytest.raises(InvalidSpectrumError, match="share one"):
        line_shift(rest, rest[:3], pixel_kms)
