"""DnCNN (Zhang et al. 2017): a residual denoiser."""

from __future__ import annotations

import torch
from torch import nn

from nmflowgan.config import DenoiserConfig


class DnCNN(nn.Module):
    """``clean_hat = noisy - f(noisy)``: ``depth`` 3x3 convolutions of ``width`` features (ReLU, batch
    norm in the middle layers) predict the noise.

    Input and output are ``(B, 3, H, W)`` images in [0, 1]; any H x W.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(3, config.width, 3, padding=1), nn.ReLU()]
        for _ in range(config.depth - 2):
            layers.append(nn.Conv2d(config.width, config.width, 3, padding=1, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(config.width))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(config.width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.body(noisy)
