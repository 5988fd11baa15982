"""The images a user hands to :meth:`NoiseModel.sample`, checked and brought to one form: a ``(B, 3, H, W)``
float32 tensor in [0, 1]. Every refusal is a :class:`BadInputError` saying what was expected."""

from __future__ import annotations

import numpy as np
import torch

from nmflowgan.errors import BadInputError


def as_nchw(clean: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validates an image batch and returns it as a channels-first tensor."""
    if isinstance(clean, np.ndarray):
        if clean.dtype != np.uint8:
            raise BadInputError(f"image arrays must be uint8 (0-255), got {clean.dtype}")
        if clean.ndim not in (3, 4) or clean.shape[-1] != 3:
            raise BadInputError(f"image arrays must be (H, W, 3) or (B, H, W, 3), got {clean.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(clean))
        return tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)
    if not isinstance(clean, torch.Tensor):
        raise BadInputError(f"clean must be a torch tensor or a uint8 numpy array, got {type(clean).__name__}")
    if clean.dim() not in (3, 4) or clean.shape[-3] != 3:
        raise BadInputError(f"clean must be (3, H, W) or (B, 3, H, W) RGB, got shape {tuple(clean.shape)}")
    if min(clean.shape[-2:]) < 1 or clean.numel() == 0:
        raise BadInputError(f"clean image is empty: shape {tuple(clean.shape)}")
    return clean


def to_unit_float(tensor: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (0-255) or a float batch in [0, 1] as float32 in [0, 1]; anything else is refused."""
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise BadInputError(f"clean must be uint8 or floating point, got {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        raise BadInputError("clean image contains NaN or infinite values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise BadInputError(f"float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return tensor.float().clamp(0, 1)
