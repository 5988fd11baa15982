"""Processing images of any size in overlapping tiles, with memory bounded by the tile size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from nmflowgan.errors import BadInputError

TileFunction = Callable[[torch.Tensor, int, int], torch.Tensor]


def process_in_tiles(image: np.ndarray, function: TileFunction, tile_px: int = 512, margin_px: int = 32,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """Applies ``function`` to ``uint8 (H, W, 3)`` tile by tile and assembles the result.

    Each ``tile_px`` core is grown by ``margin_px`` of real context on every side (less at the image
    border); ``function(tile, top, left)`` receives that grown tile as ``(1, 3, h, w)`` floats in [0, 1]
    with its position in the image, returns ``(1, 3, h, w)`` in 8-bit units, and only the core is kept.
    """
    if tile_px < 1 or margin_px < 0:
        raise BadInputError(f"tiles need a side of at least 1 pixel and a margin of at least 0, got {tile_px} and "
                            f"{margin_px}")
    height, width = image.shape[:2]
    out = np.empty_like(image)
    for top in range(0, height, tile_px):
        for left in range(0, width, tile_px):
            y0, x0 = max(0, top - margin_px), max(0, left - margin_px)
            y1, x1 = min(height, top + tile_px + margin_px), min(width, left + tile_px + margin_px)
            tile = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1)[None]
            result = function(tile.to(device).float() / 255.0, y0, x0)
            core = result[0, :, top - y0 : min(top + tile_px, height) - y0, left - x0 : min(left + tile_px, width) - x0]
            core = core.round().clamp(0, 255).to(torch.uint8)
            out[top : top + core.shape[1], left : left + core.shape[2]] = core.permute(1, 2, 0).cpu().numpy()
    return out
