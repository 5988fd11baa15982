"""Noise by place in the 2x2 and 8x8 grids, against hand-computed cases."""

import pytest
import torch

from nmflowgan.metrics.grid_stats import GridStats, GridStatsAccumulator, grid_errors
from nmflowgan.metrics.realism import Realism, RealismScorer


def _stats(noise: torch.Tensor) -> GridStats:
    accumulator = GridStatsAccumulator()
    accumulator.update(noise)
    return accumulator.result()


def test_a_2x2_pattern_of_signs_gives_each_phase_its_std_and_correlation():
    # +-a at phase (0, 0), +-b at (0, 1), +-c at (1, 0) and (1, 1), the sign alternating every two columns, so
    # that every patch and channel has mean zero: a row reads a, b, -a, -b, a, b, ...
    a, b, c = 4.0, 2.0, 1.0
    sign = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(4)  # 16 columns
    row0 = torch.tensor([a if x % 2 == 0 else b for x in range(16)]) * sign
    row1 = torch.full((16,), c) * sign
    noise = torch.stack([row0, row1] * 8)[None, None].repeat(1, 3, 1, 1)  # (1, 3, 16, 16)
    stats = _stats(noise)
    assert stats.phase_std[0].flatten().tolist() == pytest.approx([a, b, c, c])
    # r1 at phase (0, 0): pairs (a, b) with the same sign: E[ab] / sqrt(E[a^2] E[b^2]) = 1; at (0, 1): pairs (b, -a)
    # except the last column's, which has no right neighbour: -1
    assert stats.phase_r1[0, 0].tolist() == pytest.approx([1.0, -1.0])
    assert stats.phase_r1[0, 1, 0] == pytest.approx(1.0) and stats.phase_r1[0, 1, 1] == pytest.approx(-1.0)
    # the 8x8 grid sees the same two rows and columns: CV of [a, b, a, b, ...; c, c, ...]
    values = torch.tensor([a, b] * 4 * 4 + [c] * 32)
    assert stats.block_cv[0] == pytest.approx(float(values.std(unbiased=False) / values.mean()))


def test_noise_that_ignores_the_grids_scores_zero_error_against_itself_and_a_flat_copy_scores_the_real_spread():
    generator = torch.Generator().manual_seed(0)
    scale = torch.ones(1, 1, 16, 16)
    scale[..., 0::8, :] = 2.0  # block-edge rows noisier, as JPEG makes them
    scale[..., 0::2, 0::2] *= 1.5
    real = torch.randn(64, 3, 16, 16, generator=generator) * scale
    flat = torch.randn(64, 3, 16, 16, generator=generator) * float(scale.square().mean().sqrt())
    real_stats, flat_stats = _stats(real), _stats(flat)
    assert grid_errors(real_stats, real_stats) == {"phase_std_error": 0.0, "phase_r1_error": 0.0, "block_cv_error": 0.0}
    errors = grid_errors(real_stats, flat_stats)
    assert errors["phase_std_error"] > 0.15 and errors["block_cv_error"] > 0.2
    assert float(flat_stats.block_cv.max()) < 0.1 < float(real_stats.block_cv.min())


def test_the_scorer_reports_grid_errors_and_they_survive_json():
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(4, 3, 16, 16, generator=generator)
    clean[..., :12] = 0.5  # flat: enough pixels (>= 500) for the flat/edge cells
    real = torch.randn(4, 3, 16, 16, generator=generator) * 5
    scorer = RealismScorer(["same", "flat"])
    scorer.update(clean, real, {"same": real.clone(), "flat": torch.randn(4, 3, 16, 16, generator=generator) * 5},
                  [("S6", 800.0)] * 4)
    realism = scorer.result()
    assert realism.grid_errors["same"] == {"phase_std_error": 0.0, "phase_r1_error": 0.0, "block_cv_error": 0.0}
    assert realism.grid_errors["flat"]["phase_std_error"] > 0
    assert realism.grid_sources["same"] == realism.grid_real != realism.grid_sources["flat"]
    assert realism.content_errors["same"] == {"content_r1_error": 0.0, "content_std_error": 0.0}
    again = Realism.from_dict(realism.to_dict())
    assert again.grid_errors == realism.grid_errors and again.grid_real == realism.grid_real
    assert again.grid_sources == realism.grid_sources and again.content_real == realism.content_real
    old = realism.to_dict()
    del old["grid"], old["content"]  # results.json written before the grid and content statistics
    assert Realism.from_dict(old).grid_errors == {} and Realism.from_dict(old).content_errors == {}
