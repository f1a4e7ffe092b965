"""Free/fixed parameter packing and scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photosphere.errors import FitError, OutOfGridError
from photosphere.infer.parameters import Parameters

NAMES = ("teff", "logg", "feh", "vsini", "rv_0", "rv_1")
BOUNDS = {"teff": (4000.0, 7000.0), "logg": (3.0, 5.0), "feh": (-1.0, 0.5),
          "vsini": (0.0, 50.0), "rv_0": (-100.0, 100.0), "rv_1": (-100.0, 100.0)}


def test_round_trip_free_and_fixed():
    p = Parameters(NAMES, BOUNDS, fixed={"logg": 4.4, "rv": 3.0})
    assert p.free == ("teff", "feh", "vsini")
    assert p.fixed == {"logg": 4.4, "rv_0": 3.0, "rv_1": 3.0}
    free = np.array([[5800.0, -0.2, 7.0], [4100.0, 0.4, 0.0]])
    u = p.scale(free)
    assert np.all((u >= 0) & (u <= 1))
    theta = p.theta(torch.as_tensor(u)).numpy()
    np.testing.assert_allclose(theta[0], [5800.0, 4.4, -0.2, 7.0, 3.0, 3.0])
    np.testing.assert_allclose(theta, p.theta_from_free(free))


def test_theta_is_differentiable_and_stays_inside_bounds():
    p = Parameters(NAMES, BOUNDS)
    u = torch.tensor([1.0 + 1e-15, 0.5, 0.0, 0.2, 0.5, 0.5], dtype=torch.float64,
                     requires_grad=True)
    theta = p.theta(u)
    assert float(theta[0].detach()) <= 7000.0
    theta[1].backward()
    assert float(u.grad[1]) == pytest.approx(2.0)


def test_fixed_outside_bounds_and_unknown_names_are_errors():
    with pytest.raises(OutOfGridError, match="teff=9000"):
        Parameters(NAMES, BOUNDS, fixed={"teff": 9000.0})
    with pytest.raises(FitError, match="alpha"):
        Parameters(NAMES, BOUNDS, fixed={"alpha": 0.0})
    with pytest.raises(FitError, match="at least one free"):
        Parameters(NAMES[:1], BOUNDS, fixed={"teff": 5000.0})


def test_in_bounds():
    p = Parameters(NAMES[:2], BOUNDS)
    assert p.in_bounds([[5000.0, 4.0], [3999.0, 4.0]]).tolist() == [True, False]
