"""NM-FlowGAN training: NLL of the real noise under the flow, plus WGAN-GP on the refined noise when the config
has an adversarial game (:class:`~nmflowgan.config.GanConfig`).

One linear loop, read top to bottom: run folder, data, what to train, optimizers, resume, then steps. What to
train is a :class:`Trainee`, built once the data is known: by default a new model of the config (initialized from
the first batch); :mod:`nmflowgan.training.adaptation` builds one from a trained base instead, with the parameters
it may change and an extra loss of its own. The trainer knows nothing of where its trainee came from.

With a game, each step trains the critic on (noise, clean) pairs; every ``generator_every``-th step also trains the
generator on ``weight_nll * NLL + weight * (-D(fake))``. As in the official NM-FlowGAN code, the flow learns from the
NLL alone and the refiner from the adversarial loss alone: the refiner's input, the flow's sample, is drawn without
a graph. Each update computes only what it changes: the critic step draws fake noise without a graph, and the
generator step freezes the critic. A model with a latent-correlation filter also learns it, on every generator step,
from the correlation of the real noise's latents (a loss of its own, weighted by ``weight_correlation``; it trains
the filter alone). Without a game (``stage="flow"`` or no ``gan`` section) the flow (and the filter) train every
step and the model has no refiner.

Every random number of a step (dequantization, latents, interpolation weights) is drawn for the whole global batch
from the step's own generator (:func:`~nmflowgan.training.loop.step_generator`), and each rank keeps its slice: N
ranks take exactly the steps one process takes with the same global batch, and a resumed run takes exactly the
steps of an uninterrupted one, with no random state to save.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nmflowgan.conditions import Condition
from nmflowgan.config import Config, ModelConfig, to_dict
from nmflowgan.data.patches import PatchBatch, collate
from nmflowgan.data.symmetries import upright
from nmflowgan.data.training_data import TrainingData, training_data, validation_patches
from nmflowgan.errors import BadInputError
from nmflowgan.metrics.realism import RealismScorer
from nmflowgan.models.critic import Critic
from nmflowgan.models.files import built_within_budget
from nmflowgan.models.noise_model import WEIGHTS_FILE, NoiseModel, exact_8bit_noise, quantize
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.training.batching import GlobalBatchSampler
from nmflowgan.training.checkpoint import TrainingState
from nmflowgan.training.distributed import DistributedContext
from nmflowgan.training.loop import Schedule, TrainingRun, TrainResult, session, step_generator
from nmflowgan.training.losses import critic_loss, generator_adversarial_loss
from nmflowgan.training.run import RunOptions, StopRequest

log = logging.getLogger(__name__)
STAGES = ("joint", "flow")


@dataclass(frozen=True, kw_only=True)
class NoiseTrainingOptions(RunOptions):
    """How to run a noise-model training (see :class:`RunOptions` for the common fields).

    Attributes:
        stage: ``joint`` (NLL + GAN, when the config has a ``gan`` section) or ``flow`` (no GAN, whatever the
            config).
        channels_last: channels-last memory format for refiner and critic.
    """

    stage: str = "joint"
    channels_last: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in STAGES:
            raise BadInputError(f"stage {self.stage!r} is not one of {', '.join(STAGES)}")


# ``loss_of(noise, clean, cameras, isos, generator) -> (loss, nll)``: the generator's own loss (weighted NLL and
# latent-correlation loss) of noise in 8-bit units on ``clean`` in [0, 1] under the given conditions, its
# dequantization drawn from ``generator``; what an extra loss scores its noise with.
LossOf = Callable[[torch.Tensor, torch.Tensor, list[str], list[float], torch.Generator],
                  tuple[torch.Tensor, torch.Tensor]]
# ``extra_loss(loss_of, clean, step) -> (loss, logged values)``, added to the generator's loss on every generator
# step, on the step's clean patches.
ExtraLoss = Callable[[LossOf, torch.Tensor, int], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Trainee:
    """What a noise-model training trains, built once its data is known.

    Attributes:
        model: the noise model (on the run's device).
        parameters: what the generator's optimizer updates, besides a game's refiner.
        fresh: a new model, set from the first batch (:meth:`~nmflowgan.flows.flow.NoiseFlow.initialize`) before
            the first step; False: it starts from trained weights.
        extra_loss: a loss added on every generator step (e.g. an adaptation's replay of its base), or None.
        facts: what the run records of how the trainee was made (``training.json``); a resume must match them.
    """

    model: NoiseModel
    parameters: list[nn.Parameter]
    fresh: bool = True
    extra_loss: ExtraLoss | None = None
    facts: dict = field(default_factory=dict)


# ``build(data, device) -> Trainee``
TraineeBuilder = Callable[[TrainingData, torch.device], Trainee]


def new_model(config: ModelConfig, seed: int, what: str = "the config") -> TraineeBuilder:
    """A new model of ``config`` for the data's cameras and ISOs (seeded initialization that leaves the global RNG
    alone), training the flow and the latent correlation; ``what`` names the config in a refusal."""

    def build(data: TrainingData, device: torch.device) -> Trainee:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = built_within_budget(lambda: NoiseModel(config, data.cameras, data.isos), what)
        correlation = list(model.correlation.parameters()) if model.correlation is not None else []
        return Trainee(model.to(device), [*model.flow.parameters(), *correlation])
    return build


class GeneratorObjective(nn.Module):
    """The generator's forward pass as one module, so DistributedDataParallel can wrap it: the NLL of the real noise,
    the latent-correlation loss on the real noise's latents, each patch turned back from the symmetry it was given
    (models with a :class:`~nmflowgan.models.correlation.LatentCorrelation`; else None) and, when a latent is given,
    the quantized refined noise it maps to (the flow's pixel-wise sample is not differentiated: the adversarial loss
    trains the refiner only)."""

    def __init__(self, model: NoiseModel, censored: bool = False) -> None:
        super().__init__()
        self.model = model
        self.censored = censored

    def forward(self, real_255: torch.Tensor, clean: torch.Tensor, cond: Condition, uniform: torch.Tensor,
                latent: torch.Tensor | None, symmetries: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        z_real, log_prob = self.model.flow.latent_and_log_prob(real_255, clean, cond, uniform=uniform,
                                                               censored=self.censored)
        nll = -log_prob.mean() / real_255[0].numel()  # nats per dimension
        correlation = self.model.correlation
        correlation_loss = None
        if correlation is not None:  # fitted to the latents as the camera laid them out, patches turned back
            as_laid = cond if cond.grid is None else cond.with_grid(upright(cond.grid, symmetries))
            correlation_loss = correlation.loss(upright(z_real, symmetries), as_laid, upright(clean, symmetries))
        if latent is None:
            return nll, correlation_loss, None
        return nll, correlation_loss, quantize(clean, self.model.compose(clean, cond, latent, refiner_only=True))


def train_noise_model(config: Config, options: NoiseTrainingOptions, stop: StopRequest | None = None,
                      build: TraineeBuilder | None = None) -> TrainResult:
    """Trains (or resumes) a noise model into ``options.out``; see :class:`NoiseTrainingOptions`.

    Args:
        build: what to train (default: :func:`new_model` of ``config``); called once the data is read, on every
            rank alike.
        stop: when set (e.g. by the command line's signal handler), the loop saves a checkpoint and returns.
    """
    stop = stop if stop is not None else StopRequest()  # an unset request is falsy
    train_config, gan = config.train, config.gan if options.stage == "joint" else None
    if gan is not None and config.model.refiner is None:
        raise BadInputError(f"config {config.name!r} has an adversarial game (gan) but no refiner to train "
                            "(set model.refiner, or gan to null)")
    # Only the parts this run trains: without an adversarial game there is no critic, and no refiner to stay
    # the identity in every draw and every checkpoint.
    model_config = config.model if gan is not None else dataclasses.replace(config.model, refiner=None)
    build = build or new_model(model_config, options.seed, f"config {config.name!r}")
    with session(options) as (device, context):
        # ---- data, networks, optimizers ------------------------------------------------------------------
        data = training_data(options.data, options.split, options.val_split, train_config.patch_px,
                             train_config.stride_px, train_config.batch_size, options.seed, options.skip_bad,
                             options.max_pixels, train_config.augment)
        dataset = data.patches
        trainee = build(data, device)
        model = trainee.model
        parameter_groups = [{"params": trainee.parameters, "lr": train_config.lr}]
        modules, optimizers, critic = {}, {}, None
        if gan is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(options.seed + 1)
                critic = built_within_budget(lambda: Critic(gan.critic, model.space.feature_dim),
                                             f"config {config.name!r}").to(device)
            if options.channels_last:
                model.refiner.to(memory_format=torch.channels_last)
                critic.to(memory_format=torch.channels_last)
            parameter_groups.append({"params": model.refiner.parameters(), "lr": gan.refiner_lr or train_config.lr})
            modules["critic"] = critic
            optimizers["critic"] = torch.optim.Adam(critic.parameters(), lr=gan.critic_lr or train_config.lr,
                                                    betas=train_config.betas)
        optimizer_g = torch.optim.Adam(parameter_groups, betas=train_config.betas)
        optimizers = {"generator": optimizer_g, **optimizers}
        validation_set = validation_patches([r for r in data.validation if model.space.knows(r.camera, r.iso)],
                                            train_config.patch_px, train_config.val_patches, options.skip_bad,
                                            options.max_pixels)
        if data.validation and validation_set is None:
            log.warning("no validation pairs with a known camera/ISO in %s; validation is skipped", data.source)
        probe = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                   options.seed, 0, 1)
        steps_per_epoch = probe.steps_per_epoch
        schedule = Schedule.of(options, train_config, steps_per_epoch, train_config.val_every)
        warmup = gan.flow_warmup_steps if gan is not None else 0

        def eligible(step: int) -> bool:
            """With an adversarial game, "best" is the best model with a trained refiner: the flow warm-up's
            scores are logged but never chosen."""
            return warmup == 0 or step > warmup

        # ---- the run: folder, resume, checkpoints ----------------------------------------------------------
        facts = {"config": to_dict(config), "data": data.fingerprint(), "steps_per_epoch": steps_per_epoch,
                 "global_batch": train_config.batch_size, "stage": options.stage, "seed": options.seed,
                 **trainee.facts}
        info = {**facts, "total_steps": schedule.total_steps, "preset": config.name, "options": options.to_dict()}
        state = TrainingState(0, modules, optimizers, info)
        run = TrainingRun(options, context, model, WEIGHTS_FILE, state, tuple(facts), "val_kld", eligible=eligible)
        if run.resumed:
            log.info("resuming %s from step %d", run.run_dir, run.start)
        elif trainee.fresh:
            # The whole first global batch on every rank, so all ranks start from the same initialization.
            batch = collate([dataset[(index, 0)] for index in probe.global_indices(0).tolist()])
            clean, real = _as_float(batch, device)
            model.flow.initialize(real, clean, model.encode(batch.cameras, batch.isos.tolist(), len(batch.cameras),
                                                            grid=batch.grid),
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

        def weighted(nll: torch.Tensor, correlation_loss: torch.Tensor | None) -> torch.Tensor:
            """The generator's own loss: the weighted NLL plus, for a model with a latent filter, its weighted
            correlation loss."""
            loss = train_config.weight_nll * nll.float()
            if correlation_loss is not None:
                loss = loss + train_config.weight_correlation * correlation_loss.float()
            return loss

        def loss_of(noise: torch.Tensor, clean: torch.Tensor, cameras: list[str], isos: list[float],
                    rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            """The generator's NLL-and-correlation loss of ``noise`` (see :data:`LossOf`) and its NLL."""
            cond = model.encode(cameras, isos, clean.shape[0])
            uniform = torch.rand(patch_shape, generator=rng)[local].to(device)
            nll, correlation_loss, _ = generator_objective(noise, clean, cond, uniform, None)
            return weighted(nll, correlation_loss), nll

        # ---- one step --------------------------------------------------------------------------------------
        def train_step(batch: PatchBatch, step: int) -> dict[str, float]:
            clean, real = _as_float(batch, device)
            cond = model.encode(batch.cameras, batch.isos.tolist(), clean.shape[0], grid=batch.grid)
            rng = step_generator(options.seed, step)  # the global batch's draws, the same on every rank
            uniform = torch.rand(patch_shape, generator=rng)[local].to(device)
            adversarial = gan is not None and step >= gan.flow_warmup_steps
            losses: dict[str, float] = {}
            if adversarial:  # the critic, on fake noise drawn without a graph
                latent = torch.randn(patch_shape, generator=rng)[local].to(device)
                alpha = torch.rand((train_config.batch_size, 1, 1, 1), generator=rng)[local].to(device)
                with autocast:
                    fake = model.draw(clean, cond, latent=latent, options=SamplingOptions.plain()).float()
                    loss_c, distance, penalty = critic_loss(critic_forward, real, fake, clean, alpha, gan.gp_lambda,
                                                            gan.critic.noise_scale, cond.features)
                optimizers["critic"].zero_grad(set_to_none=True)
                loss_c.float().backward()
                optimizers["critic"].step()
                losses.update(critic=loss_c.item(), wasserstein=distance.item(), gp=penalty.item())
            if not adversarial or (step + 1) % gan.generator_every == 0:  # the generator, critic frozen
                latent = torch.randn(patch_shape, generator=rng)[local].to(device) if adversarial else None
                if critic is not None:
                    critic.requires_grad_(False)
                with autocast:
                    nll, correlation_loss, fake = generator_objective(real, clean, cond, uniform, latent,
                                                                      batch.symmetries)
                    loss_g = weighted(nll, correlation_loss)
                    if correlation_loss is not None:
                        losses["correlation"] = correlation_loss.item()
                    if trainee.extra_loss is not None:
                        extra, logged = trainee.extra_loss(loss_of, clean, step)
                        loss_g = loss_g + extra
                        losses.update(logged)
                    if fake is not None:
                        adversarial_loss = generator_adversarial_loss(critic, fake, clean, cond.features).float()
                        loss_g = loss_g + gan.weight * adversarial_loss
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
                run.validated(step, validation_scores(model, validation_set, options.seed, train_config.batch_size))

        description = "train (NLL + GAN)" if gan is not None else "train (NLL)"
        return run.loop(loader, schedule, train_step, validate, stop, description, train_config.batch_size)


# ---- helpers ------------------------------------------------------------------------------------------


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


@torch.no_grad()
def validation_scores(model: NoiseModel, patches: PatchBatch, seed: int, batch_size: int) -> dict[str, float]:
    """KLD, AKLD and correlation error of the model's noise against the real noise of the validation patches,
    scored as ``evaluate`` scores (:class:`RealismScorer`, default protocol) and drawn with a fixed seed
    through the plain float32 path (the weights change every step; a folded copy would be rebuilt for
    each validation)."""
    generator = torch.Generator().manual_seed(seed + 1)
    device = next(model.parameters()).device
    scorer = RealismScorer(["model"])
    isos = patches.isos.tolist()
    for start in range(0, len(patches.cameras), batch_size):
        part = slice(start, start + batch_size)
        clean = patches.clean[part].to(device).float()
        real = patches.noisy[part].to(device).float() - clean
        clean = clean / 255.0
        grid = patches.grid[part] if patches.grid is not None else None
        cond = model.encode(patches.cameras[part], isos[part], clean.shape[0], grid=grid)
        fake = exact_8bit_noise(model.draw(clean, cond, generator, options=SamplingOptions.plain()),
                                patches.clean[part])
        scorer.update(clean, real, {"model": fake}, list(zip(patches.cameras[part], isos[part])))
    scores = scorer.result().models["model"]
    return {"val_kld": scores.kld, "val_akld": scores.akld, "val_corr_error": scores.corr_error}
