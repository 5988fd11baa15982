"""DnCNN (Zhang et al. 2017): a residual denoiser."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nmflowgan.config import DenoiserConfig, from_dict, to_dict
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.models.files import built_within_budget, load_weights, read_meta, resolve_checkpoint_dir, save_module

WEIGHTS_FILE = "denoiser.safetensors"
META_FILE = "denoiser.json"
FORMAT = "nmflowgan-denoiser"


class DnCNN(nn.Module):
    """``clean_hat = noisy - f(noisy)``: ``depth`` 3x3 convolutions of ``width`` features (ReLU, batch
    norm in the middle layers) predict the noise; the last one starts at zero (an untrained denoiser is
    the identity).

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
        # The noise estimate starts at zero, so an untrained denoiser is the identity rather than worse
        # than doing nothing (measured: 400 steps from a random last layer stayed below the noisy input).
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.body(noisy)

    def save(self, directory: str | Path) -> Path:
        """Writes ``denoiser.safetensors`` and ``denoiser.json`` into ``directory`` (atomically)."""
        return save_module(self, directory, WEIGHTS_FILE, META_FILE, {"format": FORMAT, "config": to_dict(self.config)})

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> DnCNN:
        """Loads a denoiser saved by :meth:`save`, or the ``best`` (else ``last``) one of a run folder."""
        directory = resolve_checkpoint_dir(path, META_FILE, "denoiser")
        meta = read_meta(directory / META_FILE, FORMAT)
        try:
            config = from_dict(DenoiserConfig, meta["config"])
            model = built_within_budget(lambda: cls(config), str(directory / META_FILE))  # type: ignore[arg-type]
        except (KeyError, TypeError, BadInputError) as error:
            raise CheckpointError(f"{directory / META_FILE}: invalid denoiser description ({error})") from None
        load_weights(model, directory / WEIGHTS_FILE)
        return model.to(map_location).eval()
