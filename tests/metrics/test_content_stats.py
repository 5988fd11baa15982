"""Flat-vs-edge noise statistics against hand-computed cases."""

import math

import pytest
import torch

from nmflowgan.metrics.content_stats import BINS, ContentStatsAccumulator, content_errors


def test_flat_and_edge_pixels_hand_computed():
    # One row, one channel used: clean 100 100 100 150 (8-bit), so pixels 0 and 1 are flat (gradient 0) and pixel 2
    # an edge (gradient 50); pixel 3 has no right neighbour. Noise 1 -1 2 -2 (already zero-mean).
    clean = torch.zeros(1, 3, 1, 4)
    clean[0, 0, 0] = torch.tensor([100.0, 100.0, 100.0, 150.0]) / 255
    noise = torch.zeros(1, 3, 1, 4)
    noise[0, 0, 0] = torch.tensor([1.0, -1.0, 2.0, -2.0])
    accumulator = ContentStatsAccumulator()
    accumulator.update(clean, noise)
    stats = accumulator.result()
    level = int(100 * BINS / 256)
    assert stats.count[0, 0, level] == 2 and stats.count[1, 0, level] == 1
    assert stats.std[0, 0, level] == pytest.approx(math.sqrt((1 + 1) / 2))  # left values 1, -1
    assert stats.r1[0, 0, level] == pytest.approx((1 * -1 + -1 * 2) / math.sqrt((1 + 1) * (1 + 4)))
    assert stats.r1[1, 0, level] == pytest.approx(2 * -2 / math.sqrt(4 * 4))
    # channels 1 and 2: clean 0 everywhere, so flat, in bin 0, with zero noise
    assert stats.count[0, 1, 0] == 3 and stats.std[0, 1, 0] == 0


def test_errors_compare_cells_with_enough_pixels_only():
    generator = torch.Generator().manual_seed(0)
    clean = torch.full((8, 3, 32, 32), 0.5)
    clean[..., 16:] = torch.rand(8, 3, 32, 16, generator=generator)  # busy right half: edges
    real = torch.randn(8, 3, 32, 32, generator=generator) * 4
    smooth = (real + real.roll(1, -1)) / 2 ** 0.5  # the same std, lag-1 correlation about 0.5
    a, b = ContentStatsAccumulator(), ContentStatsAccumulator()
    a.update(clean, real)
    b.update(clean, smooth)
    same = content_errors(a.result(), a.result())
    assert same == {"content_r1_error": 0.0, "content_std_error": 0.0}
    errors = content_errors(a.result(), b.result())
    assert 0.4 < errors["content_r1_error"] < 0.6 and errors["content_std_error"] < 0.05
    empty = ContentStatsAccumulator()
    empty.update(clean[:1, :, :2, :3], real[:1, :, :2, :3])
    assert math.isnan(content_errors(empty.result(), empty.result())["content_r1_error"])
