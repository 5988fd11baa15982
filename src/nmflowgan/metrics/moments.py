"""The noise's shape per clean intensity: mean, std, skewness and kurtosis in each of 8 intensity bins.

Real sRGB noise is skewed and heavy-tailed at a given signal level (the tone curve, clipping, demosaicing and
sharpening), which a pooled kurtosis or a KLD over all intensities mixes away. These moments show it cell by
cell: (channel, clean-intensity bin), pooled over the patches of one camera/ISO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

N_BINS = 8
BIN_EDGES = tuple(range(0, 257, 256 // N_BINS))  # clean intensity, 8-bit units: [0, 32), [32, 64), ...
MIN_PIXELS = 500  # cells with fewer pixels are left out of the skewness agreement


@dataclass(frozen=True)
class IntensityMoments:
    """Per channel and clean-intensity bin, each ``(3, N_BINS)``: pixel ``count``, and the noise's ``mean`` and
    ``std`` (8-bit units), ``skewness`` and ``kurtosis`` (0 and 3 for Gaussian noise; NaN where a cell is empty
    or constant)."""

    count: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    skewness: torch.Tensor
    kurtosis: torch.Tensor

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in ("count", "mean", "std", "skewness", "kurtosis")}

    @classmethod
    def from_dict(cls, data: dict) -> IntensityMoments:
        def tensor(rows: list) -> torch.Tensor:
            return torch.tensor([[float("nan") if v is None else v for v in row] for row in rows], dtype=torch.float64)

        return cls(*(tensor(data[name]) for name in ("count", "mean", "std", "skewness", "kurtosis")))


class IntensityMomentsAccumulator:
    """Raw power sums of the noise per channel and clean-intensity bin (float64), batch by batch."""

    def __init__(self) -> None:
        self.sums = torch.zeros(5, 3, N_BINS, dtype=torch.float64)  # sum of x^0 .. x^4

    def update(self, clean: torch.Tensor, noise: torch.Tensor) -> None:
        """``clean (B, 3, H, W)`` in [0, 1] and ``noise`` of the same shape in 8-bit units."""
        bins = (clean.double() * 255.0 / (256 // N_BINS)).floor().clamp(0, N_BINS - 1).long()  # (B, 3, H, W)
        index = (bins + torch.arange(3)[None, :, None, None] * N_BINS).flatten()
        values = noise.double().flatten()
        for power in range(5):
            self.sums[power].view(-1).index_add_(0, index, values.pow(power))

    def merge(self, other: IntensityMomentsAccumulator) -> None:
        self.sums += other.sums

    def result(self) -> IntensityMoments:
        count = self.sums[0]
        n = count.clamp_min(1)
        m1, m2, m3, m4 = (self.sums[p] / n for p in range(1, 5))
        variance = (m2 - m1**2).clamp_min(0)
        third = m3 - 3 * m1 * m2 + 2 * m1**3
        fourth = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
        valid = (count > 1) & (variance > 1e-12)
        nan = torch.full_like(count, float("nan"))
        return IntensityMoments(count, torch.where(count > 0, m1, nan), torch.where(count > 0, variance.sqrt(), nan),
                                torch.where(valid, third / variance.clamp_min(1e-12) ** 1.5, nan),
                                torch.where(valid, fourth / variance.clamp_min(1e-12) ** 2, nan))


def skew_agreement(real: list[IntensityMoments], model: list[IntensityMoments], tolerance: float = 0.3) -> float:
    """The fraction of (condition, channel, intensity bin) cells with at least ``MIN_PIXELS`` real pixels where
    ``|skewness(model) - skewness(real)| <= tolerance`` (NaN when there is no such cell). Higher is better."""
    hits, cells = 0, 0
    for real_moments, model_moments in zip(real, model):
        counted = (real_moments.count >= MIN_PIXELS) & real_moments.skewness.isfinite()
        cells += int(counted.sum())
        hits += int(((model_moments.skewness - real_moments.skewness).abs() <= tolerance)[counted].sum())
    return hits / cells if cells else float("nan")
