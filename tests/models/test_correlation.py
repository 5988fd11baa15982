"""Latent correlation: exact unit marginals everywhere, the covariance it claims, and a fit that recovers
a known correlation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.models.correlation import LatentCorrelation, lag_correlation, lag_products


def _busy(kernel_px, feature_dim=4, seed=0):
    torch.manual_seed(seed)
    layer = LatentCorrelation(kernel_px, feature_dim)
    torch.nn.init.normal_(layer.net[-1].bias, std=0.5)
    torch.nn.init.normal_(layer.net[-1].weight, std=0.5)
    return layer


def test_starts_as_the_identity():
    layer = LatentCorrelation(5, 3)
    z = torch.randn(2, 3, 9, 11)
    assert torch.allclose(layer(z, torch.rand(2, 3)), z, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(kernel_px=st.sampled_from([1, 3, 5]), height=st.integers(1, 6), width=st.integers(1, 6),
       seed=st.integers(0, 1000))
def test_every_output_value_has_unit_variance_borders_included(kernel_px, height, width, seed):
    # The map is linear in z, so the variance of output p under white z is the squared norm of its Jacobian row.
    layer = _busy(kernel_px, seed=seed).double()
    features = torch.rand(2, 4, dtype=torch.float64)
    z = torch.zeros(2, 3, height, width, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: layer(x, features), z)  # (2, 3, H, W, 2, 3, H, W)
    rows = jacobian.reshape(2 * 3 * height * width, -1)
    assert torch.allclose(rows.square().sum(1), torch.ones(rows.shape[0], dtype=torch.float64), atol=1e-10)


def test_lag_products_hand_computed():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # (1, 1, 1, 3)
    products = lag_products(x, 1)[0, 0, 0, 1]  # dy = 0, dx = -1, 0, 1
    assert products.tolist() == pytest.approx([1 * 2 + 2 * 3, 1 + 4 + 9, 2 * 1 + 3 * 2])


def test_claimed_covariance_matches_the_empirical_one():
    layer = _busy(3)
    features = torch.rand(1, 4)
    with torch.no_grad():
        out = layer(torch.randn(128, 3, 48, 48), features.expand(128, 4))
        empirical = lag_correlation(out[:, :, 3:-3, 3:-3], 2).mean(0)
        claimed = layer.covariance(features, 2)[0]
    assert (empirical - claimed).abs().max() < 0.01
    assert claimed[range(3), range(3), 2, 2].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_the_loss_recovers_a_known_correlation():
    truth = _busy(3, seed=7)
    features = torch.zeros(16, 4)
    learner = LatentCorrelation(3, 4)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        with torch.no_grad():
            real = truth(torch.randn(16, 3, 32, 32, generator=generator), features)
        loss = learner.loss(real, features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        error = (learner.covariance(features[:1], 2) - truth.covariance(features[:1], 2)).abs().max()
        start = (LatentCorrelation(3, 4).covariance(features[:1], 2) - truth.covariance(features[:1], 2)).abs().max()
    assert error < 0.05 < start
