"""NM-FlowGAN training: NLL of the real noise under the flow plus WGAN-GP on the refined noise.

One linear loop, read top to bottom: run folder, data, model, optimizers, resume, then steps. Each step
trains the critic on (noise, clean) pairs; every ``generator_every``-th step also trains the generator on
``w_nll * NLL + w_gan * (-D(fake))``. As in the official NM-FlowGAN code, the flow learns from the NLL
alone and the refiner from the adversarial loss alone: the refiner's input, the flow's sample, is drawn
without a graph. Each update computes only what it changes: the critic step draws fake noise without a
graph, and the generator step freezes the critic. A model with a latent-correlation filter also learns it,
on every generator step, from the correlation of the real noise's latents (a loss of its own, weighted by
``weight_correlation``; it trains the filter alone). With ``stage="flow"`` or ``weight_gan=0`` there is no
adversarial game: the flow (and the filter) train every step and the refiner stays the identity.

Every random number of a step (dequantization, latents, interpolation weights) is drawn for the whole
global batch from the step's own generator (:func:`~nmflowgan.training.loop.step_generator`), and each rank
keeps its slice: N ranks take exactly the steps one process takes with the same global batch, and a resumed
run takes exactly the steps of an uninterrupted one, with no random state to save.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nmflowgan.conditions import Condition
from nmflowgan.config import Config, TrainConfig, small, to_dict
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate, evenly_spaced
from nmflowgan.errors import BadInputError, DataError
from nmflowgan.metrics.realism import RealismScorer
from nmflowgan.models.adaptation import (
    ADAPTED_PARAMETERS,
    BaseReplay,
    check_adaptable,
    extended_state,
    nearest_cameras,
    restrict_to_new_cameras,
)
from nmflowgan.models.critic import Critic
from nmflowgan.models.files import built_within_budget
from nmflowgan.models.noise_model import WEIGHTS_FILE, NoiseModel, quantize, saved_config
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.training.batching import GlobalBatchSampler
from nmflowgan.training.checkpoint import TrainingState
from nmflowgan.training.distributed import DistributedContext
from nmflowgan.training.loop import Schedule, TrainingRun, TrainResult, session, step_generator
from nmflowgan.training.losses import critic_loss, generator_adversarial_loss
from nmflowgan.training.run import RunOptions, StopRequest, training_patches

log = logging.getLogger(__name__)
STAGES = ("joint", "flow")
# adapt's defaults, from the measurements in docs/adapt.md
ADAPT_STEPS = 400
ADAPT_LR = {"camera": 1e-2, "all": 1e-3}


@dataclass(frozen=True, kw_only=True)
class NoiseTrainingOptions(RunOptions):
    """How to run a noise-model training (see :class:`RunOptions` for the common fields).

    Attributes:
        stage: ``joint`` (NLL + GAN, unless the preset's ``weight_gan`` is 0) or ``flow`` (no GAN).
        channels_last: channels-last memory format for refiner and critic.
        base: adapt this trained model (a model or run folder, or ``builtin``) to the data's cameras instead of
            training a new one: the result knows the base's cameras and the data's (see
            :mod:`nmflowgan.models.adaptation`). The config's model part must be the base's.
        adapt: what adapts: ``camera`` (the new cameras' columns only; the base's cameras stay exactly as they
            were) or ``all`` (every weight, on the new pairs and on the base's own noise for its cameras, drawn by
            the frozen base on the same clean patches).
        replay: with ``all``, the weight of the base's own noise in the loss (0: none, and the base's cameras
            drift freely toward the new ones).
    """

    stage: str = "joint"
    channels_last: bool = False
    base: Path | str | None = None
    adapt: str = "all"
    replay: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapt not in ADAPTED_PARAMETERS:
            raise BadInputError(f"adapt {self.adapt!r} is not one of {', '.join(ADAPTED_PARAMETERS)}")
        if not (isinstance(self.replay, int | float) and math.isfinite(self.replay) and self.replay >= 0):
            raise BadInputError(f"replay must be a finite number >= 0, got {self.replay!r}")


class GeneratorObjective(nn.Module):
    """The generator's forward pass as one module, so DistributedDataParallel can wrap it: the NLL of the
    real noise, the latent-correlation loss on the real noise's latents (models with a
    :class:`~nmflowgan.models.correlation.LatentCorrelation`; else None) and, when a latent is given, the
    quantized refined noise it maps to (the flow's pixel-wise sample is not differentiated: the adversarial
    loss trains the refiner only)."""

    def __init__(self, model: NoiseModel, censored: bool = False) -> None:
        super().__init__()
        self.model = model
        self.censored = censored

    def forward(self, real_255: torch.Tensor, clean: torch.Tensor, cond: Condition, uniform: torch.Tensor,
                latent: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        z_real, nll = self.model.flow.latent_and_nll_per_dim(real_255, clean, cond, uniform=uniform,
                                                             censored=self.censored)
        correlation = self.model.correlation
        correlation_loss = correlation.loss(z_real, cond.features) if correlation is not None else None
        if latent is None:
            return nll, correlation_loss, None
        with torch.no_grad():
            correlated = self.model.compose(clean, cond, latent, refine=False)
        return nll, correlation_loss, quantize(clean, self.model.refiner(correlated, clean, cond.features))


def train_noise_model(config: Config, options: NoiseTrainingOptions, stop: StopRequest | None = None) -> TrainResult:
    """Trains (or resumes) a noise model into ``options.out``; see :class:`NoiseTrainingOptions`.

    ``stop``: when set (e.g. by the command line's signal handler), the loop saves a checkpoint and returns.
    """
    if options.stage not in STAGES:
        raise DataError(f"unknown stage {options.stage!r}; use one of {', '.join(STAGES)}")
    stop = stop if stop is not None else StopRequest()  # an unset request is falsy
    train_config = config.train
    adversarial_game = options.stage == "joint" and train_config.weight_gan > 0
    if adversarial_game and config.model.refiner is None:
        raise BadInputError(f"config {config.name!r} has weight_gan={train_config.weight_gan} but no refiner to train "
                            "(set model.refiner, or weight_gan=0)")
    # Only the parts this run trains: without an adversarial game there is no critic, and no refiner to stay
    # the identity in every draw and every checkpoint.
    model_config = config.model if adversarial_game else dataclasses.replace(config.model, refiner=None)
    with session(options) as (device, context):
        # ---- data, networks, optimizers ------------------------------------------------------------------
        dataset, val_split = training_patches(options, train_config.patch_px, train_config.stride_px,
                                              train_config.batch_size)
        cameras = sorted({r.camera for r in dataset.records})
        isos = sorted({float(r.iso) for r in dataset.records})
        replay, sources = None, None
        if options.base is not None:
            model, trainable, replay, sources = _adapted(options, dataset, cameras, isos, train_config)
            model.to(device)
            if replay is not None:
                replay.base.to(device)
            critic = None
        else:
            with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the global RNG
                torch.manual_seed(options.seed)
                what = f"config {config.name!r}"
                model = built_within_budget(lambda: NoiseModel(model_config, cameras, isos), what).to(device)
                critic = (built_within_budget(lambda: Critic(config.critic, model.space.feature_dim), what).to(device)
                          if adversarial_game else None)
            trainable = [*model.flow.parameters(), *(model.correlation.parameters() if model.correlation else [])]
        parameter_groups = [{"params": trainable, "lr": train_config.lr}]
        modules, optimizers = {}, {}
        if critic is not None:
            if options.channels_last:
                model.refiner.to(memory_format=torch.channels_last)
                critic.to(memory_format=torch.channels_last)
            parameter_groups.append({"params": model.refiner.parameters(),
                                     "lr": train_config.refiner_lr or train_config.lr})
            modules["critic"] = critic
            optimizers["critic"] = torch.optim.Adam(critic.parameters(), lr=train_config.critic_lr or train_config.lr,
                                                    betas=train_config.betas)
        optimizer_g = torch.optim.Adam(parameter_groups, betas=train_config.betas)
        optimizers = {"generator": optimizer_g, **optimizers}
        validation_set = _validation_set(options, val_split, model, train_config)
        probe = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                   options.seed, 0, 1)
        steps_per_epoch = probe.steps_per_epoch
        schedule = Schedule.of(options, train_config, steps_per_epoch, train_config.val_every)

        def eligible(step: int) -> bool:
            """With an adversarial game, "best" is the best model with a trained refiner: the flow warm-up's
            scores are logged but never chosen."""
            warmup = train_config.flow_warmup_steps
            return not adversarial_game or warmup == 0 or step > warmup

        # ---- the run: folder, resume, checkpoints ----------------------------------------------------------
        info = {"stage": options.stage, "seed": options.seed, "steps_per_epoch": steps_per_epoch,
                "global_batch": train_config.batch_size, "total_steps": schedule.total_steps, "preset": config.name,
                "config": to_dict(config), "options": options.to_dict(),
                "base": None if options.base is None else str(options.base), "adapted_from": sources}
        state = TrainingState(0, modules, optimizers, info)
        run = TrainingRun(options, context, model, WEIGHTS_FILE, state,
                          ("config", "steps_per_epoch", "global_batch", "stage", "seed"), "val_kld", eligible=eligible)
        if run.resumed:
            log.info("resuming %s from step %d", run.run_dir, run.start)
        elif options.base is None:  # an adapted model starts from its base, not from the data
            # The whole first global batch on every rank, so all ranks start from the same initialization.
            batch = collate([dataset[(index, 0)] for index in probe.global_indices(0).tolist()])
            clean, real = _as_float(batch, device)
            model.flow.initialize(real, clean, model.encode(batch.cameras, batch.isos.tolist(), len(batch.cameras)),
                                  generator=torch.Generator().manual_seed(options.seed))  # the same on every rank

        generator_objective: nn.Module = GeneratorObjective(model, train_config.censor_ends)
        critic_forward = critic
        if context.enabled:
            generator_objective = DistributedDataParallel(generator_objective, find_unused_parameters=True)
            critic_forward = DistributedDataParallel(critic) if critic is not None else None
        sampler = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                     options.seed, run.start, schedule.total_steps)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=options.workers, collate_fn=collate,
                            persistent_workers=False, generator=torch.Generator().manual_seed(options.seed))
        autocast = options.autocast(device)
        local = sampler.local_slice()
        patch_shape = (train_config.batch_size, 3, train_config.patch_px, train_config.patch_px)

        # ---- one step --------------------------------------------------------------------------------------
        def train_step(batch: PatchBatch, step: int) -> dict[str, float]:
            clean, real = _as_float(batch, device)
            cond = model.encode(batch.cameras, batch.isos.tolist(), clean.shape[0])
            rng = step_generator(options.seed, step)  # the global batch's draws, the same on every rank
            uniform = torch.rand(patch_shape, generator=rng)[local].to(device)
            adversarial = adversarial_game and step >= train_config.flow_warmup_steps
            losses: dict[str, float] = {}
            if adversarial:  # the critic, on fake noise drawn without a graph
                latent = torch.randn(patch_shape, generator=rng)[local].to(device)
                alpha = torch.rand((train_config.batch_size, 1, 1, 1), generator=rng)[local].to(device)
                with torch.no_grad(), autocast:
                    fake = quantize(clean, model.noise(clean, cond, latent=latent).float())
                with autocast:
                    loss_c, distance, penalty = critic_loss(critic_forward, real, fake, clean, alpha,
                                                            train_config.gp_lambda, config.critic.noise_scale,
                                                            cond.features)
                optimizers["critic"].zero_grad(set_to_none=True)
                loss_c.float().backward()
                optimizers["critic"].step()
                losses.update(critic=loss_c.item(), wasserstein=distance.item(), gp=penalty.item())
            if not adversarial or (step + 1) % train_config.generator_every == 0:  # the generator, critic frozen
                latent = torch.randn(patch_shape, generator=rng)[local].to(device) if adversarial else None
                if critic is not None:
                    critic.requires_grad_(False)
                with autocast:
                    nll, correlation_loss, fake = generator_objective(real, clean, cond, uniform, latent)
                    loss_g = train_config.weight_nll * nll.float()
                    if correlation_loss is not None:
                        loss_g = loss_g + train_config.weight_correlation * correlation_loss.float()
                        losses["correlation"] = correlation_loss.item()
                    if replay is not None:  # the base's own noise for its cameras, on the same clean patches
                        replay_rng = step_generator(options.seed, step, 1)
                        noise, replay_cameras, replay_isos = replay.draw(clean, replay_rng)
                        replay_cond = model.encode(replay_cameras, replay_isos, clean.shape[0])
                        replay_uniform = torch.rand(patch_shape, generator=replay_rng)[local].to(device)
                        replay_nll, replay_correlation, _ = generator_objective(noise, clean, replay_cond,
                                                                                replay_uniform, None)
                        replay_loss = train_config.weight_nll * replay_nll.float()
                        if replay_correlation is not None:
                            replay_loss = replay_loss + train_config.weight_correlation * replay_correlation.float()
                        loss_g = loss_g + options.replay * replay_loss
                        losses["replay_nll"] = replay_nll.item()
                    if fake is not None:
                        adversarial_loss = generator_adversarial_loss(critic, fake, clean, cond.features).float()
                        loss_g = loss_g + train_config.weight_gan * adversarial_loss
                        losses["gan"] = adversarial_loss.item()
                optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
                optimizer_g.step()
                if critic is not None:
                    critic.requires_grad_(True)
                losses["nll"] = nll.item()
            return _agreed(losses, context)

        def validate(step: int) -> None:
            if context.is_main and validation_set is not None:
                run.validated(step, _validate(model, validation_set, options.seed, train_config.batch_size))

        description = "train (NLL + GAN)" if adversarial_game else "train (NLL)"
        return run.loop(loader, schedule, train_step, validate, stop, description, train_config.batch_size)


def adapt_noise_model(options: NoiseTrainingOptions, lr: float | None = None, stop: StopRequest | None = None
                      ) -> TrainResult:
    """Adapts ``options.base`` to the cameras of ``options.data`` (``nmflowgan adapt``): a run folder like any
    training's, whose model knows the base's cameras and the new ones.

    The run trains with ``small``'s schedule (48 px patches, batches of 16) for ``options.steps`` (default
    :data:`ADAPT_STEPS`) at rate ``lr`` (default :data:`ADAPT_LR` of ``options.adapt``), halved every third of
    the run; no adversarial game.
    """
    if options.base is None:
        raise BadInputError("adapt needs a base model (a model or run folder, or 'builtin')")
    if options.steps is None and options.epochs is None:
        options = dataclasses.replace(options, steps=ADAPT_STEPS)
    preset = small()
    steps = options.steps or ADAPT_STEPS
    train = dataclasses.replace(preset.train, lr=lr if lr is not None else ADAPT_LR[options.adapt],
                                lr_decay_every=max(1, steps // 3 + 1), weight_gan=0.0)
    config = dataclasses.replace(preset, name="adapt", model=saved_config(options.base), train=train)
    return train_noise_model(config, options, stop)


# ---- helpers ------------------------------------------------------------------------------------------


def _adapted(options: NoiseTrainingOptions, dataset: PatchDataset, cameras: list[str], isos: list[float],
             train_config: TrainConfig
             ) -> tuple[NoiseModel, list[nn.Parameter], BaseReplay | None, dict[str, str]]:
    """The base model extended by the data's cameras, each started from the base camera that explains its
    noise best; the parameters to train; the base's replay (``all``; else None); which base camera each new one
    started from. Refuses data the base cannot be adapted to before any work."""
    base = NoiseModel.load(options.base)
    check_adaptable(base.space, cameras, isos, len(dataset.records), str(options.data))
    model = NoiseModel(base.config, base.cameras + tuple(cameras), base.isos)
    chosen = []  # up to 64 patches of each new camera, spread over its pairs
    for camera in cameras:
        indices = [i for pair, record in enumerate(dataset.records) if record.camera == camera
                   for i in range(dataset.starts[pair], dataset.starts[pair + 1])]
        chosen += [indices[i] for i in evenly_spaced(len(indices), 64)]
    patches = collate([dataset[(index, 0)] for index in chosen])
    clean, noise = patches.clean.float() / 255.0, patches.noisy.float() - patches.clean.float()
    uniform = torch.rand(noise.shape, generator=torch.Generator().manual_seed(options.seed))
    of_camera = {new: torch.tensor([camera == new for camera in patches.cameras]) for new in cameras}

    def score(new: str, source: str) -> float:
        mine = of_camera[new]
        cond = base.encode(source, patches.isos[mine].tolist(), int(mine.sum()))
        _, log_prob = base.flow.latent_and_log_prob(noise[mine], clean[mine], cond, uniform=uniform[mine],
                                                    censored=train_config.censor_ends)
        return -float(log_prob.mean())

    sources = nearest_cameras(score, base.cameras, cameras)
    log.info("adapting %s: new camera(s) start from the base's %s", options.base,
             ", ".join(f"{new} <- {source}" for new, source in sources.items()))
    columns = extended_state(base, base.space, model, [sources[c] for c in cameras])
    if options.adapt == "camera":
        return model, restrict_to_new_cameras(model, columns), None, sources
    return model, list(model.parameters()), BaseReplay(base) if options.replay > 0 else None, sources


def _as_float(batch: PatchBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clean in [0, 1], real noise in 8-bit units)`` on ``device``."""
    clean = batch.clean.to(device).float()
    return clean / 255.0, batch.noisy.to(device).float() - clean


def _agreed(losses: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """The losses averaged over ranks, so every rank takes the same decisions (e.g. stopping)."""
    if not context.enabled or not losses:
        return losses
    names = sorted(losses)
    values = context.mean(torch.tensor([losses[n] for n in names], dtype=torch.float64))
    return dict(zip(names, values.tolist()))


@dataclass(frozen=True)
class ValidationSet:
    """Fixed validation patches: clean ``(N, 3, P, P)`` in [0, 1], real noise in 8-bit units, conditions."""

    clean: torch.Tensor
    noise: torch.Tensor
    cameras: list[str]
    isos: list[float]


def _validation_set(options: NoiseTrainingOptions, split: str | None, model: NoiseModel, config: TrainConfig
                    ) -> ValidationSet | None:
    """Evenly spaced patches of the validation split whose camera and ISO the model knows."""
    if split is None:
        return None
    records = [r for r in find_pairs(options.data, split, options.skip_bad) if model.space.knows(r.camera, r.iso)]
    if not records:
        log.warning("no validation pairs with a known camera/ISO in split %s; validation is skipped", split)
        return None
    patch = config.patch_px
    dataset = PatchDataset(records, patch, patch, skip_bad=options.skip_bad, max_pixels=options.max_pixels)
    batch = collate([dataset[i] for i in dataset.evenly_spaced(config.val_patches)])
    clean = batch.clean.float()
    return ValidationSet(clean / 255.0, batch.noisy.float() - clean, batch.cameras, batch.isos.tolist())


@torch.no_grad()
def _validate(model: NoiseModel, data: ValidationSet, seed: int, batch_size: int) -> dict[str, float]:
    """KLD, AKLD and correlation error of the model's noise against the real noise of the validation patches,
    scored as ``evaluate`` scores (:class:`RealismScorer`, default protocol) and drawn with a fixed seed
    through the plain float32 path (the weights change every step; a folded copy would be rebuilt for
    each validation)."""
    generator = torch.Generator().manual_seed(seed + 1)
    device = next(model.parameters()).device
    scorer = RealismScorer(["model"])
    for start in range(0, len(data.cameras), batch_size):
        part = slice(start, start + batch_size)
        clean, real = data.clean[part].to(device), data.noise[part].to(device)
        cond = model.encode(data.cameras[part], data.isos[part], clean.shape[0])
        fake = model.quantized_noise(clean, cond, generator, options=SamplingOptions.plain())
        scorer.update(clean, real, {"model": fake}, list(zip(data.cameras[part], data.isos[part])))
    scores = scorer.result().models["model"]
    return {"val_kld": scores.kld, "val_akld": scores.akld, "val_corr_error": scores.corr_error}
