"""DnCNN (Zhang et al. 2017): a residual denoiser."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from nmflowgan import __version__
from nmflowgan.atomic import atomic_path, write_text
from nmflowgan.config import DenoiserConfig, from_dict, to_dict
from nmflowgan.errors import BadInputError, CheckpointError

WEIGHTS_FILE = "denoiser.safetensors"
META_FILE = "denoiser.json"
FORMAT = "nmflowgan-denoiser"


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

    def save(self, directory: str | Path) -> Path:
        """Writes ``denoiser.safetensors`` and ``denoiser.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as temp:
            save_file(tensors, str(temp))
        meta = {"format": FORMAT, "version": __version__, "config": to_dict(self.config)}
        write_text(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> DnCNN:
        """Loads a denoiser saved by :meth:`save`, or the ``best`` (else ``last``) one of a run folder."""
        from nmflowgan.models.noise_model import load_weights, read_meta

        path = Path(path)
        directory = next((c for c in (path, path / "best", path / "last") if (c / META_FILE).is_file()), None)
        if directory is None:
            raise CheckpointError(f"{path}: not a denoiser checkpoint (no {META_FILE} here or in best/ or last/)")
        meta = read_meta(directory / META_FILE, FORMAT)
        try:
            config = from_dict(DenoiserConfig, meta["config"])
        except (KeyError, TypeError, BadInputError) as error:
            raise CheckpointError(f"{directory / META_FILE}: invalid denoiser description ({error})") from None
        model = cls(config)  # type: ignore[arg-type]
        load_weights(model, directory / WEIGHTS_FILE)
        return model.to(map_location).eval()
