"""KLD between real and generated noise histograms, the protocol of the sRGB noise-modelling papers.

Noise in 8-bit units is histogrammed with bin edges -260, -256, ..., 260 (130 bins of width 4);
each histogram is Laplace-smoothed, ``p = (count + 1) / (N + 130)``, and the score is
``KL(real || generated) = sum p_real log(p_real / p_generated)`` per test patch, then averaged.
"""

from __future__ import annotations

import torch

EDGE_LOW, EDGE_HIGH, BIN_WIDTH = -260.0, 260.0, 4.0
N_BINS = int((EDGE_HIGH - EDGE_LOW) / BIN_WIDTH)  # 130


def histograms(noise_255: torch.Tensor) -> torch.Tensor:
    """Per-sample counts: ``(B, ...)`` noise in 8-bit units -> ``(B, 130)`` float64 counts.

    A value on an inner edge falls in the bin to its right; 260 itself falls in the last bin (as
    ``numpy.histogram``). Values outside [-260, 260] are not counted.
    """
    values = noise_255.detach().flatten(1).double()
    index = torch.floor((values - EDGE_LOW) / BIN_WIDTH).long()
    index = torch.where(values == EDGE_HIGH, N_BINS - 1, index)
    inside = (index >= 0) & (index < N_BINS)
    counts = values.new_zeros(values.shape[0], N_BINS)
    return counts.scatter_add_(1, index.clamp(0, N_BINS - 1), inside.double())


def smoothed(counts: torch.Tensor) -> torch.Tensor:
    """Laplace smoothing: ``(count + 1) / (N + 130)`` along the last axis."""
    return (counts + 1) / (counts.sum(-1, keepdim=True) + counts.shape[-1])


def kld_per_patch(real_255: torch.Tensor, generated_255: torch.Tensor) -> torch.Tensor:
    """``KL(real || generated)`` of each sample's noise histogram.

    Args:
        real_255, generated_255: ``(B, C, H, W)`` noise in 8-bit units.

    Returns:
        ``(B,)`` float64 KL divergences in nats.
    """
    p, q = smoothed(histograms(real_255)), smoothed(histograms(generated_255))
    return (p * (p / q).log()).sum(-1)


def kld(real_255: torch.Tensor, generated_255: torch.Tensor) -> float:
    """Mean over samples of :func:`kld_per_patch`."""
    return float(kld_per_patch(real_255, generated_255).mean())
