"""Noise statistics that KLD does not see: noise level versus intensity, and spatial and cross-channel
correlation (the quantities of Fig. 2 and Fig. 3 of the NM-FlowGAN paper), pooled over many patches.

``corr_error`` condenses the correlation structure into one number: the mean absolute difference between
real and synthesized correlations at pixel distances 1-3 (per channel, horizontal and vertical averaged)
and between the three cross-channel correlations (R-G, G-B, R-B). A model of white noise with the right
histogram scores well in KLD and badly here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHANNEL_PAIRS = ((0, 1), (1, 2), (0, 2))
ERROR_DISTANCES = (1, 2, 3)


@dataclass(frozen=True)
class NoiseStats:
    """Pooled noise statistics.

    Attributes:
        intensity: ``(bins,)`` centres of the clean-intensity bins (8-bit units).
        std: ``(3, bins)`` noise standard deviation per channel and intensity bin (8-bit units; NaN where
            a bin is empty); count: ``(3, bins)`` pixels per bin.
        corr: ``(3, D + 1)`` correlation at distances 0..D per channel (horizontal/vertical mean).
        cross: ``(3,)`` cross-channel correlations R-G, G-B, R-B.
        overall_std: ``(3,)`` per channel.
    """

    intensity: torch.Tensor
    std: torch.Tensor
    count: torch.Tensor
    corr: torch.Tensor
    cross: torch.Tensor
    overall_std: torch.Tensor

    def to_dict(self) -> dict:
        return {"intensity": self.intensity.tolist(), "std": self.std.tolist(), "count": self.count.tolist(),
                "corr": self.corr.tolist(), "cross": self.cross.tolist(), "overall_std": self.overall_std.tolist()}


class NoiseStatsAccumulator:
    """Accumulates noise statistics batch by batch (float64 sums, so order barely matters).

    Args:
        bins: clean-intensity bins over [0, 255].
        max_distance_px: largest pixel distance D of the correlation curve.
    """

    def __init__(self, bins: int = 16, max_distance_px: int = 6) -> None:
        self.bins, self.max_distance = bins, max_distance_px
        self.count = torch.zeros(3, bins, dtype=torch.float64)
        self.sum = torch.zeros(3, bins, dtype=torch.float64)
        self.sum_sq = torch.zeros(3, bins, dtype=torch.float64)
        self.products = torch.zeros(3, max_distance_px + 1, dtype=torch.float64)
        self.norms = torch.zeros(3, max_distance_px + 1, 2, dtype=torch.float64)
        self.cross_products = torch.zeros(3, dtype=torch.float64)
        self.channel_sq = torch.zeros(3, dtype=torch.float64)

    def update(self, clean: torch.Tensor, noise_255: torch.Tensor) -> None:
        """Adds a batch: ``clean`` ``(B, 3, H, W)`` in [0, 1], ``noise_255`` ``(B, 3, H, W)`` in 8-bit units."""
        clean, noise = clean.detach().double().cpu(), noise_255.detach().double().cpu()
        index = (clean * self.bins).long().clamp(0, self.bins - 1).transpose(0, 1).flatten(1)  # (3, B*H*W)
        values = noise.transpose(0, 1).flatten(1)
        self.count.scatter_add_(1, index, torch.ones_like(values))
        self.sum.scatter_add_(1, index, values)
        self.sum_sq.scatter_add_(1, index, values.square())
        centred = noise - noise.mean(dim=(2, 3), keepdim=True)  # per patch and channel
        height, width = centred.shape[-2:]
        for distance in range(self.max_distance + 1):
            for a, b in _shifted(centred, distance, height, width):
                self.products[:, distance] += (a * b).sum(dim=(0, 2, 3))
                self.norms[:, distance, 0] += a.square().sum(dim=(0, 2, 3))
                self.norms[:, distance, 1] += b.square().sum(dim=(0, 2, 3))
        for pair, (i, j) in enumerate(CHANNEL_PAIRS):
            self.cross_products[pair] += (centred[:, i] * centred[:, j]).sum()
        self.channel_sq += centred.square().sum(dim=(0, 2, 3))

    def result(self) -> NoiseStats:
        mean = self.sum / self.count.clamp_min(1)
        variance = (self.sum_sq / self.count.clamp_min(1) - mean.square()).clamp_min(0)
        std = torch.where(self.count > 1, variance.sqrt(), torch.full_like(variance, float("nan")))
        corr = self.products / (self.norms[..., 0] * self.norms[..., 1]).sqrt().clamp_min(1e-12)
        cross = torch.stack([self.cross_products[k] / (self.channel_sq[i] * self.channel_sq[j]).sqrt().clamp_min(1e-12)
                             for k, (i, j) in enumerate(CHANNEL_PAIRS)])
        total = self.count.sum(1)
        overall = (self.sum_sq.sum(1) / total.clamp_min(1) - (self.sum.sum(1) / total.clamp_min(1)).square())
        centres = (torch.arange(self.bins, dtype=torch.float64) + 0.5) * 255.0 / self.bins
        return NoiseStats(centres, std, self.count.clone(), corr, cross, overall.clamp_min(0).sqrt())


def _shifted(noise: torch.Tensor, distance: int, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of views ``(x[p], x[p + distance])`` horizontally and vertically (both when they fit)."""
    if distance == 0:
        return [(noise, noise)]
    pairs = []
    if distance < width:
        pairs.append((noise[..., :, : width - distance], noise[..., :, distance:]))
    if distance < height:
        pairs.append((noise[..., : height - distance, :], noise[..., distance:, :]))
    return pairs


def noise_stats(clean: torch.Tensor, noise_255: torch.Tensor, bins: int = 16, max_distance_px: int = 6) -> NoiseStats:
    """The statistics of one batch (see :class:`NoiseStatsAccumulator`)."""
    accumulator = NoiseStatsAccumulator(bins, max_distance_px)
    accumulator.update(clean, noise_255)
    return accumulator.result()


def corr_error(real: NoiseStats, generated: NoiseStats) -> float:
    """Mean absolute difference of the correlations at distances 1-3 (3 channels) and of the three
    cross-channel correlations: 12 numbers, each in [-1, 1]."""
    distances = list(ERROR_DISTANCES)
    spatial = (real.corr[:, distances] - generated.corr[:, distances]).abs().flatten()
    cross = (real.cross - generated.cross).abs()
    return float(torch.cat([spatial, cross]).mean())
