"""The application layer: one function per command, each taking plain arguments a Python user can pass.

The command line (:mod:`nmflowgan.cli`) parses, calls exactly one of these, and keeps what is its own:
progress-bar and overwrite flags from the command line, signal handlers, printing and exit codes.

========================  ==================================================================
command                   function
========================  ==================================================================
``info``                  :func:`model_summary`
``simulate``              :func:`simulate`
``burst-pairs``           :func:`burst_pairs`
``train``                 :func:`train_noise_model` with :class:`NoiseTrainingOptions`
``adapt``                 :func:`adapt` with :class:`NoiseTrainingOptions` and :class:`AdaptationOptions`
``match``                 :func:`match_pairs`
``evaluate``              :func:`evaluate_to_report`
``synthesize``            :func:`synthesize`
``train-denoiser``        :func:`train_denoiser` with :class:`DenoiserTrainingOptions`
``eval-denoiser``         :func:`evaluate_denoiser`
``denoise``               :func:`denoise_files`
``demo``                  :func:`demo`
========================  ==================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from nmflowgan.config import preset
from nmflowgan.data.bursts import write_burst_pairs as burst_pairs
from nmflowgan.data.simcam import simulate
from nmflowgan.demo import demo
from nmflowgan.denoising import denoise_files, evaluate_denoiser
from nmflowgan.matching import match_pairs
from nmflowgan.models.critic import Critic
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.reporting.report import Report, evaluate_to_report
from nmflowgan.synthesis import synthesize
from nmflowgan.training.adaptation import AdaptationOptions
from nmflowgan.training.adaptation import adapt_noise_model as adapt
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, train_denoiser
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model

__all__ = ["AdaptationOptions", "DenoiserTrainingOptions", "ModelSummary", "NoiseTrainingOptions", "Report", "adapt",
           "burst_pairs", "demo", "denoise_files", "evaluate_denoiser", "evaluate_to_report", "match_pairs",
           "model_summary", "simulate", "synthesize", "train_denoiser", "train_noise_model"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSummary:
    """Trainable parameter counts of a preset's networks."""

    preset: str
    flow: int
    refiner: int  # 0 for a preset without one
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


def _count(module: nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad) if module is not None else 0


def model_summary(name: str) -> ModelSummary:
    """Parameter counts of preset ``name`` with SIDD's vocabulary (5 cameras, 5 ISOs)."""
    config = preset(name)
    model = NoiseModel(config.model)
    critic = Critic(config.gan.critic, model.space.feature_dim) if config.gan is not None else None
    return ModelSummary(name, _count(model.flow), _count(model.refiner), _count(critic), _count(DnCNN(config.denoiser)))
