"""DnCNN training on clean patches whose noisy partners come from a noise source, drawn on the fly.

The noise source is a frozen noise model (``nmflowgan``, or its flow alone), a closed-form baseline
(``gaussian``, ``nlf``, fitted on the training split), or ``real``: the data set's own noisy images, the
reference every synthetic source is measured against. Validation is always on real noisy patches (PSNR),
so runs with different sources are selected and compared on the same footing. Resume, checkpoints,
progress and signals behave as in noise-model training. Each rank's noise at each step comes from a generator
seeded by ``(seed, step, rank)``, so a resumed run (on any number of ranks equal to the original) draws
exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from nmflowgan.config import Config
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.devices import resolve_device
from nmflowgan.errors import BadInputError, TrainingError
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.files import built_within_budget, load_weights
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.noise_sources import baseline_noise, fit_baselines, model_noise
from nmflowgan.training.batching import GlobalBatchSampler
from nmflowgan.training.checkpoint import TrainingState, load_checkpoint, point, save_checkpoint
from nmflowgan.training.distributed import setup, teardown
from nmflowgan.training.run import MetricsLog, RunOptions, StopRequest, run_lock, start_run, training_patches

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
    """

    noise: str
    flow_only: bool = False
    sampling: SamplingOptions = SamplingOptions()
    val_every: int = 100
    val_patches: int = 64
    fit_patches: int = 2000


@dataclass
class DenoiserTrainResult:
    run_dir: Path
    step: int
    total_steps: int
    interrupted: str | None
    validation: list[dict]


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
                   ) -> DenoiserTrainResult:
    """Trains (or resumes) a DnCNN of ``config.denoiser`` into ``options.out``.

    ``stop``: when set (e.g. by the command line's signal handler), the loop saves a checkpoint and returns.
    """
    stop = stop if stop is not None else StopRequest()  # an unset request is falsy
    device = resolve_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = setup(device)
    try:
        with run_lock(Path(options.out), context.is_main):
            train_config = config.denoiser_train
            run_dir, resuming = start_run(options, context)
            dataset, val_split = training_patches(options, train_config.patch_px, train_config.stride_px)
            source = noise_source(options, dataset.records, train_config.patch_px, device)
            validation = _validation_patches(options, val_split, train_config.patch_px)

            with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the global RNG
                torch.manual_seed(options.seed)
                model = built_within_budget(lambda: DnCNN(config.denoiser), f"config {config.name!r}").to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
            probe = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                       options.seed, 0, 1)
            total_steps = options.steps or (options.epochs or train_config.epochs) * probe.steps_per_epoch
            unit = probe.steps_per_epoch if train_config.lr_decay_unit == "epoch" else 1
            decay_steps = train_config.lr_decay_every * unit
            info = {"noise": options.noise, "flow_only": options.flow_only, "seed": options.seed,
                    "steps_per_epoch": probe.steps_per_epoch, "global_batch": train_config.batch_size}
            state = TrainingState(0, {}, {"denoiser": optimizer}, {}, info)
            history: list[dict] = []
            if resuming:
                folder = (run_dir / "last").resolve()
                load_weights(model, folder / "denoiser.safetensors")
                state = load_checkpoint(folder, state, must_match=("noise", "flow_only", "seed", "steps_per_epoch",
                                                                   "global_batch"))
                history = list(state.info.get("validation", []))
            start, step = state.step, state.step
            best = max((v["val_psnr"] for v in history), default=-math.inf)
            trained = DistributedDataParallel(model) if context.enabled else model
            sampler = GlobalBatchSampler(len(dataset), train_config.batch_size, context.rank, context.world_size,
                                         options.seed, start, total_steps)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=options.workers, collate_fn=collate,
                                generator=torch.Generator().manual_seed(options.seed))  # not the global RNG
            metrics = MetricsLog(run_dir, start if resuming else None) if context.is_main else None
            autocast = options.autocast(device)

            def save(at: int, best_too: bool = False) -> None:
                if not context.is_main:
                    return
                folder = save_checkpoint(run_dir, model, TrainingState(at, {}, {"denoiser": optimizer}, {},
                                                                       info | {"validation": history}))
                if best_too:
                    point(run_dir, "best", folder)

            def validate(at: int) -> None:
                nonlocal best
                if not context.is_main or validation is None:
                    return
                score = _psnr_on(model, validation, device)
                history.append({"step": at, "val_psnr": score})
                metrics.write({"step": at, "val_psnr": score})
                if score > best:
                    best = score
                    save(at, best_too=True)

            with tqdm(total=total_steps, initial=start, desc=f"denoiser ({options.noise})", unit="step",
                      disable=options.quiet or not context.is_main) as bar:
                tick, patches_since = time.perf_counter(), 0
                for batch in loader:
                    clean = batch.clean.to(device).float() / 255.0
                    with torch.no_grad():
                        noisy = source(clean, batch, step_generator(options.seed, step, context.rank))
                    with autocast:
                        loss = F.mse_loss(trained(noisy).float(), clean)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    value = float(context.mean(loss.detach().double().cpu()))
                    if not math.isfinite(value):
                        raise TrainingError(f"step {step + 1}: the L2 loss is {value}; training stopped. The last good "
                                            f"checkpoint is {run_dir / 'last'} (resume with --resume)")
                    step += 1
                    for group in optimizer.param_groups:
                        group["lr"] = train_config.lr * train_config.lr_gamma ** (step // decay_steps)
                    patches_since += train_config.batch_size
                    bar.update()
                    if metrics is not None and (step % options.log_every == 0 or step == total_steps):
                        rate = patches_since / max(time.perf_counter() - tick, 1e-9)
                        tick, patches_since = time.perf_counter(), 0
                        bar.set_postfix(loss=f"{value:.3g}", patches_per_s=f"{rate:.0f}")
                        metrics.write({"step": step, "l2": value, "lr": optimizer.param_groups[0]["lr"],
                                       "patches_per_s": rate})
                    if step % options.val_every == 0 or step == total_steps:
                        validate(step)
                    if step % (options.checkpoint_every or options.val_every) == 0 or step == total_steps or stop:
                        save(step)
                    if stop:
                        break
            if metrics is not None:
                metrics.close()
            context.barrier()
            return DenoiserTrainResult(run_dir, step, total_steps, stop.reason, history)
    finally:
        teardown(context)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one rank's noise at one step, derived from ``(seed, step, rank)`` alone: ranks draw
    different noise, and a resumed run draws what the uninterrupted run drew, with no state to save."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def _validation_patches(options: DenoiserTrainingOptions, split: str | None, patch_px: int
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(clean, noisy)`` real validation patches in [0, 1], evenly spread over the split."""
    if split is None:
        return None
    dataset = PatchDataset(find_pairs(options.data, split, options.skip_bad), patch_px, patch_px,
                           skip_bad=options.skip_bad, max_pixels=options.max_pixels)
    batch = collate([dataset[i] for i in dataset.evenly_spaced(options.val_patches)])
    return batch.clean.float() / 255.0, batch.noisy.float() / 255.0


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
