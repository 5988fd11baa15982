"""DnCNN training on clean patches whose noisy partners come from a noise source, drawn on the fly.

The noise source is a frozen noise model (``nmflowgan``, or its flow alone), a closed-form baseline
(``gaussian``, ``nlf``, fitted on the training split), or ``real``: the data set's own noisy images, the
reference every synthetic source is measured against. A synthetic source can also be mixed with the real pairs
(each patch keeps its real noisy partner with probability ``real_share``) and given clean images without a partner
(``extra_clean``), which only it can make noisy: how a user with a few real pairs of a camera would train.
Validation is always on real noisy patches (PSNR), so runs with different sources are selected and compared on the
same footing. Resume, checkpoints, progress and signals behave as in noise-model training. Each rank's noise at each
step comes from a generator seeded by ``(seed, step, rank)``, so a resumed run (on any number of ranks equal to the
original) draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nmflowgan.config import Config, to_dict
from nmflowgan.data.clean_images import clean_image_records
from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.data.training_data import training_data, validation_patches
from nmflowgan.errors import BadInputError
from nmflowgan.models.dncnn import WEIGHTS_FILE, DnCNN
from nmflowgan.models.files import built_within_budget
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.noise_sources import baseline_noise, fit_baselines, model_noise
from nmflowgan.training.batching import GlobalBatchSampler
from nmflowgan.training.checkpoint import TrainingState
from nmflowgan.training.loop import Schedule, TrainingRun, TrainResult, session, step_generator
from nmflowgan.training.run import RunOptions, StopRequest

log = logging.getLogger(__name__)
# (clean patches (B, 3, P, P) in [0, 1], their batch, a generator) -> noisy patches in [0, 1]
NoisyImages = Callable[[torch.Tensor, PatchBatch, torch.Generator], torch.Tensor]
BASELINES = ("real", "gaussian", "nlf")


@dataclass(frozen=True, kw_only=True)
class DenoiserTrainingOptions(RunOptions):
    """How to train a denoiser (see :class:`RunOptions` for the common fields).

    Attributes:
        noise: ``real``, ``gaussian``, ``nlf`` or a noise-model checkpoint; flow_only: use that
            checkpoint's flow without its refiner; sampling: how that model's noise is computed.
        val_every / val_patches: validation interval (steps) and size (real noisy patches).
        fit_patches: training patches the ``gaussian``/``nlf`` baselines are fitted on.
        real_share: with a synthetic ``noise``, the probability that a patch keeps its real noisy partner (drawn per
            patch and step; 0: every patch synthesized).
        extra_clean: with a synthetic ``noise``, a folder of clean images (no partners) trained on as well, with
            noise drawn at the training pairs' conditions in turn (:mod:`nmflowgan.data.clean_images`).
    """

    noise: str
    flow_only: bool = False
    sampling: SamplingOptions = SamplingOptions()
    val_every: int = 100
    val_patches: int = 64
    fit_patches: int = 2000
    real_share: float = 0.0
    extra_clean: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.real_share, int | float) and 0 <= self.real_share <= 1):
            raise BadInputError(f"real-share must be a number from 0 to 1, got {self.real_share!r}")
        if self.noise == "real" and (self.real_share or self.extra_clean is not None):
            raise BadInputError("--real-share and --extra-clean mix real pairs with synthesized noise: give a noise "
                                "model (or gaussian / nlf) as --noise, not 'real'")


def noise_source(options: DenoiserTrainingOptions, records: list, patch_px: int, device: torch.device
                 ) -> NoisyImages:
    """The function that turns a batch of clean patches ``(B, 3, P, P)`` in [0, 1] into noisy ones."""
    if options.noise == "real":
        if options.flow_only:
            raise BadInputError("--flow-only needs a noise-model checkpoint as --noise, not 'real'")
        return lambda clean, batch, g: batch.noisy.to(clean.device).float() / 255.0
    if options.noise in ("gaussian", "nlf"):
        gaussian, nlf = fit_baselines(records, patch_px, options.fit_patches, options.seed, not options.quiet,
                                     options.max_pixels)
        noise = baseline_noise(gaussian if options.noise == "gaussian" else nlf)
    else:
        model = NoiseModel.load(options.noise, map_location=device)
        model.requires_grad_(False)
        noise = model_noise(model, refine=not options.flow_only, options=options.sampling)
    return lambda clean, batch, g: clean + noise(clean, batch, g) / 255.0


def train_denoiser(config: Config, options: DenoiserTrainingOptions, stop: StopRequest | None = None
                   ) -> TrainResult:
    """Trains (or resumes) a DnCNN of ``config.denoiser`` into ``options.out``.

    ``stop``: when set (e.g. by the command line's signal handler), the loop saves a checkpoint and returns.
    """
    stop = stop if stop is not None else StopRequest()  # an unset request is falsy
    train_config = config.denoiser_train
    with session(options) as (device, context):
        data = training_data(options.data, options.split, options.val_split, train_config.patch_px,
                             train_config.stride_px, train_config.batch_size, options.seed, options.skip_bad,
                             options.max_pixels)
        dataset = data.patches
        source = noise_source(options, dataset.records, train_config.patch_px, device)
        extra: list[PairRecord] = []
        if options.extra_clean is not None:
            extra = clean_image_records(options.extra_clean, [(r.camera, r.iso) for r in dataset.records],
                                        options.max_pixels)
            dataset = PatchDataset(dataset.records + extra, train_config.patch_px, train_config.stride_px,
                                   augment=dataset.augment, seed=options.seed, skip_bad=options.skip_bad,
                                   max_pixels=options.max_pixels)
            log.info("training also on %d clean images of %s (%d patches of %d in all)", len(extra),
                     options.extra_clean, len(dataset) - len(data.patches), len(dataset))
        validation = validation_patches(data.validation, train_config.patch_px, options.val_patches,
                                        options.skip_bad, options.max_pixels)
        if validation is not None:
            validation = (validation.clean.float() / 255.0, validation.noisy.float() / 255.0)
        with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the global RNG
            torch.manual_seed(options.seed)
            model = built_within_budget(lambda: DnCNN(config.denoiser), f"config {config.name!r}").to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
        probe = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                   options.seed, 0, 1)
        schedule = Schedule.of(options, train_config, probe.steps_per_epoch, options.val_every)
        facts = {"noise": options.noise, "flow_only": options.flow_only, "seed": options.seed,
                 "data": data.fingerprint(), "real_share": options.real_share, "extra_clean": _digest(extra),
                 "steps_per_epoch": probe.steps_per_epoch, "global_batch": train_config.batch_size,
                 "config": to_dict(config)}
        state = TrainingState(0, {}, {"denoiser": optimizer}, facts | {"options": options.to_dict()})
        run = TrainingRun(options, context, model, WEIGHTS_FILE, state, tuple(facts), "val_psnr",
                          higher_is_better=True)
        trained = DistributedDataParallel(model) if context.enabled else model
        sampler = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                     options.seed, run.start, schedule.total_steps)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=options.workers, collate_fn=collate,
                            generator=torch.Generator().manual_seed(options.seed))  # not the global RNG
        autocast = options.autocast(device)

        def train_step(batch: PatchBatch, step: int) -> dict[str, float]:
            clean = batch.clean.to(device).float() / 255.0
            with torch.no_grad():
                generator = step_generator(options.seed, step, context.rank)
                noisy = source(clean, batch, generator)
                if options.real_share > 0:  # after the synthesized draw, which stays what it is without mixing
                    noisy = mixed(noisy, batch, options.real_share, generator)
            with autocast:
                loss = F.mse_loss(trained(noisy).float(), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"l2": float(context.mean(loss.detach().double().cpu()))}

        def validate(step: int) -> None:
            if context.is_main and validation is not None:
                run.validated(step, {"val_psnr": _psnr_on(model, validation, device)})

        return run.loop(loader, schedule, train_step, validate, stop, f"denoiser ({options.noise})",
                        train_config.batch_size, validate_first=False)


def mixed(synthesized: torch.Tensor, batch: PatchBatch, real_share: float, generator: torch.Generator
          ) -> torch.Tensor:
    """``synthesized`` ``(B, 3, P, P)`` in [0, 1] with each patch that has a real noisy partner replaced by that
    partner with probability ``real_share`` (one draw per patch from ``generator``); clean-only patches keep theirs."""
    keep = torch.rand(len(synthesized), generator=generator) < real_share
    if batch.real is not None:
        keep &= batch.real
    real = batch.noisy.to(synthesized.device, synthesized.dtype) / 255.0
    return torch.where(keep.to(synthesized.device)[:, None, None, None], real, synthesized)


def _digest(records: list[PairRecord]) -> dict:
    """The number of clean-only images and a digest of their names, sizes and conditions (a resumed run must train
    on the same ones)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.clean.resolve()}|{record.clean.stat().st_size}|{record.camera}|{record.iso!r}\n"
                      .encode())
    return {"images": len(records), "digest": digest.hexdigest()[:16]}


@torch.no_grad()
def _psnr_on(model: DnCNN, patches: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    """Mean PSNR (peak 255, images quantized to 8 bits) of the denoised validation patches."""
    model.eval()
    clean, noisy = patches
    scores = []
    for start in range(0, len(clean), 32):
        denoised = model(noisy[start : start + 32].to(device)).clamp(0, 1).cpu()
        error = ((denoised * 255).round() - clean[start : start + 32] * 255).square().flatten(1).mean(1)
        scores.append(10 * torch.log10(255.0**2 / error.clamp_min(1e-10)))
    model.train()
    return float(torch.cat(scores).mean())
