"""The UNet refiner: turns pixel-wise noise into spatially correlated noise (residual)."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from nmflowgan.condition_input import ConditionPlanes, condition_channels
from nmflowgan.config import RefinerConfig


def _conv_block(in_channels: int, out_channels: int, condition_dim: int = 0) -> nn.Sequential:
    """Two 3x3 convolutions with ReLUs; the first also reads ``condition_dim`` condition planes after its
    ``in_channels`` image channels."""
    first = (ConditionPlanes(in_channels, condition_dim, out_channels, 3, padding=1) if condition_dim
             else nn.Conv2d(in_channels, out_channels, 3, padding=1))
    return nn.Sequential(first, nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU())


def local_second_moment(noise: torch.Tensor, sigma_px: float = 1.4, radius_px: int = 3) -> torch.Tensor:
    """The 7x7 Gaussian-weighted mean of ``noise ** 2`` (reflect padding), ``(B, C, H, W)``, at least 1e-3."""
    taps = torch.arange(-radius_px, radius_px + 1, dtype=noise.dtype, device=noise.device)
    kernel = torch.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    channels = noise.shape[1]
    mode = "reflect" if min(noise.shape[-2:]) > radius_px else "replicate"
    square = F.pad(noise.square(), (radius_px, radius_px, radius_px, radius_px), mode=mode)
    square = F.conv2d(square, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    square = F.conv2d(square, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return square.clamp_min(1e-3)


class UNetRefiner(nn.Module):
    """``refined = noise + s * UNet(noise / s [, clean] [, condition])``, ``s`` the config's noise scale; any H x W.

    Levels double the width and halve the resolution (max-pooling); the way up uses transposed
    convolutions and skip connections; no batch norm. Inputs are padded (replicate) to a multiple of
    ``2 ** (depth - 1)`` and the output is cropped back. The last convolution starts at zero, so an
    untrained refiner is the identity.

    Args:
        config: depth, width and which inputs it sees besides the noise.
        condition_dim: D of the camera/ISO features (used when ``config.sees_condition``).
    """

    def __init__(self, config: RefinerConfig, condition_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        in_channels = 3 + (3 if config.sees_clean else 0)
        planes = condition_dim if config.sees_condition else 0
        widths = [config.width * 2**level for level in range(config.depth)]
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            self.down.append(_conv_block(in_channels, width, planes if level == 0 else 0))
            in_channels = width
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(in_channels, width, 2, stride=2))
            self.up_blocks.append(_conv_block(2 * width, width))
            in_channels = width
        self.last = nn.Conv2d(in_channels, 3, 1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool,
                     compile: bool = False) -> SamplingRefiner:
        """A frozen copy for drawing only (see :class:`SamplingRefiner`)."""
        return SamplingRefiner(self, dtype, memory_format, fold, compile)

    @property
    def multiple(self) -> int:
        return 2 ** (self.config.depth - 1)

    def forward(self, noise_255: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Refines noise.

        Args:
            noise_255: ``(B, 3, H, W)`` pixel-wise noise in 8-bit units.
            clean: ``(B, 3, H, W)`` clean image in [0, 1] (used when ``sees_clean``).
            condition: ``(B, D)`` camera/ISO features (required when ``sees_condition``).

        Returns:
            ``(B, 3, H, W)`` refined noise in 8-bit units.
        """
        return self.combine(noise_255, self.network(self.inputs(noise_255, clean, condition)))

    def inputs(self, noise_255: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None
               ) -> torch.Tensor:
        """What :meth:`network` reads: ``noise / noise_scale`` [, clean] [, condition channels], ``(B, C_in, H, W)``."""
        x = noise_255 / self.config.noise_scale
        if self.config.sees_clean:
            x = torch.cat([x, clean.to(x.dtype)], dim=1)
        if self.config.sees_condition:
            x = torch.cat([x, condition_channels(condition, x)], dim=1)
        return x

    def combine(self, noise_255: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The refined noise from the input noise and the network's residual (8-bit units after scaling)."""
        refined = noise_255 + self.config.noise_scale * residual
        if self.config.preserve_variance:
            ratio = local_second_moment(noise_255) / local_second_moment(refined)
            refined = refined * ratio.sqrt()
        return refined

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The UNet alone: ``(B, C_in, H, W)`` inputs (scaled noise first) -> ``(B, 3, H, W)`` residual."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, block in zip(self.up, self.up_blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.last(x)[..., :height, :width]


class SamplingRefiner(nn.Module):
    """A refiner's drawing form, the same function as :meth:`UNetRefiner.forward`: its inputs and the combination
    in float32, the UNet in ``dtype`` and ``memory_format``; with ``fold``, the input scale ``1 / noise_scale``
    moved into the first convolution and the output scale ``noise_scale`` into the last one (exact up to
    rounding: the scaled weights are rounded once instead of the scaled activations); with ``compile``, the
    UNet under ``torch.compile``."""

    def __init__(self, refiner: UNetRefiner, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool,
                 compile: bool) -> None:
        super().__init__()
        copied = copy.deepcopy(refiner).float()
        if fold:
            scale = refiner.config.noise_scale
            with torch.no_grad():
                copied.down[0][0].weight[:, :3] /= scale  # the noise channels come first
                copied.last.weight *= scale
                copied.last.bias *= scale
            copied.config = dataclasses.replace(refiner.config, noise_scale=1.0)
        self.refiner = copied.to(dtype, memory_format=memory_format)
        self.dtype, self.memory_format = dtype, memory_format
        self._network = torch.compile(copied.network) if compile else copied.network

    def forward(self, noise_255: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None
                ) -> torch.Tensor:
        """As :meth:`UNetRefiner.forward`; float32 in and out."""
        x = self.refiner.inputs(noise_255, clean.float(), condition)
        residual = self._network(x.to(self.dtype).contiguous(memory_format=self.memory_format)).float()
        return self.refiner.combine(noise_255, residual).contiguous()
