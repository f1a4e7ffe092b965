"""Gaussian heads and NLL against torch.distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from photosphere.errors import ModelError
from photosphere.nn.losses import (
    average_gaussians,
    covariance_from_tril,
    gaussian_nll,
    head_size,
    raw_to_gaussian,
)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_nll_equals_multivariate_normal_log_prob(covariance):
    g = torch.Generator().manual_seed(1)
    k, b = 4, 16
    raw = torch.randn(b, head_size(k, covariance), generator=g, dtype=torch.float64)
    target = torch.randn(b, k, generator=g, dtype=torch.float64)
    mu, tril = raw_to_gaussian(raw, k, covariance)
    expected = -MultivariateNormal(mu, scale_tril=tril).log_prob(target)
    torch.testing.assert_close(gaussian_nll(mu, tril, target, reduction="none"), expected)
    torch.testing.assert_close(gaussian_nll(mu, tril, target), expected.mean())


def test_head_sizes_and_structure():
    assert head_size(4, "diagonal") == 8
    assert head_size(4, "full") == 14
    raw = torch.randn(3, 14)
    mu, tril = raw_to_gaussian(raw, 4, "full")
    assert mu.shape == (3, 4) and tril.shape == (3, 4, 4)
    assert torch.all(torch.triu(tril, diagonal=1) == 0)
    assert torch.all(torch.diagonal(tril, dim1=-2, dim2=-1) > 0)
    # off-diagonal terms come through unchanged: a full covariance is really full
    assert torch.any(torch.tril(tril, diagonal=-1) != 0)
    _, diag = raw_to_gaussian(torch.randn(3, 8), 4, "diagonal")
    assert torch.all(diag - torch.diag_embed(torch.diagonal(diag, dim1=-2, dim2=-1)) == 0)


def test_full_covariance_positive_definite_for_extreme_raw():
    raw = torch.tensor([[0.0] * 4 + [-50.0, 30.0, -50.0, 20.0, 10.0, -50.0, 1, 2, 3, -50.0]])
    _, tril = raw_to_gaussian(raw, 4, "full")
    eig = torch.linalg.eigvalsh(covariance_from_tril(tril).double())
    assert torch.all(eig > 0)


def test_bad_inputs_raise():
    with pytest.raises(ModelError, match="covariance='banana'"):
        head_size(4, "banana")
    with pytest.raises(ModelError, match="expected 8"):
        raw_to_gaussian(torch.zeros(2, 7), 4, "diagonal")
    with pytest.raises(ModelError, match="target shape"):
        gaussian_nll(torch.zeros(2, 4), torch.eye(4).expand(2, 4, 4), torch.zeros(2, 3))


def test_average_gaussians_moments():
    mu1, mu2 = torch.zeros(1, 2), torch.ones(1, 2)
    t1 = torch.diag_embed(torch.tensor([[1.0, 2.0]]))
    t2 = torch.diag_embed(torch.tensor([[3.0, 2.0]]))
    mu, tril = average_gaussians([mu1, mu2], [t1, t2])
    torch.testing.assert_close(mu, torch.full((1, 2), 0.5))
    torch.testing.assert_close(covariance_from_tril(tril),
                               torch.diag_embed(torch.tensor([[5.0, 4.0]])))
