"""The WGAN critic on (noise, clean) pairs."""

from __future__ import annotations

import torch
from torch import nn

from nmflowgan.condition_input import ConditionPlanes, condition_channels
from nmflowgan.config import CriticConfig
from nmflowgan.errors import BadInputError

PAPER_PATCH_PX = 96


def _block(in_channels: int, out_channels: int, kernel: int, stride: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """Scores ``(noise, clean)``: ``(B, 3, H, W)`` noise in 8-bit units and ``(B, 3, H, W)`` clean in
    [0, 1] -> ``(B,)`` scores (higher means "looks real").

    A 7x7 convolution, then four stages of (3x3 conv, 4x4 stride-2 conv) doubling the width up to 8x,
    and one more stride-2 stage: the VGG-style critic of the official code.
    ``paper``: instance norm, flattened 3x3x(8*width) features, only 96x96 inputs.
    ``any``: no normalization, global average pooling, any patch of at least 32x32.
    """

    def __init__(self, config: CriticConfig, condition_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        w = config.width
        norm = config.variant == "paper"
        stages = [(w, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)]
        planes = condition_dim if config.sees_condition else 0
        first = ConditionPlanes(6, planes, w, 7, padding=3) if planes else nn.Conv2d(6, w, 7, padding=3)
        layers: list[nn.Module] = [first]
        for index, (c_in, c_out) in enumerate(stages):
            if index > 0:
                layers.append(_block(c_in, c_out, 3, 1, norm))
            layers.append(_block(c_out, c_out, 4, 2, norm))
        self.features = nn.Sequential(*layers)
        pooled = 8 * w * 3 * 3 if norm else 8 * w
        self.classifier = nn.Sequential(nn.Linear(pooled, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1))

    @property
    def min_patch_px(self) -> int:
        return PAPER_PATCH_PX if self.config.variant == "paper" else 32

    def forward(self, noise_255: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``(B, 3, H, W)`` noise (8-bit units), clean in [0, 1] and, for a conditional critic, ``(B, D)``
        camera/ISO features -> ``(B,)`` scores."""
        height, width = noise_255.shape[-2:]
        if self.config.variant == "paper" and (height, width) != (PAPER_PATCH_PX, PAPER_PATCH_PX):
            raise BadInputError(f"the paper critic takes 96x96 patches, got {height}x{width}")
        if min(height, width) < self.min_patch_px:
            raise BadInputError(f"the critic needs patches of at least 32x32, got {height}x{width}")
        x = torch.cat([noise_255 / self.config.noise_scale, clean.to(noise_255.dtype)], dim=1)
        if self.config.sees_condition:
            x = torch.cat([x, condition_channels(condition, x)], dim=1)
        x = self.features(x)
        x = x.flatten(1) if self.config.variant == "paper" else x.mean(dim=(2, 3))
        return self.classifier(x).squeeze(1)
