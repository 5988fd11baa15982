"""Noise by its place in the camera's grids: the 2x2 colour-filter grid and the 8x8 JPEG grid.

A camera's noise is not the same everywhere in the frame: demosaicing gives each pixel of the 2x2 colour-filter
grid its own noise level and correlation, and JPEG makes the rows and columns at 8x8 block edges noisier than block
interiors. Per channel this module measures

* ``phase_std``: the standard deviation (8-bit units) at each 2x2 phase ``[row % 2][column % 2]``;
* ``phase_r1``: the horizontal lag-1 correlation ``E[x(p) x(p + 1)] / sqrt(E[x(p)^2] E[x(p + 1)^2])`` of the pixels
  ``p`` at each 2x2 phase;
* ``block_std``: the standard deviation at each position ``[row % 8][column % 8]`` of the 8x8 grid, and its
  coefficient of variation over the 64 positions (``block_cv``: 0 for noise that ignores the JPEG grid);

and scores a source against the real noise by ``phase_std_error`` (mean over channels and phases of
``|std / real std - 1|``), ``phase_r1_error`` (mean ``|r1 - real r1|``) and ``block_cv_error`` (mean over channels of
``|cv - real cv|``). Positions count from each patch's own top-left pixel: ``evaluate``'s patches start on
multiples of 8 (both protocols), so there they are the image's own grid positions. Each patch's noise has its
per-channel mean removed first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GridStats:
    """Per channel: ``phase_std`` ``[3][2][2]``, ``phase_r1`` ``[3][2][2]``, ``block_std`` ``[3][8][8]``."""

    phase_std: torch.Tensor
    phase_r1: torch.Tensor
    block_std: torch.Tensor

    @property
    def block_cv(self) -> torch.Tensor:
        """``(3,)``: the coefficient of variation of ``block_std`` over the 64 positions."""
        flat = self.block_std.flatten(1)
        return flat.std(1, unbiased=False) / flat.mean(1).clamp_min(1e-12)

    def to_dict(self) -> dict:
        return {"phase_std": self.phase_std.tolist(), "phase_r1": self.phase_r1.tolist(),
                "block_std": self.block_std.tolist(), "block_cv": self.block_cv.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> GridStats:
        return cls(*(torch.tensor(data[key], dtype=torch.float64) for key in ("phase_std", "phase_r1", "block_std")))


def _by_position(values: torch.Tensor, period: int) -> torch.Tensor:
    """Sums of ``(B, 3, H, W)`` values by ``[channel][row % period][column % period]`` -> ``(3, period, period)``."""
    height, width = values.shape[-2:]
    rows = torch.arange(height) % period
    columns = torch.arange(width) % period
    cell = (rows[:, None] * period + columns[None, :]).flatten()  # (H*W,)
    flat = values.sum(0).flatten(1)  # (3, H*W)
    out = torch.zeros(values.shape[1], period * period, dtype=torch.float64)
    out.index_add_(1, cell, flat.double())
    return out.view(values.shape[1], period, period)


class GridStatsAccumulator:
    """Sums for :class:`GridStats` over batches of noise ``(B, 3, H, W)`` in 8-bit units (H, W >= 2)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, torch.zeros_like(value)) + value

    def update(self, noise: torch.Tensor) -> None:
        x = noise.double()
        x = x - x.mean(dim=(2, 3), keepdim=True)
        ones = torch.ones_like(x)
        self._add("count2", _by_position(ones, 2))
        self._add("square2", _by_position(x.square(), 2))
        self._add("count8", _by_position(ones, 8))
        self._add("square8", _by_position(x.square(), 8))
        left, right = x[..., :-1], x[..., 1:]  # p and p + 1; the phase is p's
        self._add("product", _by_position(left * right, 2))
        self._add("left_sq", _by_position(left.square(), 2))
        self._add("right_sq", _by_position(right.square(), 2))

    def merge(self, other: GridStatsAccumulator) -> None:
        for name, value in other.sums.items():
            self._add(name, value)

    def result(self) -> GridStats:
        s = self.sums
        phase_std = (s["square2"] / s["count2"].clamp_min(1)).sqrt()
        block_std = (s["square8"] / s["count8"].clamp_min(1)).sqrt()
        phase_r1 = s["product"] / (s["left_sq"] * s["right_sq"]).sqrt().clamp_min(1e-12)
        return GridStats(phase_std, phase_r1, block_std)


def grid_errors(real: GridStats, source: GridStats) -> dict[str, float]:
    """``phase_std_error``, ``phase_r1_error`` and ``block_cv_error`` of ``source`` against ``real`` (module doc)."""
    return {"phase_std_error": float((source.phase_std / real.phase_std.clamp_min(1e-12) - 1).abs().mean()),
            "phase_r1_error": float((source.phase_r1 - real.phase_r1).abs().mean()),
            "block_cv_error": float((source.block_cv - real.block_cv).abs().mean())}
