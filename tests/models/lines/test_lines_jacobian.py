"""The clone's least-squares problem: analytic pair derivatives, convergence of LM on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import ModelError
from photosphere.models.lines.clone import clone_spectrum
from photosphere.models.lines.jacobian import pseudo_voigt_pairs, refine_lines
from photosphere.models.lines.model import LineModel, line_windows


def _lines(rng, n_lines=12):
    centre = np.sort(rng.uniform(6001, 6009, n_lines))
    centre = centre[np.concatenate([[True], np.diff(centre) > 0.3])]
    n = centre.size
    return LineModel(centre, rng.uniform(0.003, 0.03, n), rng.uniform(0.03, 0.06, n),
                     rng.uniform(0.005, 0.02, n), pair_dtype=torch.float64)


def test_pair_derivatives_equal_autograd(rng):
    model = _lines(rng)
    wave = torch.arange(6000.0, 6010.0, 0.01, dtype=torch.float64)
    line_id, pixel = line_windows(wave, model.reference_centre, model.half_window)
    with torch.no_grad():
        theta = torch.stack([model.centre_shift + 0.003, model.log_amplitude, model.log_sigma,
                             model.log_gamma], 1)
    tau, d = pseudo_voigt_pairs(wave, model.reference_centre, line_id, pixel, theta)
    # the pairs sum to the model's own opacity
    with torch.no_grad():
        model.centre_shift.fill_(0.003)
        torch.testing.assert_close(torch.zeros_like(wave).index_add(0, pixel, tau),
                                   model.opacity(wave), rtol=1e-12, atol=1e-14)
    weights = torch.as_tensor(rng.normal(size=tau.numel()))
    leaf = theta.clone().requires_grad_(True)
    (pseudo_voigt_pairs(wave, model.reference_centre, line_id, pixel, leaf,
                        derivatives=False)[0] * weights).sum().backward()
    summed = torch.zeros_like(theta).index_add(0, line_id, d * weights[:, None])
    torch.testing.assert_close(summed, leaf.grad, rtol=1e-10, atol=1e-10)


def test_refine_lines_recovers_known_lines(rng):
    truth = _lines(rng)
    wave = np.arange(6000.0, 6010.0, 0.01)
    flux = truth(torch.as_tensor(wave)).detach().numpy()
    p = truth.parameters_numpy()
    start = LineModel(p["centre"] + 0.004, p["amplitude"] * 1.3, p["sigma"] * 0.8,
                      p["gamma"] * 1.2, half_window=p["half_window"])
    history = refine_lines(start, wave, flux, weight=np.full(wave.size, 1e6),
                           max_iterations=30, tolerance=1e-6, progress=False)
    assert history[-1] < 1e-4 * history[0]
    fitted = start.parameters_numpy()
    np.testing.assert_allclose(fitted["centre"], p["centre"], atol=1e-4)
    np.testing.assert_allclose(fitted["amplitude"], p["amplitude"], rtol=1e-2)
    assert np.all(np.diff(history) <= 0)  # only accepted (loss-lowering) steps


@pytest.mark.slow
def test_lm_clone_beats_the_same_number_of_adam_epochs(rng):
    truth = _lines(rng, 20)
    wave = np.arange(6000.0, 6010.0, 0.01)
    flux = truth(torch.as_tensor(wave)).detach().numpy()
    lm = clone_spectrum(wave, flux, prominence=0.005, n_steps=20, n_rounds=1, optimizer="lm",
                        progress=False)
    adam = clone_spectrum(wave, flux, prominence=0.005, n_steps=20, n_rounds=1,
                          optimizer="adam", progress=False)
    assert lm.final.rms < 0.2 * adam.final.rms
    assert lm.final.max_abs < 0.01


def test_lm_needs_the_pseudo_voigt(rng):
    wave = np.linspace(5000, 5010, 1001)
    flux = 1 - 0.5 * np.exp(-((wave - 5005) / 0.05) ** 2)
    with pytest.raises(ModelError, match="pseudo_voigt"):
        clone_spectrum(wave, flux, profile="voigt", optimizer="lm", progress=False)
    model = LineModel([5005.0], [0.05], [0.04], [0.01], profile="voigt")
    with pytest.raises(ModelError, match="pseudo_voigt"):
        refine_lines(model, wave, flux, progress=False)
