"""The ForwardModel protocol and label-bound checks."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from analytic_model import AnalyticModel
from photosphere.errors import ModelError, OutOfGridError
from photosphere.model import ForwardModel, check_labels_in_bounds, check_model

BOUNDS = {"teff": (3500.0, 9750.0), "logg": (0.0, 5.0), "feh": (-2.5, 0.5)}


def test_analytic_model_satisfies_protocol():
    model = AnalyticModel(5000, 5010, n_lines=3)
    assert isinstance(model, ForwardModel)
    assert check_model(model) is model


def test_check_model_names_what_is_missing():
    class Half:
        label_names = ("teff",)
        bounds: ClassVar = {"teff": (3000.0, 4000.0)}

    with pytest.raises(ModelError, match="wavelength, medium, predict"):
        check_model(Half())


def test_check_model_requires_bounds_for_every_label():
    model = AnalyticModel(5000, 5010, n_lines=3)
    model.bounds = {"teff": (4000.0, 7000.0)}
    with pytest.raises(ModelError, match="logg"):
        check_model(model)


def test_out_of_grid_message_names_value_range_and_fix():
    with pytest.raises(OutOfGridError) as err:
        check_labels_in_bounds({"teff": 2500.0, "logg": 4.0}, BOUNDS)
    assert str(err.value) == ("teff=2500 is outside the grid (3500-9750 K); pass a grid that "
                              "covers it or fix teff")


def test_array_labels_checked_row_by_row():
    rows = np.array([[5000.0, 4.0, 0.0], [6000.0, 5.5, 0.0]])
    with pytest.raises(OutOfGridError, match=r"logg=5.5 is outside the grid \(0-5 dex\)"):
        check_labels_in_bounds(rows, BOUNDS, ("teff", "logg", "feh"))
    check_labels_in_bounds(rows[:1], BOUNDS, ("teff", "logg", "feh"))


def test_inclusive_bounds_and_unknown_labels_ignored():
    check_labels_in_bounds({"teff": 3500.0, "logg": 5.0, "vsini": 1e4}, BOUNDS)


def test_array_labels_need_names():
    with pytest.raises(ModelError, match="label_names"):
        check_labels_in_bounds(np.zeros(3), BOUNDS)
