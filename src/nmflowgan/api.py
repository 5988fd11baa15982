"""The application layer: one function per command, each taking plain arguments a Python user can pass.

The command line (:mod:`nmflowgan.cli`) parses, calls exactly one of these, and keeps what is its own:
progress-bar and overwrite flags from the command line, signal handlers, printing and exit codes.

========================  ==================================================================
command                   function
========================  ==================================================================
``info``                  :func:`model_summary`
``simulate``              :func:`simulate`
``train``                 :func:`train_noise_model` with :class:`NoiseTrainingOptions`
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
from pathlib import Path

from nmflowgan.config import preset
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.data.simcam import simulate
from nmflowgan.demo import demo
from nmflowgan.denoising import denoise_files, evaluate_denoiser
from nmflowgan.errors import OutputExistsError
from nmflowgan.models.critic import Critic
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.synthesis import synthesize
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, train_denoiser
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model

__all__ = ["DenoiserTrainingOptions", "ModelSummary", "NoiseTrainingOptions", "Report", "demo", "denoise_files",
           "evaluate_denoiser", "evaluate_to_report", "model_summary", "simulate", "synthesize", "train_denoiser",
           "train_noise_model"]
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
    critic = Critic(config.critic, model.space.feature_dim)
    return ModelSummary(name, _count(model.flow), _count(model.refiner), _count(critic), _count(DnCNN(config.denoiser)))


@dataclass(frozen=True)
class Report:
    """Where an evaluation report was written, and its overall table (Markdown)."""

    path: Path
    table: str


def evaluate_to_report(checkpoint: str | Path, data: str | Path, out: str | Path, split: str | None = None,
                       train_split: str | None = None, protocol: str = "default", patch_px: int | None = None,
                       max_patches: int | None = None, fit_patches: int = 2000, seed: int = 0,
                       overwrite: bool = False, progress: bool = True, title: str = "nmflowgan evaluation",
                       options: SamplingOptions | None = None, device: str = "auto",
                       max_pixels: int = MAX_PIXELS) -> Report:
    """Runs :func:`nmflowgan.evaluation.evaluate` and writes ``results.json``, ``report.md``, ``report.html``.

    ``protocol`` is ``default`` (``patch_px`` and ``max_patches`` may change it) or ``official``; ``options``
    defaults to the plain float32 path; ``device`` is ``auto``, ``cpu``, ``cuda`` or ``mps``; ``max_pixels``
    is the largest image accepted.
    """
    from nmflowgan.evaluation import evaluate
    from nmflowgan.evaluation import protocol as make_protocol
    from nmflowgan.reporting.report import results_table, write_report

    out = Path(out)
    if (out / "results.json").exists() and not overwrite:
        raise OutputExistsError(f"{out}: holds an evaluation already (pass --overwrite to replace it)")
    chosen = make_protocol(protocol, patch_px, max_patches)
    result = evaluate(checkpoint, data, split, train_split, chosen, fit_patches, seed, progress=progress,
                      options=options, device=device, max_pixels=max_pixels)
    path = write_report(result, out, title=title, intro=f"Checkpoint `{checkpoint}`, data `{data}`.")
    return Report(path, results_table(result.realism))

