"""The functions the command line calls: each subcommand is a thin wrapper over one of these."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nmflowgan.config import preset
from nmflowgan.models.critic import Critic
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.noise_model import NoiseModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSummary:
    """Trainable parameter counts of a preset's networks."""

    preset: str
    flow: int
    refiner: int
    critic: int
    denoiser: int

    @property
    def noise_model(self) -> int:
        """Flow + refiner: what synthesis needs."""
        return self.flow + self.refiner

    @property
    def total(self) -> int:
        return self.flow + self.refiner + self.critic + self.denoiser

    def to_dict(self) -> dict:
        return {"preset": self.preset, "flow": self.flow, "refiner": self.refiner,
                "noise_model": self.noise_model, "critic": self.critic, "denoiser": self.denoiser,
                "total": self.total}


def _count(module: object) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)  # type: ignore[attr-defined]


def model_summary(name: str) -> ModelSummary:
    """Parameter counts of preset ``name`` with SIDD's vocabulary (5 cameras, 5 ISOs)."""
    config = preset(name)
    model = NoiseModel(config.model)
    return ModelSummary(name, _count(model.flow), _count(model.refiner), _count(Critic(config.critic)),
                        _count(DnCNN(config.denoiser)))
