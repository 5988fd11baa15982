"""PSNR and SSIM of 8-bit RGB images."""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of ``(H, W, 3)`` images in 8-bit units (peak 255); infinite for identical images."""
    error = np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(peak**2 / error))


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM of ``(H, W, 3)`` images in 8-bit units, as scikit-image computes it
    (``structural_similarity(channel_axis=-1, data_range=255)``)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference.astype(np.float64), estimate.astype(np.float64),
                                       channel_axis=-1, data_range=255))
