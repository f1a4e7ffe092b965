"""Labels tied to others by empirical relations (grids.tied_labels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModel
from photosphere.errors import ModelError
from photosphere.grids.tied_labels import TiedLabels, alpha_trend, vmic_relation


def test_the_vmic_relation_gives_the_published_values():
    # Bruntt et al. 2010 at the Sun: 1.01 km/s; Holtzman et al. 2015 at log g 1: 2.15 km/s
    assert vmic_relation(5700.0, 4.4) == pytest.approx(1.01)
    assert vmic_relation(4500.0, 1.0) == pytest.approx(2.478 - 0.325)
    mid = vmic_relation(5000.0, 3.25)
    assert min(vmic_relation(5000.0, 3.0), vmic_relation(5000.0, 3.5)) <= mid
    assert mid <= max(vmic_relation(5000.0, 3.0), vmic_relation(5000.0, 3.5))
    t = torch.tensor([5700.0, 4500.0])
    np.testing.assert_allclose(vmic_relation(t, torch.tensor([4.4, 1.0])).numpy(),
                               [1.01, 2.153])


def test_the_alpha_trend_is_the_marcs_standard_composition():
    np.testing.assert_allclose(alpha_trend(np.array([0.3, 0.0, -0.5, -1.0, -3.0])),
                               [0.0, 0.0, 0.2, 0.4, 0.4])
    assert alpha_trend(torch.tensor([-0.25])).item() == pytest.approx(0.1)


def test_the_wrapper_drops_vmic_and_predicts_at_the_relation():
    base = AnalyticModel(label_names=("teff", "logg", "feh", "vmic"))
    model = TiedLabels(base, ("vmic",))
    assert model.label_names == ("teff", "logg", "feh")
    assert "vmic" not in model.bounds
    x = torch.tensor([[5700.0, 4.4, 0.0], [6000.0, 4.0, -0.5]])
    full = model.full_labels(x)
    assert full.shape == (2, 4)
    np.testing.assert_allclose(model.predict(x).numpy(), base.predict(full).numpy())
    assert full[0, 3].item() == pytest.approx(1.01)
    with pytest.raises(ModelError, match="vmic"):
        TiedLabels(AnalyticModel(), ("vmic",))


def test_alpha_and_vmic_tied_together_keep_the_base_order():
    base = AnalyticModel(label_names=("teff", "logg", "feh", "alpha", "vmic"))
    model = TiedLabels(base, ("alpha", "vmic"))
    assert model.label_names == ("teff", "logg", "feh")
    full = model.full_labels(torch.tensor([5000.0, 2.0, -2.0]))
    np.testing.assert_allclose(full.numpy(), [5000.0, 2.0, -2.0, 0.4,
                                              vmic_relation(5000.0, 2.0)])
    with pytest.raises(ModelError, match="no relation"):
        TiedLabels(base, ("teff",))
    with pytest.raises(ModelError, match="feh"):
        TiedLabels(AnalyticModel(label_names=("teff", "logg", "alpha")), ("alpha",))
