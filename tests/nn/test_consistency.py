"""The grid-consistency check of `nn predict` (nn.consistency): noise is not mismatch, another
kind of spectrum is; which grid a model is checked against."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import ToyLayout, ToySource

from photosphere._files import sha256_file as file_sha256
from photosphere.errors import ModelError
from photosphere.nn.checkpoint import Checkpoint
from photosphere.nn.consistency import MISMATCH_LIMIT, grid_consistency
from photosphere.nn.data import EchelleSimulator, add_noise, normalise_orders
from photosphere.nn.predict import model_grid

torch.set_num_threads(1)
STAR = [5600.0, 4.2, -0.3, 6.0]


@pytest.fixture(scope="module")
def simulator():
    return EchelleSimulator(ToySource(), ToyLayout(n_pixels=512))


def _noisy(clean: torch.Tensor, snr: float, seed: int) -> np.ndarray:
    ones = torch.ones_like(clean)
    return normalise_orders(add_noise(clean, ones, torch.tensor([snr]), [seed]))[0].numpy()


@pytest.mark.parametrize("snr", [15.0, 100.0])
def test_noise_alone_is_not_mismatch(simulator, snr):
    clean = simulator.images(torch.tensor([STAR]))
    check = grid_consistency(_noisy(clean, snr, 3), np.array(STAR), simulator)
    assert check.residual_rms == pytest.approx(1 / snr, rel=0.25)
    assert check.noise_rms == pytest.approx(1 / snr, rel=0.25)
    assert check.mismatch_rms < 0.3 / snr and not check.out_of_distribution


def test_a_spectrum_the_grid_cannot_make_is_flagged(simulator):
    other = EchelleSimulator(ToySource(seed=7, n_lines=1500), ToyLayout(n_pixels=512))
    image = _noisy(other.images(torch.tensor([STAR])), 100.0, 4)
    check = grid_consistency(image, np.array(STAR), simulator)
    assert check.mismatch_rms > MISMATCH_LIMIT and check.out_of_distribution
    d = check.to_dict()
    assert d["out_of_distribution"] is True and d["mismatch_limit"] == MISMATCH_LIMIT
    # labels outside the grid (the network may answer there) are clipped, not an error
    assert grid_consistency(image, np.array([3000.0, 6.0, -4.0, -1.0]), simulator).residual_rms > 0


def _checkpoint(data: dict) -> Checkpoint:
    return Checkpoint(path="m.pt", kind="resnet", model=None, label_scaling=None,
                      temperature=None, data=data, training=None)


def test_which_grid_a_model_is_checked_against(tmp_path, monkeypatch):
    from photosphere.grids import presets

    embedded = tmp_path / "embedded.h5"
    embedded.write_bytes(b"embedded grid")
    other = tmp_path / "other.h5"
    other.write_bytes(b"another grid")
    monkeypatch.setattr(presets, "default_grid_path", lambda: embedded)
    # no record (every shipped model): the embedded grid
    assert model_grid(_checkpoint({})) == embedded
    # trained on an in-memory source: nothing to check against
    assert model_grid(_checkpoint({"grid": {"name": "ToySource", "sha256": None}})) is None
    # recorded and it is the embedded one
    rec = {"grid": {"name": "embedded.h5", "sha256": file_sha256(embedded)}}
    assert model_grid(_checkpoint(rec)) == embedded
    # recorded, another grid: not at hand unless given, and a wrong --grid is refused
    rec = {"grid": {"name": "other.h5", "sha256": file_sha256(other)}}
    assert model_grid(_checkpoint(rec)) is None
    assert model_grid(_checkpoint(rec), other) == other
    with pytest.raises(ModelError, match="another grid"):
        model_grid(_checkpoint(rec), embedded)
    with pytest.raises(ModelError, match="does not exist"):
        model_grid(_checkpoint(rec), tmp_path / "none.h5")
