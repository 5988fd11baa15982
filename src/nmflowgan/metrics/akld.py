"""AKLD: the average KL divergence between local noise-variance maps (Yue et al. 2020, DANet).

Noise maps are in [0, 1] units. The local variance of a map is the 7x7 Gaussian-weighted mean of its
square, clamped to at least 1e-10. The window is the one of the reference implementation (DANet's, reused
by later papers), OpenCV's ``getGaussianKernel(7, -1)``: for 7 taps OpenCV returns the fixed table
``[1, 3.5, 7, 9, 7, 3.5, 1] / 32`` rather than exponential taps; the 2-D window is its outer product, with
reflect padding of 3.
With ``r = var_generated / var_real`` clamped to [0.1, 10], the per-pixel KL divergence between two
zero-mean Gaussians is ``(r - log r - 1) / 2``; AKLD is its mean.

AKLD compares noisy local estimates, so spatially correlated noise raises even a perfect model's score:
always read it next to the oracle's (a second real draw), never alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW_PX = 7
OPENCV_TAPS_7 = (1.0, 3.5, 7.0, 9.0, 7.0, 3.5, 1.0)  # / 32: OpenCV's fixed table for a 7-tap Gaussian
RATIO_MIN, RATIO_MAX, VARIANCE_MIN = 0.1, 10.0, 1e-10


def gaussian_taps(dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """The 7 taps of OpenCV's ``getGaussianKernel(7, -1)``: ``[1, 3.5, 7, 9, 7, 3.5, 1] / 32`` (sum 1)."""
    return torch.tensor(OPENCV_TAPS_7, dtype=dtype, device=device) / 32.0


def local_variance(noise: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` noise in [0, 1] units -> ``(B, C, H, W)`` local variance (zero-mean model)."""
    square = noise.double().square()
    taps = gaussian_taps(square.dtype, square.device)
    half, channels = WINDOW_PX // 2, square.shape[1]
    horizontal = taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(square, (half, half, 0, 0), mode="reflect"), horizontal, groups=channels)
    out = F.conv2d(F.pad(out, (0, 0, half, half), mode="reflect"), vertical, groups=channels)
    return out.clamp_min(VARIANCE_MIN)


def akld_per_patch(real: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Per-sample AKLD of ``(B, C, H, W)`` noise maps in [0, 1] units (H, W >= 4) -> ``(B,)`` float64."""
    ratio = (local_variance(generated) / local_variance(real)).clamp(RATIO_MIN, RATIO_MAX)
    return 0.5 * (ratio - ratio.log() - 1).flatten(1).mean(1)


def akld(real: torch.Tensor, generated: torch.Tensor) -> float:
    """Mean over samples of :func:`akld_per_patch`."""
    return float(akld_per_patch(real, generated).mean())
