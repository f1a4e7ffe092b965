"""What the package ships for the optical model: the calibrated emulator and the complete seed
of the training set it was made from (docs/grids.md)."""

from __future__ import annotations

import numpy as np
import pytest

from photosphere.grids import load, seed
from photosphere.grids.calibrated import CalibratedModel
from photosphere.grids.training_set import TRAINING_PRESETS

pytestmark = pytest.mark.skipif(not (load.DATA_DIR / load.SHIPPED_MODELS["optical"]).is_file(),
                                reason="this installation does not carry the optical emulator")


def test_the_shipped_optical_model_covers_the_box_and_is_calibrated_on_real_stars():
    model = load.load_grid_model("optical")
    assert isinstance(model, CalibratedModel)
    assert model.label_names == ("teff", "logg", "feh", "alpha", "vmic")
    assert model.bounds["teff"][0] <= 3810 and model.bounds["teff"][1] >= 7480
    assert model.bounds["logg"][0] <= 0.05 and model.bounds["feh"][0] <= -3.9
    wave = np.asarray(model.wavelength)
    for line in (4861.3, 5172.7, 5889.95, 6562.8):  # Hβ, Mg b, Na D2, Hα (air)
        assert np.min(np.abs(wave - line)) < 0.05, line
    stars = model.calibration.star_names
    assert len(stars) >= 10 and any("Procyon" in s for s in stars)
    assert 0.0 < model.model_mask.mean() < 0.2  # some pixels masked, most kept
    offsets = model.calibration.offsets  # the [Fe/H] zero point was measured, leave-one-out
    assert offsets.shape == (len(stars), len(stars)) and np.isfinite(offsets).mean() > 0.9
    assert model.zero_point == pytest.approx(model.calibration.zero_point) != 0.0
    # the Sun: deep Hα and Mg b, flux between 0 and the continuum
    sun = np.asarray(model.predict([[5772.0, 4.44, 0.0, 0.0, 1.0]]))[0]
    assert np.all(np.isfinite(sun)) and sun.min() > 0.0 and sun.max() < 1.05
    assert sun[np.argmin(np.abs(wave - 6562.8))] < 0.4
    assert sun[np.argmin(np.abs(wave - 5183.6))] < 0.3


def test_the_shipped_seed_is_the_complete_optical_training_set():
    spec_json, nodes = seed.read_seed(seed.seed_path("optical"))
    spec = TRAINING_PRESETS["optical"]()
    assert spec_json == spec.to_json()
    assert len(nodes) == spec.n_samples
    assert sum(not n.missing for n in nodes) >= 0.9 * spec.n_samples
