"""The run loop both trainers share: everything about a training run that is not its step.

A trainer reads top to bottom: open a :func:`session` (device, process group, the run folder's lock), make
its data, networks and optimizers, wrap them in a :class:`TrainingRun` (run folder, metrics log, resume,
checkpoints, validation history and the best checkpoint), then hand :meth:`TrainingRun.loop` its step
function. The loop owns the rest once: the learning-rate schedule, the non-finite-loss guard, progress and
metric lines, validation and checkpoint intervals, and a clean stop on request.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmflowgan.config import ScheduleConfig
from nmflowgan.devices import resolve_device
from nmflowgan.errors import TrainingError
from nmflowgan.models.files import load_weights
from nmflowgan.progress import progress
from nmflowgan.training.checkpoint import TrainingState, load_checkpoint, point, save_checkpoint
from nmflowgan.training.distributed import DistributedContext, setup, teardown
from nmflowgan.training.run import MetricsLog, RunOptions, StopRequest, check_run_dir, run_lock, start_run


def step_generator(seed: int, step: int, *more: int) -> torch.Generator:
    """The CPU generator of one training step, derived from ``(seed, step, *more)`` alone (``more``: e.g. the
    rank, where each rank draws its own numbers): a resumed run draws exactly what the uninterrupted run drew,
    and no random state needs saving. Both trainers draw every random number of a step from it."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, *more]).generate_state(1)[0]))


@contextmanager
def session(options: RunOptions) -> Iterator[tuple[torch.device, DistributedContext]]:
    """The device of this rank (``LOCAL_RANK`` under torchrun), the process group (when launched by torchrun)
    and, on rank 0, the run folder's lock, for the duration of a training. A folder that is locked or cannot
    be used as the options ask is refused here, before any data is read or any network built."""
    device = resolve_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = setup(device)
    try:
        with run_lock(Path(options.out), context.is_main):
            check_run_dir(options)
            yield device, context
    finally:
        teardown(context)


@dataclass
class TrainResult:
    """What a training run did: the step it reached, whether a signal stopped it, the validation records."""

    run_dir: Path
    step: int
    total_steps: int
    interrupted: str | None = None
    validation: list[dict] = field(default_factory=list)
    is_main: bool = True  # rank 0 (or the only process): the one that reports

    @property
    def best_kld(self) -> float:
        """The lowest validation KLD (noise-model runs)."""
        return min((v["val_kld"] for v in self.validation if "val_kld" in v), default=math.nan)


@dataclass(frozen=True)
class Schedule:
    """How long a run is and how often it logs, validates and checkpoints, all in optimizer steps.

    Attributes:
        lr_gamma / decay_steps: every ``decay_steps`` steps each learning rate is multiplied by ``lr_gamma``
            (derived from the step alone, so nothing but the step needs saving).
    """

    total_steps: int
    steps_per_epoch: int
    log_every: int
    val_every: int
    checkpoint_every: int
    lr_gamma: float
    decay_steps: int

    @classmethod
    def of(cls, options: RunOptions, train: ScheduleConfig, steps_per_epoch: int, val_every: int) -> Schedule:
        """A run's schedule from its options and its preset's training section (``epochs``, ``lr_gamma``,
        ``lr_decay_every``, ``lr_decay_unit``): ``--steps``, else ``--epochs``, else the preset's epochs;
        checkpoints every ``--checkpoint-every``, else every ``val_every`` steps."""
        total_steps = options.steps or (options.epochs or train.epochs) * steps_per_epoch
        if train.lr_decay_unit == "run":  # lr_decay_every equal parts of this run, however long
            decay_steps = total_steps // train.lr_decay_every + 1
        else:
            decay_steps = train.lr_decay_every * (steps_per_epoch if train.lr_decay_unit == "epoch" else 1)
        return cls(total_steps, steps_per_epoch, options.log_every, val_every, options.checkpoint_every or val_every,
                   train.lr_gamma, decay_steps)


class TrainingRun:
    """One training run seen from this process: its folder, metrics, checkpoints and validation history.

    Args:
        options: the run's options (folder, resume, overwrite, quiet, ...); context: the process group.
        model: what a checkpoint saves as its loadable model (``save(dir)``; weights in ``weights_file``).
        state: the rest a checkpoint restores (other modules, optimizers) and ``info``, this run's
            facts; a resumed checkpoint's ``must_match`` facts must equal these.
        score: the validation score that picks ``best`` (e.g. ``val_kld``); ``higher_is_better`` its direction;
            ``eligible(step)``: whether a step's model may become ``best`` at all.
    """

    def __init__(self, options: RunOptions, context: DistributedContext, model: nn.Module, weights_file: str,
                 state: TrainingState, must_match: Sequence[str], score: str, higher_is_better: bool = False,
                 eligible: Callable[[int], bool] = lambda step: True) -> None:
        self.options, self.context, self.model = options, context, model
        self.score, self.sign, self.eligible = score, (1.0 if higher_is_better else -1.0), eligible
        self.run_dir, resuming = start_run(options, context)
        # the schedule's base rates, read before a checkpoint's (decayed) rates replace them
        self.base_rates = [[group["lr"] for group in o.param_groups] for o in state.optimizers.values()]
        self.state, self.history = state, []
        if resuming:
            folder = (self.run_dir / "last").resolve()
            load_weights(model, folder / weights_file)
            self.state = load_checkpoint(folder, state, must_match)
            self.history = list(self.state.info.get("validation", []))
        self.resumed = resuming
        self.validation_began = time.perf_counter()  # when the current validation began (set by loop)
        self.start = self.state.step
        self.best = max((self.sign * v[score] for v in self.history if eligible(v["step"])), default=-math.inf)
        self.metrics = MetricsLog(self.run_dir, self.start if resuming else None) if context.is_main else None

    def checkpoint(self, step: int, best: bool = False) -> None:
        """Saves the model and training state at ``step`` (rank 0) and points ``last`` (and ``best``) at it."""
        if not self.context.is_main:
            return
        state = TrainingState(step, self.state.modules, self.state.optimizers,
                              self.state.info | {"validation": self.history})
        folder = save_checkpoint(self.run_dir, self.model, state)
        if best:
            point(self.run_dir, "best", folder)

    def validated(self, step: int, scores: dict[str, float]) -> None:
        """Records a validation (history, and metrics with the seconds it took) and saves ``best`` when the score
        improved."""
        record = {"step": step, **scores}
        self.history.append(record)
        self.metrics.write(record | {"val_seconds": time.perf_counter() - self.validation_began})
        if self.eligible(step) and self.sign * scores[self.score] > self.best:
            self.best = self.sign * scores[self.score]
            self.checkpoint(step, best=True)

    def loop(self, batches: Iterable, schedule: Schedule, train_step: Callable[[object, int], dict[str, float]],
             validate: Callable[[int], None], stop: StopRequest, description: str, patches_per_step: int,
             validate_first: bool = True) -> TrainResult:
        """Runs ``train_step(batch, step)`` (it returns its losses as floats, equal on every rank) over
        ``batches`` from the run's start to ``schedule.total_steps``; ``validate(step)`` is called at step 0 of
        a fresh run (``validate_first``), every ``val_every`` steps and at the end. Returns when done or when
        ``stop`` is set (after a checkpoint). The learning rates of the state's optimizers follow the schedule."""
        optimizers = list(self.state.optimizers.values())
        if validate_first and not self.resumed:
            self.validation_began = time.perf_counter()
            validate(0)
        step = self.start
        with progress(enabled=not self.options.quiet and self.context.is_main, total=schedule.total_steps,
                      initial=step, desc=description, unit="step") as bar:
            tick, patches = time.perf_counter(), 0
            for batch in batches:
                losses = train_step(batch, step)
                for name, value in losses.items():
                    if not math.isfinite(value):
                        saved = (f"The last good checkpoint is {self.run_dir / 'last'} (resume with --resume)"
                                 if (self.run_dir / "last").exists() else "No checkpoint was saved before it")
                        raise TrainingError(f"step {step + 1}: the {name} loss is {value}; training stopped. {saved}")
                step += 1
                decay = schedule.lr_gamma ** (step // schedule.decay_steps)
                for optimizer, rates in zip(optimizers, self.base_rates):
                    for group, rate in zip(optimizer.param_groups, rates):
                        group["lr"] = rate * decay
                patches += patches_per_step
                bar.update()
                last = step == schedule.total_steps
                if step % schedule.log_every == 0 or last:
                    rate = patches / max(time.perf_counter() - tick, 1e-9)
                    tick, patches = time.perf_counter(), 0
                    bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()} | {"patch/s": f"{rate:.0f}"},
                                    refresh=False)  # shown at the bar's next redraw
                    if self.metrics is not None:
                        self.metrics.write({"step": step, "epoch": (step - 1) // schedule.steps_per_epoch, **losses,
                                            "lr": optimizers[0].param_groups[0]["lr"], "patches_per_s": rate})
                if step % schedule.val_every == 0 or last:
                    self.validation_began = time.perf_counter()
                    validate(step)
                if step % schedule.checkpoint_every == 0 or last or stop:
                    self.checkpoint(step)
                if stop:
                    break
        if self.metrics is not None:
            self.metrics.close()
        self.context.barrier()
        return TrainResult(self.run_dir, step, schedule.total_steps, stop.reason, self.history, self.context.is_main)
