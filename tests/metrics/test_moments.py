"""Per-intensity noise moments against hand-computed cases, and the skewness agreement."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.metrics.moments import MIN_PIXELS, IntensityMomentsAccumulator, skew_agreement


def test_moments_of_a_known_two_valued_noise():
    """Noise 0 on three pixels and 4 on one, all in one bin: mean 1, std sqrt(3), skewness 2/sqrt(3), kurtosis
    (3*1 + 81)/4 / 9 = 7/3; the other bins and channels are empty (count 0, NaN)."""
    clean = torch.full((1, 3, 2, 2), 40 / 255)  # bin [32, 64)
    noise = torch.zeros(1, 3, 2, 2)
    noise[0, :, 0, 0] = 4.0
    moments = IntensityMomentsAccumulator()
    moments.update(clean, noise)
    result = moments.result()
    assert result.count[0, 1] == 4 and result.count[0, 0] == 0 and result.count.sum() == 12
    assert math.isclose(result.mean[0, 1], 1.0)
    assert math.isclose(result.std[0, 1], math.sqrt(3.0))
    assert math.isclose(result.skewness[0, 1], 2 / math.sqrt(3.0), rel_tol=1e-12)
    assert math.isclose(result.kurtosis[0, 1], 7 / 3, rel_tol=1e-12)
    assert math.isnan(result.mean[0, 0]) and math.isnan(result.skewness[2, 7])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 4))
def test_moments_equal_the_direct_formulas_in_every_cell_and_merge_exactly(seed, parts):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(parts * 2, 3, 16, 16, generator=generator)
    noise = torch.randn(clean.shape, generator=generator).pow(3) * 5 - 1  # skewed, heavy-tailed
    whole, merged = IntensityMomentsAccumulator(), IntensityMomentsAccumulator()
    whole.update(clean, noise)
    for i in range(parts):
        part = IntensityMomentsAccumulator()
        part.update(clean[2 * i : 2 * i + 2], noise[2 * i : 2 * i + 2])
        merged.merge(part)
    result = whole.result()
    torch.testing.assert_close(merged.result().skewness, result.skewness, equal_nan=True)
    bins = (clean.double() * 255 // 32).long()
    for channel in range(3):
        for index in range(8):
            values = noise[:, channel].double()[bins[:, channel] == index]
            if len(values) < 3:
                continue
            centred = values - values.mean()
            assert math.isclose(result.mean[channel, index], values.mean(), rel_tol=1e-9, abs_tol=1e-9)
            variance = centred.square().mean()
            assert math.isclose(result.skewness[channel, index], centred.pow(3).mean() / variance**1.5,
                                rel_tol=1e-6, abs_tol=1e-9)
            assert math.isclose(result.kurtosis[channel, index], centred.pow(4).mean() / variance**2, rel_tol=1e-6)


def test_skew_agreement_counts_only_cells_with_enough_real_pixels():
    clean = torch.full((1, 3, 32, 32), 0.5)  # 1,024 pixels per channel, all in bin [96, 128)
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(clean.shape, generator=generator).exp()  # skewness about 6
    real_moments, same, gaussian = (IntensityMomentsAccumulator() for _ in range(3))
    real_moments.update(clean, real)
    same.update(clean, real.clone())
    gaussian.update(clean, torch.randn(clean.shape, generator=generator))
    assert real_moments.result().count[0, 3] >= MIN_PIXELS
    assert skew_agreement([real_moments.result()], [same.result()]) == 1.0
    assert skew_agreement([real_moments.result()], [gaussian.result()]) == 0.0
    few = IntensityMomentsAccumulator()
    few.update(clean[..., :4, :4], real[..., :4, :4])  # 16 pixels: no cell counts
    assert math.isnan(skew_agreement([few.result()], [few.result()]))
