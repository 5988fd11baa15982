"""Metric values against hand-computed cases, the protocol's bins pinned, invariances, and baseline fits."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.baselines import GaussianNoise, HeteroscedasticNoise
from nmflowgan.errors import BadInputError
from nmflowgan.metrics.akld import akld, akld_per_patch, gaussian_taps, local_variance
from nmflowgan.metrics.image_quality import psnr, ssim
from nmflowgan.metrics.kld import N_BINS, histograms, kld, kld_per_patch
from nmflowgan.metrics.noise_stats import corr_error, noise_stats


def test_kld_protocol_bins_match_numpy_histogram_edges():
    assert N_BINS == 130
    values = torch.tensor([[-260.0, -256.01, -256.0, -0.5, 0.0, 3.99, 4.0, 255.0, 259.99, 260.0]])
    ours = histograms(values)[0].numpy()
    reference, _ = np.histogram(values.numpy(), bins=np.arange(-260, 261, 4))
    assert np.array_equal(ours, reference)


def test_kld_of_two_single_bin_histograms_matches_the_hand_computed_value():
    real = torch.zeros(1, 1, 2, 5)  # ten zeros -> bin [0, 4)
    generated = torch.full((1, 1, 2, 5), 4.0)  # ten fours -> bin [4, 8)
    # p = 11/140 in bin 65, 1/140 elsewhere; q = 11/140 in bin 66, 1/140 elsewhere.
    expected = 11 / 140 * math.log(11) + 1 / 140 * math.log(1 / 11)
    assert kld(real, generated) == pytest.approx(expected, rel=1e-12)


def test_noise_drawn_on_a_float32_clean_image_is_scored_as_the_integers_a_camera_records():
    from nmflowgan.models.noise_model import exact_8bit_noise, quantize

    clean_8bit = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(4, 3, 16, 16)
    clean = clean_8bit.float() / 255  # what every sampler draws on
    drawn = quantize(clean, 3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)))
    recorded = drawn.double().round()  # what the camera would have recorded, as noise
    assert ((recorded == 0) & (drawn < 0)).any()  # a recorded 0 that the KLD's edge at 0 puts a bin too low
    assert kld(recorded, drawn) > 0.005  # 0.0105 here: as much as the gaps the project measures
    exact = exact_8bit_noise(drawn, clean_8bit)
    assert exact.dtype == torch.float64 and torch.equal(exact, recorded)
    assert kld(recorded, exact) == 0
    # clipped and rounded as a camera records, unrounded on request (the official protocol)
    noisy = exact_8bit_noise(torch.full(clean.shape, 2.6), clean_8bit) + clean_8bit.double()
    assert noisy.max() == 255 and torch.equal(noisy, noisy.round())
    unrounded = exact_8bit_noise(torch.full(clean.shape, 2.6), clean_8bit, rounded=False) + clean_8bit.double()
    assert unrounded.max() == 255 and unrounded.min() == pytest.approx(2.6)


def test_kld_per_patch_and_identity():
    torch.manual_seed(0)
    noise = torch.randn(4, 3, 16, 16) * 10
    assert torch.equal(kld_per_patch(noise, noise), torch.zeros(4, dtype=torch.float64))
    wider = kld_per_patch(noise, noise * 3)
    assert wider.shape == (4,) and bool((wider > 0.1).all())


def test_akld_hand_computed_and_identity():
    real, generated = torch.full((1, 3, 8, 8), 0.1), torch.full((1, 3, 8, 8), 0.2)
    ratio = 4.0
    assert akld(real, generated) == pytest.approx(0.5 * (ratio - math.log(ratio) - 1), rel=1e-9)
    assert akld(real, real) == 0.0
    # ratios beyond 10 are clamped
    assert akld(real, real * 100) == pytest.approx(0.5 * (10 - math.log(10) - 1), rel=1e-9)


def test_akld_window_is_opencvs_fixed_7_tap_table():
    # cv2.getGaussianKernel(7, -1) returns [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]
    expected = [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]
    assert gaussian_taps().tolist() == expected
    impulse = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    impulse[0, 0, 4, 4] = 1.0
    variance = local_variance(impulse)[0, 0]
    # the 2-D window is the outer product: at the centre 9/32 * 9/32, one step right 9/32 * 7/32, ...
    assert variance[4, 4].item() == pytest.approx(81 / 1024, rel=1e-12)
    assert variance[4, 5].item() == pytest.approx(63 / 1024, rel=1e-12)
    assert variance[2, 7].item() == pytest.approx(3.5 / 32 * 1 / 32, rel=1e-12)  # 2 rows, 3 columns away
    assert variance[0, 0].item() == 1e-10  # outside the window: clamped


def test_akld_reflect_padding_hand_computed():
    # Four identical rows whose squares are [1, 2, 3, 4]: the vertical pass keeps each constant column,
    # the horizontal pass reads the row reflect-padded by 3: [4, 3, 2 | 1, 2, 3, 4 | 3, 2, 1].
    row = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    noise = row.sqrt().expand(4, 4).reshape(1, 1, 4, 4)
    taps = [1 / 32, 3.5 / 32, 7 / 32, 9 / 32, 7 / 32, 3.5 / 32, 1 / 32]
    padded = [4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]
    expected = [sum(t * padded[i + k] for k, t in enumerate(taps)) for i in range(4)]
    got = local_variance(noise)[0, 0, 0].tolist()
    assert got == pytest.approx(expected, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(4, 12), st.integers(4, 12), st.floats(0.2, 5.0))
def test_akld_is_zero_for_identical_noise_and_positive_otherwise(batch, height, width, scale):
    real = torch.randn(batch, 3, height, width, dtype=torch.float64) * 0.05
    per_patch = akld_per_patch(real, real * scale)
    assert per_patch.shape == (batch,) and bool((per_patch >= 0).all())
    assert torch.allclose(akld_per_patch(real, real), torch.zeros(batch, dtype=torch.float64))


def test_psnr_and_ssim_match_hand_computed_values_and_fall_with_noise():
    reference = np.full((16, 16, 3), 100, np.uint8)
    estimate = reference.copy()
    estimate[0, 0, 0] = 110  # one error of 10 over 768 values
    assert psnr(reference, estimate) == pytest.approx(10 * math.log10(255**2 / (100 / 768)))
    assert psnr(reference, reference) == float("inf")
    assert ssim(reference, reference) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = np.clip(reference + rng.normal(0, 20, reference.shape), 0, 255).astype(np.uint8)
    assert ssim(reference, noisy) < 0.9


def test_noise_stats_recover_known_structure():
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(8, 3, 64, 64, generator=generator) * 5
    clean = torch.rand(8, 3, 64, 64, generator=generator)
    stats = noise_stats(clean, white)
    assert stats.corr[:, 0].tolist() == pytest.approx([1, 1, 1])
    assert stats.corr[:, 1:].abs().max() < 0.03 and stats.cross.abs().max() < 0.03
    assert stats.overall_std.tolist() == pytest.approx([5, 5, 5], rel=0.03)
    # x[p] + x[p+1] (both directions): correlation 0.5 at distance 1 horizontally, 0 vertically.
    base = torch.randn(8, 3, 64, 65, generator=generator)
    correlated = base[..., 1:] + base[..., :-1]
    assert noise_stats(clean, correlated).corr[:, 1].mean().item() == pytest.approx(0.25, abs=0.02)
    assert corr_error(stats, stats) == 0.0
    assert corr_error(stats, noise_stats(clean, correlated)) > 0.05
    # heteroscedastic: std = 2 + 10 x
    hetero = torch.randn(8, 3, 64, 64, generator=generator) * (2 + 10 * clean)
    curve = noise_stats(clean, hetero, bins=4).std[0]
    assert curve.tolist() == pytest.approx([2 + 10 * (k + 0.5) / 4 for k in range(4)], rel=0.1)


def test_baselines_recover_their_parameters():
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(16, 3, 96, 96, generator=generator)
    variance = 0.5 * clean * 255 + 4.0  # a = 0.5, b = 4
    noise = torch.randn(clean.shape, generator=generator) * variance.sqrt()
    cameras, isos = ["S6"] * 16, [800.0] * 16
    nlf, gaussian = HeteroscedasticNoise(), GaussianNoise()
    for model in (nlf, gaussian):
        model.update(clean, noise, cameras, isos)
    slope, offset = nlf.coefficients("S6", 800).unbind(1)
    assert slope.tolist() == pytest.approx([0.5] * 3, rel=0.05)
    assert offset.tolist() == pytest.approx([4.0] * 3, abs=1.0)
    assert gaussian.std("S6", 800) == pytest.approx(float(noise.square().mean().sqrt()), rel=1e-6)
    drawn = nlf.noise(clean, cameras, isos, torch.Generator().manual_seed(0))
    assert drawn.shape == clean.shape
    assert kld(noise, drawn) < kld(noise, gaussian.noise(clean, cameras, isos, torch.Generator().manual_seed(0)))
    with pytest.raises(BadInputError, match="'GP' at ISO 800.*S6@800"):
        nlf.noise(clean[:1], ["GP"], [800.0])


def test_neighbour_kld_sees_correlation_that_the_pixel_kld_cannot():
    from nmflowgan.metrics.realism import neighbour_kld_per_patch

    generator = torch.Generator().manual_seed(0)
    white = torch.randn(8, 3, 64, 64, generator=generator, dtype=torch.float64) * 10
    smooth = (white + white.roll(1, -1) + white.roll(1, -2) + white.roll((1, 1), (-2, -1))) / 2  # same std
    other = torch.randn(8, 3, 64, 64, generator=generator, dtype=torch.float64) * 10
    assert torch.equal(neighbour_kld_per_patch(white, white), torch.zeros(8, dtype=torch.float64))
    assert kld_per_patch(white, smooth).mean() < 0.05  # the same histogram, nearly
    assert neighbour_kld_per_patch(white, smooth).mean() > 5 * neighbour_kld_per_patch(white, other).mean()


def test_a_nan_statistic_survives_results_json_and_the_tables():
    """A constant patch has no kurtosis: NaN is written to results.json as null and read back as NaN, and the
    report's tables print it."""
    import json
    import math

    from nmflowgan.metrics.realism import Realism, RealismScorer
    from nmflowgan.reporting.report import _finite, condition_table, results_table, shape_table

    scorer = RealismScorer(["model"])
    clean = torch.full((2, 3, 16, 16), 0.5)
    noise = torch.zeros(2, 3, 16, 16)  # constant: std 0, kurtosis 0/0
    scorer.update(clean, noise, {"model": noise + 1.0}, [("V1", 100.0)] * 2)
    realism = scorer.result()
    assert math.isnan(realism.real.kurtosis[0])
    text = json.dumps(_finite(realism.to_dict()), allow_nan=False)
    back = Realism.from_dict(json.loads(text))
    assert math.isnan(back.real.kurtosis[0]) and back.real.std == realism.real.std
    assert back.models["model"].kld == realism.models["model"].kld
    for table in (results_table(back), shape_table(back), condition_table(back, "kld")):
        assert "|" in table
    assert "nan" in shape_table(back)


def test_baselines_fit_an_iso_their_camera_was_not_trained_at_by_log_iso_interpolation():
    """An adapted model's test split may hold an ISO its few training pairs lacked: the baselines still draw there,
    between the camera's fitted ISOs (held at the nearest one outside them); an unknown camera is refused."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.full((2, 3, 32, 32), 0.5, dtype=torch.float64)
    gaussian, nlf = GaussianNoise(), HeteroscedasticNoise()
    for std, iso in ((2.0, 100), (8.0, 1600)):
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64) * std
        for baseline in (gaussian, nlf):
            baseline.update(clean, noise, ["NEW", "NEW"], [iso, iso])
    low, high = gaussian.std("NEW", 100), gaussian.std("NEW", 1600)
    assert gaussian.std("NEW", 400) == pytest.approx(low + 0.5 * (high - low))  # log(400) halfway in log-ISO
    assert gaussian.std("NEW", 50) == low and gaussian.std("NEW", 6400) == high
    def variance(iso):  # at the clean value 127.5 the patches had
        slope, offset = nlf.coefficients("NEW", iso).unbind(1)
        return float((slope * 127.5 + offset).mean())

    assert variance(100) < variance(400) < variance(1600)
    with pytest.raises(BadInputError, match="no fit for camera 'OTHER' at ISO 400"):
        gaussian.std("OTHER", 400)
