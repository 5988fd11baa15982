"""Latent correlation: exact unit marginals everywhere, the covariance it claims (one filter, or one per grid
phase), and a fit that recovers a known correlation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.conditions import Condition, grid_positions
from nmflowgan.models.correlation import (
    LatentCorrelation,
    content_classes,
    label_pairs,
    lag_correlation,
    lag_products,
    phase_lag_correlation,
    phase_of,
)


def _busy(kernel_px, feature_dim=4, seed=0, grid_px=0):
    torch.manual_seed(seed)
    layer = LatentCorrelation(kernel_px, feature_dim, grid_px=grid_px)
    torch.nn.init.normal_(layer.net[-1].bias, std=0.5)
    torch.nn.init.normal_(layer.net[-1].weight, std=0.5)
    return layer


def _cond(features, grid=None):
    return Condition(torch.full((features.shape[0],), -1), features, grid)


@pytest.mark.parametrize("grid_px", [0, 2])
def test_starts_as_the_identity(grid_px):
    layer = LatentCorrelation(5, 3, grid_px=grid_px)
    z = torch.randn(2, 3, 9, 11)
    assert torch.allclose(layer(z, _cond(torch.rand(2, 3))), z, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(kernel_px=st.sampled_from([1, 3, 5]), height=st.integers(1, 6), width=st.integers(1, 6),
       seed=st.integers(0, 1000), grid_px=st.sampled_from([0, 2]), top=st.integers(0, 7), left=st.integers(0, 7))
def test_every_output_value_has_unit_variance_borders_included(kernel_px, height, width, seed, grid_px, top, left):
    # The map is linear in z, so the variance of output p under white z is the squared norm of its Jacobian row.
    layer = _busy(kernel_px, seed=seed, grid_px=grid_px).double()
    cond = _cond(torch.rand(2, 4, dtype=torch.float64), grid_positions(2, height, width, top, left))
    z = torch.zeros(2, 3, height, width, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: layer(x, cond), z)  # (2, 3, H, W, 2, 3, H, W)
    rows = jacobian.reshape(2 * 3 * height * width, -1)
    assert torch.allclose(rows.square().sum(1), torch.ones(rows.shape[0], dtype=torch.float64), atol=1e-10)


def test_lag_products_hand_computed():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # (1, 1, 1, 3)
    products = lag_products(x, 1)[0, 0, 0, 1]  # dy = 0, dx = -1, 0, 1
    assert products.tolist() == pytest.approx([1 * 2 + 2 * 3, 1 + 4 + 9, 2 * 1 + 3 * 2])
    y = torch.tensor([[[[1.0, 0.0, -1.0]]]])
    # sum_p x(p) y(p + d): d = -1 pairs x1 y0 and x2 y1; d = +1 pairs x0 y1 and x1 y2
    assert lag_products(x, 1, y)[0, 0, 0, 1].tolist() == pytest.approx([2 * 1 + 3 * 0, 1 - 3, 1 * 0 + 2 * -1])


def test_phase_lag_correlation_hand_computed():
    # One row of 4 pixels, phases by column parity; channel 0 is [1, 2, -1, -2] (the others zero), so per phase the
    # standardized values are even columns [1, -1] / 1 and odd columns [2, -2] / 2 = [1, -1].
    z = torch.zeros(1, 3, 1, 4)
    z[0, 0, 0] = torch.tensor([1.0, 2.0, -1.0, -2.0])
    phase = phase_of(grid_positions(1, 1, 4), 2)
    result = phase_lag_correlation(z, phase, 4, 1)[0, :, 0, 0, 1]  # (phases, dx = -1, 0, 1) at dy = 0
    even, odd = result[0], result[1]  # phases (0, 0) and (0, 1)
    # even pixels 0 and 2: value [1, -1]; right neighbours [1, -1] (both), left neighbour only of pixel 2: 1
    assert even.tolist() == pytest.approx([(-1 * 1) / 1, 1.0, (1 * 1 + -1 * -1) / 2])
    assert odd.tolist() == pytest.approx([(1 * 1 + -1 * -1) / 2, 1.0, (1 * -1) / 1])


def test_pixel_pairs_counted_by_label_pairs_are_those_phase_lag_correlation_counts():
    # The content loss counts the pairs once, by label_pairs, and hands them over: the same correlation.
    z, label = torch.randn(3, 3, 12, 10), torch.randint(6, (3, 12, 10))
    counted = label_pairs(label, 6, 2).sum(2)
    assert torch.allclose(phase_lag_correlation(z, label, 6, 2, counted), phase_lag_correlation(z, label, 6, 2),
                          atol=1e-5)


@pytest.mark.parametrize("grid_px", [0, 2])
def test_claimed_covariance_matches_the_empirical_one(grid_px):
    layer = _busy(3, grid_px=grid_px)
    features = torch.rand(1, 4)
    grid = grid_positions(128, 48, 48)
    with torch.no_grad():
        out = layer(torch.randn(128, 3, 48, 48), _cond(features.expand(128, 4), grid))[:, :, 4:-4, 4:-4]
        if grid_px:
            empirical = phase_lag_correlation(out, phase_of(grid[:, :, 4:-4, 4:-4], 2), 4, 2).mean(0)
        else:
            empirical = lag_correlation(out, 2).mean(0)[None]
        claimed = layer.covariance(features, 2)[0]
    assert claimed.shape == (max(grid_px, 1) ** 2, 3, 3, 5, 5)
    assert (empirical - claimed).abs().max() < 0.015
    assert claimed[:, range(3), range(3), 2, 2].flatten().tolist() == pytest.approx([1.0] * 3 * claimed.shape[0],
                                                                                     abs=1e-5)


def test_phase_filters_give_each_phase_its_own_correlation():
    layer = _busy(3, grid_px=2, seed=3)
    covariance = layer.covariance(torch.rand(1, 4), 1)[0]  # (4, 3, 3, 3, 3)
    right = covariance[:, 0, 0, 1, 2]  # red with its right neighbour, per phase
    assert (right.max() - right.min()) > 0.05


@pytest.mark.parametrize("grid_px", [0, 2])
def test_the_loss_recovers_a_known_correlation(grid_px):
    truth = _busy(3, seed=7, grid_px=grid_px)
    cond = _cond(torch.zeros(16, 4), grid_positions(16, 32, 32))
    learner = LatentCorrelation(3, 4, grid_px=grid_px)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        with torch.no_grad():
            real = truth(torch.randn(16, 3, 32, 32, generator=generator), cond)
        loss = learner.loss(real, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features = cond.features[:1]
    with torch.no_grad():
        error = (learner.covariance(features, 2) - truth.covariance(features, 2)).abs().max()
        start = (LatentCorrelation(3, 4, grid_px=grid_px).covariance(features, 2)
                 - truth.covariance(features, 2)).abs().max()
    assert error < 0.05 < start


def _edges(batch, size=32, seed=0):
    """Clean images in [0, 1] with flat areas and edges both ways: random rectangles on a flat background."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.full((batch, 3, size, size), 0.5)
    for b in range(batch):
        for _ in range(8):
            y0, x0 = torch.randint(0, size - 4, (2,), generator=generator).tolist()
            h, w = torch.randint(3, size // 2, (2,), generator=generator).tolist()
            clean[b, :, y0 : y0 + h, x0 : x0 + w] = torch.rand(1, generator=generator).item()
    return clean


def test_content_classes_hand_computed():
    flat = torch.full((1, 3, 5, 6), 0.4)
    assert content_classes(flat).eq(0).all()
    step = flat.clone()
    step[..., 3:] = 0.6  # a change from left to right between columns 2 and 3: about 51 levels
    classes = content_classes(step)[0]
    assert classes[:, 2:4].eq(1).all() and classes[:, [0, 1, 4, 5]].eq(0).all()
    assert content_classes(step.transpose(-2, -1))[0].eq(classes.T * 2).all()  # turned: a change down the rows
    faint = flat.clone()
    faint[..., 3:] += 3 / 255  # central difference 1.5 levels: still flat
    assert content_classes(faint).eq(0).all()


@settings(max_examples=8, deadline=None)
@given(kernel_px=st.sampled_from([1, 3]), height=st.integers(2, 6), width=st.integers(2, 6), seed=st.integers(0, 99),
       grid_px=st.sampled_from([0, 2]))
def test_content_filters_keep_every_output_value_standard_normal(kernel_px, height, width, seed, grid_px):
    torch.manual_seed(seed)
    layer = LatentCorrelation(kernel_px, 4, grid_px=grid_px, content=True).double()
    torch.nn.init.normal_(layer.net[-1].weight, std=0.5)
    torch.nn.init.normal_(layer.net[-1].bias, std=0.5)
    clean = torch.rand(2, 3, height, width, dtype=torch.float64)
    assert content_classes(clean).unique().numel() > 1 or height * width < 6
    cond = _cond(torch.rand(2, 4, dtype=torch.float64), grid_positions(2, height, width))
    z = torch.zeros(2, 3, height, width, dtype=torch.float64)
    rows = torch.autograd.functional.jacobian(lambda x: layer(x, cond, clean), z).reshape(2 * 3 * height * width, -1)
    assert torch.allclose(rows.square().sum(1), torch.ones(rows.shape[0], dtype=torch.float64), atol=1e-10)


def test_content_filters_imply_the_covariance_each_class_shows():
    torch.manual_seed(1)
    layer = LatentCorrelation(3, 4, grid_px=2, content=True)
    torch.nn.init.normal_(layer.net[-1].bias, std=0.5)
    features = torch.rand(1, 4).expand(256, 4)
    clean, grid = _edges(256, 40), grid_positions(256, 40, 40)
    cond = _cond(features, grid)
    with torch.no_grad():
        out = layer(torch.randn(256, 3, 40, 40), cond, clean)[:, :, 4:-4, 4:-4]
        label = layer.labels(cond, clean, torch.empty(256, 3, 40, 40))[:, 4:-4, 4:-4]
        empirical = phase_lag_correlation(out, label, layer.phases, 2)
        implied, share = layer.implied_covariance(features, label, 2)
    weight = share[:, :, None, None, None, None]  # pool the samples by how many pixels each label has in each
    pooled = lambda x: (x * weight).sum(0) / weight.sum(0).clamp_min(1e-9)  # noqa: E731
    common = share.sum(0) > 5  # labels with enough pixels over the batch (five images' worth)
    assert common.sum() == 12, share.sum(0)  # every phase and class
    assert (pooled(empirical) - pooled(implied))[common].abs().max() < 0.05
    # the classes' filters differ, so what a flat pixel and an edge pixel see differs
    assert (implied[:, 0] - implied[:, 1]).abs().max() > 0.1
    with pytest.raises(ValueError, match="needs the clean image"):
        layer(torch.randn(1, 3, 8, 8), _cond(torch.rand(1, 4), grid_positions(1, 8, 8)))


def test_the_loss_recovers_a_known_content_aware_correlation():
    torch.manual_seed(7)
    truth = LatentCorrelation(3, 4, content=True)
    torch.nn.init.normal_(truth.net[-1].bias, std=0.5)
    cond = _cond(torch.zeros(16, 4))
    learner = LatentCorrelation(3, 4, content=True)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(300):
        clean = _edges(16, 32, seed=step)
        with torch.no_grad():
            real = truth(torch.randn(16, 3, 32, 32, generator=generator), cond, clean)
        loss = learner.loss(real, cond, clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # what the filters imply on images neither saw: a class's own covariance at lags its neighbours share, the
    # cross terms elsewhere (an edge pixel's filter at lags across its thin edge is seen only through its mix)
    clean, features = _edges(64, 32, seed=1000), cond.features[:1].expand(64, 4)
    label = learner.labels(_cond(features), clean, clean)
    with torch.no_grad():
        target, share = truth.implied_covariance(features, label, 2)
        fitted = learner.implied_covariance(features, label, 2)[0]
        start = LatentCorrelation(3, 4, content=True).implied_covariance(features, label, 2)[0]
    weight = share[:, :, None, None, None, None]
    error = ((fitted - target).abs() * weight).sum(0) / weight.sum(0)
    untrained = ((start - target).abs() * weight).sum(0) / weight.sum(0)
    assert error.max() < 0.1 < 0.3 < untrained.max()  # every label within 0.1 where the untrained filter is 0.3 off
    assert error.mean() < untrained.mean() / 5
