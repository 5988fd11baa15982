"""Noise by what it lies on: flat areas against edges, per clean intensity.

In-camera denoising smooths flat areas (their noise is strongly correlated) and spares edges (less correlated), and
sharpening does the opposite of smoothing there: a camera's noise depends on the local content. Per channel, for
the pixels ``p`` of each class and clean-intensity bin, this module measures

* ``std``: the standard deviation of the noise (8-bit units);
* ``r1``: the horizontal lag-1 correlation ``E[x(p) x(p + 1)] / sqrt(E[x(p)^2] E[x(p + 1)^2])``;

where a pixel is ``flat`` when its horizontal clean gradient ``|c(p + 1) - c(p)|`` (8-bit units, the same channel) is
below :data:`FLAT_BELOW`, an ``edge`` when it is at least :data:`EDGE_FROM` (between the two: neither), and the
intensity bin is its clean value's in :data:`BINS` equal bins of 0-255. A source is scored against the real noise by
``content_r1_error`` (mean ``|r1 - real r1|``) and ``content_std_error`` (mean ``|std / real std - 1|``) over the
(class, channel, bin) cells where both have at least :data:`MIN_PIXELS` pixels. Each patch's noise has its
per-channel mean removed first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CLASSES = ("flat", "edge")
FLAT_BELOW = 2.0
EDGE_FROM = 12.0
BINS = 8
MIN_PIXELS = 500


@dataclass(frozen=True)
class ContentStats:
    """``std``, ``r1`` and ``count`` of shape ``[class][channel][bin]`` (classes as :data:`CLASSES`)."""

    std: torch.Tensor
    r1: torch.Tensor
    count: torch.Tensor

    def to_dict(self) -> dict:
        return {"classes": list(CLASSES), "bins": BINS, "std": self.std.tolist(), "r1": self.r1.tolist(),
                "count": self.count.tolist()}


class ContentStatsAccumulator:
    """Sums for :class:`ContentStats` over batches: clean ``(B, 3, H, W)`` in [0, 1] and noise of the same shape in
    8-bit units (W >= 2)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def update(self, clean: torch.Tensor, noise: torch.Tensor) -> None:
        x = noise.double()
        x = x - x.mean(dim=(2, 3), keepdim=True)
        clean_255 = clean.double() * 255.0
        left, right = x[..., :-1], x[..., 1:]  # p and p + 1
        gradient = (clean_255[..., 1:] - clean_255[..., :-1]).abs()
        level = (clean_255[..., :-1] * BINS / 256).long().clamp(0, BINS - 1)
        kind = torch.full_like(level, -1)
        kind[gradient < FLAT_BELOW] = 0
        kind[gradient >= EDGE_FROM] = 1
        keep = kind >= 0
        channel = torch.arange(x.shape[1])[None, :, None, None].expand_as(level)
        cell = ((kind * x.shape[1] + channel) * BINS + level)[keep]
        size = len(CLASSES) * x.shape[1] * BINS
        for name, values in (("count", torch.ones_like(left)), ("left_sq", left.square()),
                             ("right_sq", right.square()), ("product", left * right)):
            total = torch.zeros(size, dtype=torch.float64).index_add_(0, cell, values[keep])
            self.sums[name] = self.sums.get(name, torch.zeros_like(total)) + total

    def merge(self, other: ContentStatsAccumulator) -> None:
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, torch.zeros_like(value)) + value

    def result(self) -> ContentStats:
        shape = (len(CLASSES), -1, BINS)
        s = {name: value.view(shape) for name, value in self.sums.items()}
        count = s["count"]
        std = (s["left_sq"] / count.clamp_min(1)).sqrt()
        r1 = s["product"] / (s["left_sq"] * s["right_sq"]).sqrt().clamp_min(1e-12)
        return ContentStats(std, r1, count)


def content_errors(real: ContentStats, source: ContentStats) -> dict[str, float]:
    """``content_r1_error`` and ``content_std_error`` of ``source`` against ``real`` (module doc); NaN where no cell
    has enough pixels in both."""
    cells = (real.count >= MIN_PIXELS) & (source.count >= MIN_PIXELS)
    if not bool(cells.any()):
        return {"content_r1_error": float("nan"), "content_std_error": float("nan")}
    return {"content_r1_error": float((source.r1 - real.r1).abs()[cells].mean()),
            "content_std_error": float((source.std / real.std.clamp_min(1e-12) - 1).abs()[cells].mean())}
