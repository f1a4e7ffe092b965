"""The emulated APOGEE data set: the emulator reproduces The Payne's formula, noise and masks
are as documented, and a Cannon trained on it recovers labels."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from photosphere.datasets import apogee_emulated as ae
from photosphere.errors import MissingFileError, OutOfGridError
from photosphere.models.cannon import CannonModel


@pytest.fixture(scope="module")
def data_dir():
    return shared_file("apogee/payne/NN_normalized_spectra.npz").parents[2]


def test_emulator_matches_the_payne_formula(data_dir):
    em = ae.PayneEmulator.load(data_dir)
    labels = np.array([4800.0, 4.5, -0.1, 0.1, 5.0])
    d = np.load(data_dir / "apogee/payne/NN_normalized_spectra.npz")
    x = (labels - d["x_min"]) / (d["x_max"] - d["x_min"]) - 0.5
    inside = np.einsum("ijk,k->ij", d["w_array_0"], x) + d["b_array_0"]
    ref = np.einsum("ij,ij->i", d["w_array_1"], 1 / (1 + np.exp(-inside))) + d["b_array_1"]
    np.testing.assert_allclose(em.predict(labels), ref, rtol=1e-5)
    assert em.wavelength.shape == (7214,)
    assert 15100 < em.wavelength[0] < em.wavelength[-1] < 17000
    with pytest.raises(OutOfGridError, match="outside the emulator's valid box"):
        em.predict(np.array([4286.0, 1.66, -0.52, 0.2, 5.0]))   # Arcturus: a giant


def test_noise_and_masks_are_apogee_like(data_dir):
    data = ae.make_apogee_like(60, seed=3, data_dir=data_dir)
    assert data.flux.shape == (60, 7214) and data.labels.shape == (60, 5)
    assert np.all((data.snr >= 50) & (data.snr <= 200))
    assert np.all(data.ivar[data.mask] == 0) and np.all(data.ivar[~data.mask] > 0)
    assert 0.005 < data.mask.mean() < 0.05
    clean = ae.PayneEmulator.load(data_dir).predict(data.labels)
    pull = ((data.flux - clean) * np.sqrt(data.ivar))[~data.mask]
    assert abs(np.std(pull) - 1) < 0.01
    for name, (lo, hi) in ae.CANNON_BOX.items():
        k = ae.LABEL_NAMES.index(name)
        assert lo <= data.labels[:, k].min() and data.labels[:, k].max() <= hi


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="PHOTOSPHERE_SHARED_DATA"):
        ae.payne_file("NN_normalized_spectra.npz", tmp_path)


@pytest.mark.slow
def test_cannon_recovers_emulated_labels(data_dir):
    train = ae.make_apogee_like(400, seed=1, data_dir=data_dir)
    test = ae.make_apogee_like(100, seed=2, data_dir=data_dir, snr=(100, 200))
    model = CannonModel(ae.LABEL_NAMES).fit(train.labels, train.flux, train.ivar,
                                            train.wavelength)
    fit = model.infer_labels(test.flux, test.ivar, wavelength=test.wavelength)
    scatter = np.std(fit.labels - test.labels, axis=0)
    assert scatter[0] < 60 and scatter[2] < 0.04, scatter
