"""A run folder: refuses to clobber another run, logs metrics as JSON lines, stops cleanly when asked."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.errors import BadInputError, OutputExistsError, RunLockedError, TrainingError
from nmflowgan.seeds import checked_seed
from nmflowgan.training.distributed import DistributedContext

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
TRAINING_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a training, whatever it trains (the preset says what).

    Attributes:
        data: a data set folder (simcam, SIDD or metadata.csv); split / val_split: its training and
            validation splits (None: the data set's defaults).
        out: the run folder. steps / epochs: length (steps wins; neither: the preset's epochs).
        resume / overwrite: continue the run in ``out`` / replace it.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``. seed: every random draw derives from it.
        workers: DataLoader worker processes. log_every: steps between metric lines.
        checkpoint_every: steps between checkpoints (default: the validation interval).
        quiet: no progress bar. skip_bad: skip unusable pairs. max_pixels: the largest image accepted.
        precision: ``fp32``, or ``bf16`` autocast (faster on GPUs and on CPUs with native bf16; see
            BENCHMARKS.md).
    """

    data: Path
    out: Path
    split: str | None = None
    val_split: str | None = None
    steps: int | None = None
    epochs: int | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    checkpoint_every: int | None = None
    quiet: bool = False
    skip_bad: bool = False
    precision: str = "fp32"
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "log_every", "checkpoint_every", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise BadInputError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        checked_seed(self.seed)
        if self.workers < 0:
            raise BadInputError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in TRAINING_PRECISIONS:
            raise BadInputError(f"training precision {self.precision!r} is not one of {', '.join(TRAINING_PRECISIONS)}")

    def to_dict(self) -> dict:
        """The options as JSON (paths as strings; a nested options object as its fields), for the record a
        checkpoint keeps of how its run was started."""
        def plain(value: object) -> object:
            if isinstance(value, Path):
                return str(value)
            return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def autocast(self, device: torch.device) -> torch.autocast:
        """The autocast context of ``precision`` on ``device`` (disabled for fp32)."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


RUN_MARKERS = ("checkpoints", METRICS_FILE)


def check_run_dir(options: RunOptions) -> None:
    """Refuses a run folder that cannot be used as asked, before any work (the trainers call it as soon as they
    hold the folder's lock, ahead of the data scan and the network build):

    * a folder that holds another run, unless ``--resume`` (continue it) or ``--overwrite`` (replace it);
    * ``--resume`` on a folder that holds a run but no ``last`` checkpoint (a crash before the first one, or a
      broken link): starting again from step 0 would silently discard the run.
    """
    run_dir = Path(options.out)
    if any((run_dir / marker).exists() for marker in RUN_MARKERS) and not (options.resume or options.overwrite):
        raise OutputExistsError(f"{run_dir}: holds another run; pass --resume to continue it or --overwrite "
                                "to replace it")
    if options.resume and not (run_dir / "last").exists() and _holds_progress(run_dir):
        raise TrainingError(f"{run_dir}: cannot resume: the run has metrics or checkpoints but no readable 'last' "
                            "checkpoint; pass --overwrite instead of --resume to start it again")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Makes ``run_dir`` ready (checked by :func:`check_run_dir`); returns whether a checkpoint is to be resumed.

    With ``overwrite`` (and not ``resume``) a run in the folder is deleted first; ``resume`` on a folder
    without a checkpoint starts afresh.
    """
    holds_run = any((run_dir / marker).exists() for marker in RUN_MARKERS)
    if holds_run and overwrite and not resume:
        for name in (*RUN_MARKERS, "config.json", "last", "best", "tensorboard"):  # config.json: older runs
            path = run_dir / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise OutputExistsError(f"{run_dir}: cannot write here ({error})") from None
    return resume and (run_dir / "last").exists()


def start_run(options: RunOptions, context: DistributedContext) -> tuple[Path, bool]:
    """Prepares the run folder on rank 0 while the others wait; returns ``(run_dir, resuming)``. The folder was
    checked (:func:`check_run_dir`) when the training's session took its lock."""
    run_dir = Path(options.out)
    if context.is_main:
        prepare_run_dir(run_dir, options.resume, options.overwrite)
    context.barrier()
    return run_dir, options.resume and (run_dir / "last").exists()


@contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Holds ``run_dir/.lock`` (naming this process's PID and host) for the block, so that one process at a
    time writes a run folder: a second ``train --out`` on the same folder is refused, naming the holder.

    A lock left by a process that no longer runs on this host (a ``kill -9``, a power cut) is reported and
    taken over; one held by another host cannot be checked and is refused with its details. ``enabled=False``
    (ranks other than 0 of a distributed run) does nothing.
    """
    if not enabled:
        yield
        return
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None or not _is_stale(holder):
                raise RunLockedError(f"{run_dir}: in use by {_describe(holder)} (lock file {path}); wait for it to "
                                     "finish, or delete the lock file if no such process runs") from None
            log.warning("%s: taking over a stale lock left by PID %s, which no longer runs", run_dir, holder["pid"])
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(mine + "\n")
        break
    else:
        raise RunLockedError(f"{run_dir}: another process took the lock file {path} at the same moment")
    try:
        yield
    finally:
        if path.is_file() and path.read_text().strip() == mine:
            path.unlink()
        if made and not any(run_dir.iterdir()):  # refused before any work: leave no empty run folder behind
            run_dir.rmdir()


def _lock_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_stale(holder: dict) -> bool:
    """Whether the lock's process is known to be gone: same host, and no process with its PID."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "another process (unreadable lock file)"
    return f"PID {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"


def _holds_progress(run_dir: Path) -> bool:
    """Whether ``run_dir`` records training progress: metric lines, checkpoint folders or a ``last`` link."""
    metrics = run_dir / METRICS_FILE
    return ((metrics.is_file() and metrics.stat().st_size > 0) or (run_dir / "last").is_symlink()
            or any((run_dir / "checkpoints").glob("step-*")))


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; on resume, drops lines past the checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        if resume_step is not None and self.path.exists():
            kept = [json.dumps(record) for record in read_metrics(run_dir) if record.get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = _tensorboard(run_dir)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of ``metrics.jsonl``; a line cut short by a killed process is skipped."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _tensorboard(run_dir: Path) -> object | None:
    """TensorBoard events when the ``tensorboard`` package is installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


class StopRequest:
    """A flag the training loops check between steps: once set, the loop saves a checkpoint and returns.

    The library never installs signal handlers (that works only in the main thread and is the
    application's business): the command line sets this flag from SIGINT/SIGTERM, and a Python caller may
    set it from another thread or a callback.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Asks the loop to stop after the current step; ``reason`` is reported (e.g. ``SIGINT``)."""
        self.reason = reason
