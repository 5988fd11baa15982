"""Adaptation as a stage of its own (``nmflowgan adapt``): a trained base model taught the cameras of a few image
pairs, trained by the ordinary noise trainer.

The stage loads the base once, refuses data it cannot adapt to before any work, starts each new camera from the
base camera whose noise explains its pairs best, grows the model by those cameras
(:mod:`nmflowgan.models.adaptation`), chooses what may change and, with ``all``, adds the replay of the base's
own noise as the trainer's extra loss. The run is a run folder like any training's (resumable, ``best``/``last``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nmflowgan.config import Config, small
from nmflowgan.data.patches import evenly_spaced
from nmflowgan.data.training_data import TrainingData
from nmflowgan.errors import BadInputError
from nmflowgan.matching import grouped_patches, mean_nll
from nmflowgan.models.adaptation import (
    ADAPTED_PARAMETERS,
    BaseReplay,
    check_adaptable,
    grown_model,
    nearest_cameras,
    restrict_to_new_cameras,
    with_camera_parameters,
)
from nmflowgan.models.noise_model import BUILTIN, BUILTIN_DIR, NoiseModel
from nmflowgan.training.loop import TrainResult, step_generator
from nmflowgan.training.noise_trainer import (
    ExtraLoss,
    LossOf,
    NoiseTrainingOptions,
    Trainee,
    TraineeBuilder,
    train_noise_model,
)
from nmflowgan.training.run import StopRequest

log = logging.getLogger(__name__)
# adapt's defaults, from the measurements in docs/adapt.md
ADAPT_STEPS = 400
ADAPT_LR = {"adapters": 1e-3, "camera": 1e-2, "all": 1e-3}
ADAPT_LR_PARTS = 3  # the rate is halved at each third of the run
SCORED_PATCHES = 64  # patches of each new camera scored under the finalist base cameras to pick its start
# patches of each new camera scored under every base camera to choose the finalists: on the 5-pair polyu and
# nam_cc15 subsets, 8 patches put the camera that all 64 pick first for all 8 new cameras (docs/adapt.md)
SCREENED_PATCHES = 8


@dataclass(frozen=True)
class AdaptationOptions:
    """What an adaptation starts from and what it may change.

    Attributes:
        base: the trained model to adapt: a model or run folder, or ``builtin``.
        adapt: ``adapters`` (the new cameras' columns and a scale and shift per new camera of every hidden layer of the
            flow; the base's cameras stay exactly as they were), ``camera`` (the new cameras' columns only) or ``all``
            (every weight, on the new pairs and on noise the frozen base draws for its own cameras).
        replay: with ``all``, the weight of the base's own noise in the loss (0: none, and the base's cameras drift
            freely toward the new ones).
        lr: the learning rate (None: :data:`ADAPT_LR` of ``adapt``).
    """

    base: Path | str
    adapt: str = "all"
    replay: float = 1.0
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.adapt not in ADAPTED_PARAMETERS:
            raise BadInputError(f"adapt {self.adapt!r} is not one of {', '.join(ADAPTED_PARAMETERS)}")
        if not (isinstance(self.replay, int | float) and math.isfinite(self.replay) and self.replay >= 0):
            raise BadInputError(f"replay must be a finite number >= 0, got {self.replay!r}")
        if self.lr is not None and not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(f"lr must be a finite number > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        return {"base": str(self.base), "adapt": self.adapt, "replay": self.replay, "lr": self.lr}


def adapt_noise_model(options: NoiseTrainingOptions, adaptation: AdaptationOptions, stop: StopRequest | None = None
                      ) -> TrainResult:
    """Adapts ``adaptation.base`` to the cameras of ``options.data``: a run folder like any training's, whose model
    knows the base's cameras and the new ones.

    The run trains with ``small``'s schedule (48 px patches, batches of 16) for ``options.steps`` (default
    :data:`ADAPT_STEPS`) at ``adaptation.lr``, halved at each third of the run, however long it is; no
    adversarial game.
    """
    _refuse_output_beside_base(Path(options.out), adaptation.base)
    base = NoiseModel.load(adaptation.base)
    if options.steps is None and options.epochs is None:
        options = dataclasses.replace(options, steps=ADAPT_STEPS)
    config = adaptation_config(base, adaptation)
    return train_noise_model(config, options, stop, _adapted(base, adaptation, options.seed, config.train.censor_ends))


def _refuse_output_beside_base(out: Path, base: Path | str) -> None:
    """An adaptation's run folder may not be its base's folder, lie inside it or hold it: ``--overwrite`` would
    delete the base, and the base's own model.json would shadow the new run."""
    folder = (BUILTIN_DIR if isinstance(base, str) and base == BUILTIN else Path(base)).resolve()
    if out.resolve() == folder or out.resolve().is_relative_to(folder) or folder.is_relative_to(out.resolve()):
        raise BadInputError(f"{out}: is the base model's folder {base} or shares it; an output may never be an "
                            "input, so choose another --out")


def adaptation_config(base: NoiseModel, adaptation: AdaptationOptions) -> Config:
    """``small``'s training settings on the base's architecture, at the adaptation's rate, with the rate halved at
    each third of the run and no adversarial game (the refiner, if any, is not retrained). Patches take every
    symmetry (``augment="all"``), as adaptation was measured (docs/adapt.md): a few pairs need them all, and the
    latent correlation is fitted upright whatever a patch was given."""
    preset = small()
    model = base.config
    if adaptation.adapt == "adapters":
        model = with_camera_parameters(model)
    train = dataclasses.replace(preset.train, lr=adaptation.lr or ADAPT_LR[adaptation.adapt],
                                lr_decay_every=ADAPT_LR_PARTS, lr_decay_unit="run", augment="all")
    return dataclasses.replace(preset, name="adapt", model=model, train=train, gan=None)


def _adapted(base: NoiseModel, adaptation: AdaptationOptions, seed: int, censored: bool) -> TraineeBuilder:
    """The builder of the adapted model: the base extended by the data's cameras, each started from the base
    camera that explains its noise best, with the parameters ``adapt`` lets train and, with ``all``, the base's
    replay as the extra loss. Refuses data the base cannot be adapted to before any work."""

    def build(data: TrainingData, device: torch.device) -> Trainee:
        cameras, isos = data.cameras, data.isos
        check_adaptable(base.space, cameras, isos, len(data.patches.records), str(data.source))
        sources = nearest_cameras(_likelihood_scores(base, data, seed, censored), base.cameras, cameras)
        log.info("adapting %s: new camera(s) start from the base's %s", adaptation.base,
                 ", ".join(f"{new} <- {source}" for new, source in sources.items()))
        model, columns = grown_model(base, [sources[c] for c in cameras], cameras, adaptation.adapt == "adapters")
        model.to(device)
        facts = {"adaptation": adaptation.to_dict() | {"adapted_from": sources}}
        if adaptation.adapt in ("camera", "adapters"):
            return Trainee(model, restrict_to_new_cameras(model, columns), fresh=False, facts=facts)
        extra = _replay_loss(BaseReplay(base.to(device)), adaptation.replay, seed) if adaptation.replay > 0 else None
        return Trainee(model, list(model.parameters()), fresh=False, extra_loss=extra, facts=facts)
    return build


def _likelihood_scores(base: NoiseModel, data: TrainingData, seed: int, censored: bool
                       ) -> Callable[[str, str, bool], float]:
    """``score(new, source, screen)``: the mean NLL under base camera ``source``, at their own ISOs, of up to
    :data:`SCORED_PATCHES` patches of new camera ``new`` spread over its pairs, or of :data:`SCREENED_PATCHES` of
    them spread over those where ``screen`` (lower is better; the first stage of ``nmflowgan match``)."""
    chosen = grouped_patches(data.patches, lambda record: record.camera, SCORED_PATCHES)
    uniform = {camera: torch.rand(batch.noisy.shape, generator=torch.Generator().manual_seed(seed))
               for camera, batch in chosen.items()}
    few = {camera: evenly_spaced(len(batch.clean), SCREENED_PATCHES) for camera, batch in chosen.items()}

    def score(new: str, source: str, screen: bool) -> float:
        batch, noise_uniform = chosen[new], uniform[new]
        if screen:
            batch, noise_uniform = batch.subset(few[new]), noise_uniform[few[new]]
        return mean_nll(base, batch, source, batch.isos.tolist(), noise_uniform, censored)
    return score


def _replay_loss(replay: BaseReplay, weight: float, seed: int) -> ExtraLoss:
    """The trainer's extra loss of ``all``: the generator's loss on noise the frozen base draws for its own cameras
    on the step's clean patches, times ``weight``."""

    def extra_loss(loss_of: LossOf, clean: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = step_generator(seed, step, 1)
        noise, cameras, isos = replay.draw(clean, rng)
        loss, nll = loss_of(noise, clean, cameras, isos, rng)
        return weight * loss, {"replay_nll": nll.item()}
    return extra_loss
