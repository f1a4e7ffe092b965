"""Line detection and cloning on spectra made of known Voigt lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import InvalidSpectrumError, ModelError
from photosphere.models.lines.clone import clone_spectrum
from photosphere.models.lines.detect import find_lines
from photosphere.models.lines.model import LineModel


def _known_spectrum(rng, n_lines=30):
    wave = np.arange(6000.0, 6030.0, 0.01)
    centre = np.sort(rng.uniform(6001, 6029, n_lines))
    centre = centre[np.concatenate([[True], np.diff(centre) > 0.25])]  # resolvable lines
    n = centre.size
    truth = LineModel(centre, rng.uniform(0.003, 0.03, n), rng.uniform(0.03, 0.06, n),
                      rng.uniform(0.005, 0.02, n), profile="voigt")
    flux = truth(torch.as_tensor(wave)).detach().numpy()
    return wave, flux, truth


def test_find_lines_locates_every_known_line(rng):
    wave, flux, truth = _known_spectrum(rng)
    guess = find_lines(wave, flux, prominence=0.005)
    true_centre = truth.centre.detach().numpy()
    matched = np.abs(guess.centre[:, None] - true_centre[None, :]).min(axis=0)
    assert guess.n_lines == true_centre.size
    assert np.all(matched < 0.005)  # half a pixel
    np.testing.assert_allclose(guess.depth, truth.depth()[np.argsort(true_centre)], atol=0.02)


@pytest.mark.slow
def test_clone_reproduces_the_spectrum_and_the_lines(rng):
    torch.manual_seed(0)
    wave, flux, truth = _known_spectrum(rng)
    result = clone_spectrum(wave, flux, prominence=0.005, n_steps=300, n_rounds=1,
                            progress=False)
    assert result.final.rms < 0.1 * result.initial.rms
    assert result.final.max_abs < 0.01
    assert result.model.n_lines == truth.n_lines
    fitted = result.model.parameters_numpy()
    np.testing.assert_allclose(fitted["centre"], truth.centre.detach().numpy(), atol=2e-3)
    ew_truth = truth.equivalent_width()
    np.testing.assert_allclose(result.model.equivalent_width(), ew_truth, rtol=0.1)


@pytest.mark.slow
def test_second_round_finds_lines_hidden_in_blends():
    wave = np.arange(5000.0, 5006.0, 0.01)
    # a weak line on the wing of a strong one is not a separate minimum
    truth = LineModel([5002.0, 5002.12, 5004.0], [0.05, 0.004, 0.01], [0.05, 0.03, 0.04],
                      [0.01, 0.005, 0.01], profile="voigt")
    flux = truth(torch.as_tensor(wave)).detach().numpy()
    one = clone_spectrum(wave, flux, n_steps=200, n_rounds=1, progress=False)
    two = clone_spectrum(wave, flux, n_steps=200, n_rounds=2, prominence=0.001, progress=False)
    assert two.model.n_lines > one.model.n_lines
    assert two.final.rms < one.final.rms


def test_bad_input_gives_clear_errors():
    wave = np.linspace(5000, 5010, 1001)
    with pytest.raises(ModelError, match="no lines deeper"):
        find_lines(wave, np.ones_like(wave))
    flux = np.ones_like(wave)
    flux[10] = np.nan
    with pytest.raises(InvalidSpectrumError, match="NaN"):
        clone_spectrum(wave, flux, progress=False)
    with pytest.raises(ModelError, match="optimizer"):
        clone_spectrum(wave, 1 - 0.5 * np.exp(-((wave - 5005) / 0.05) ** 2), optimizer="sgd",
                       progress=False)
