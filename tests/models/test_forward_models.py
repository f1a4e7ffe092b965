"""Every forward model in photosphere.models satisfies the protocol for real: ``check_model``
passes and ``predict`` at the middle of its bounds gives finite flux on its own wavelengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.grids.emulator import PCAGPEmulator
from photosphere.grids.interpolate import GridInterpolator
from photosphere.grids.presets import default_grid_path
from photosphere.model import ForwardModel, check_model
from photosphere.models.cannon import CannonModel
from photosphere.models.lines.forward import LineForwardModel
from photosphere.models.lines.model import LineModel
from photosphere.models.mixture import BinaryModel, SpotModel


@pytest.fixture(scope="module")
def grid():
    torch.set_num_threads(1)
    return GridInterpolator(default_grid_path())


def _emulator(grid):
    names = grid.label_names
    mid = np.array([np.mean(grid.bounds[n]) for n in names])
    span = np.array([np.diff(grid.bounds[n])[0] for n in names]) / 8
    rng = np.random.default_rng(3)
    labels = mid + span * rng.uniform(-1, 1, size=(3 * len(names) + 6, len(names)))
    with torch.no_grad():
        flux = grid.predict(torch.as_tensor(labels))[:, :300].numpy()
    return PCAGPEmulator(n_iter=20).fit_arrays(
        labels, flux, label_names=names, wavelength=grid.wavelength[:300],
        bounds={n: (float(lo), float(hi)) for n, lo, hi in zip(names, mid - span, mid + span,
                                                                 strict=True)})


def _cannon(grid):
    rng = np.random.default_rng(4)
    names = ("teff", "logg", "feh")
    lo = np.array([grid.bounds[n][0] for n in names])
    hi = np.array([grid.bounds[n][1] for n in names])
    labels = lo + (hi - lo) * rng.uniform(0.3, 0.7, size=(40, 3))
    wave = np.linspace(5000.0, 5010.0, 30)
    flux = 1.0 - 0.1 * np.sin(wave / 3.0) * (labels[:, :1] / 5000.0) + 0.01 * labels[:, 2:]
    ivar = np.full_like(flux, 1e4)
    return CannonModel(names, order=2, medium="air").fit(labels, flux, ivar, wave)


def _lines():
    lines = LineModel([5001.0, 5003.0, 5006.0], [0.02, 0.05, 0.01], [0.03, 0.04, 0.03],
                      [0.01, 0.01, 0.01], wavelength_range=(5000.0, 5008.0))
    return LineForwardModel(lines, medium="air")


MODELS = {
    "grid interpolator": lambda grid: grid,
    "emulator": _emulator,
    "cannon": _cannon,
    "line model": lambda grid: _lines(),
    "spot mixture": lambda grid: SpotModel(grid),
    "binary mixture": lambda grid: BinaryModel(grid, share=("feh",)),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_model_is_a_forward_model(kind, grid):
    model = MODELS[kind](grid)
    assert isinstance(model, ForwardModel)
    assert check_model(model) is model
    assert model.medium in ("air", "vacuum")
    middle = torch.tensor([[np.mean(model.bounds[n]) for n in model.label_names]] * 2,
                          dtype=torch.float64)
    flux = model.predict(middle)
    assert tuple(flux.shape) == (2, np.asarray(model.wavelength).size)
    assert torch.all(torch.isfinite(flux))


def test_line_strength_scales_the_opacity():
    model = _lines()
    flux = model.predict(torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64))
    assert torch.allclose(flux[0], torch.ones_like(flux[0]))
    # τ is linear in the line strength: exp(-2τ) = exp(-τ)²
    assert torch.allclose(flux[2], flux[1] ** 2)
    assert float(flux[1].min()) < 0.9


def test_cannon_medium_survives_save_and_load(grid, tmp_path):
    model = _cannon(grid)
    back = CannonModel.load(model.save(tmp_path / "cannon.h5"))
    assert back.medium == "air"
