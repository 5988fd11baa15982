"""Training checkpoints: everything needed to resume, as safetensors + JSON, written atomically.

A run folder holds ``checkpoints/step-NNNNNNNN/`` folders and two symbolic links, ``last`` and ``best``,
pointing at them. Each checkpoint folder is written under a temporary name and renamed when complete,
then the link is replaced atomically (``os.replace``), so a crash at any moment leaves ``last`` pointing
at a complete checkpoint. A step is written once: a folder that is in place is never deleted to be
rewritten (saving the same step again, e.g. as ``best`` and then as ``last``, only re-points the link).

A checkpoint folder holds:

* the model's own files, loadable alone (``model.safetensors`` + ``model.json`` for a noise model,
  ``denoiser.safetensors`` + ``denoiser.json`` for a denoiser);
* ``training.safetensors``: the other modules (the critic, in a run with an adversarial game) and every
  optimizer tensor (no random state:
  each training step derives its own generator);
* ``training.json``: the step, optimizer hyper-parameters, counters and a ``complete`` marker.

Nothing is ever pickled: loading runs no code from the files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nmflowgan import __version__
from nmflowgan.errors import CheckpointError, TrainingError

FORMAT = "nmflowgan-training-state"
STATE_FILE, TENSOR_FILE = "training.json", "training.safetensors"
KEEP = ("last", "best")


@dataclass
class TrainingState:
    """What a checkpoint restores besides the noise model's weights.

    Attributes:
        step: optimizer steps taken.
        modules: other modules by name (e.g. ``{"critic": critic}``), restored in place.
        optimizers: by name, restored in place.
        info: JSON-able extras (config, counters, best score, ...).
    """

    step: int
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    info: dict


def _optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits an optimizer's state dict into tensors (for safetensors) and JSON (everything else)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{name}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       meta: dict, path: Path) -> None:
    prefix = f"optimizer.{name}."
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, slot = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[slot] = value
    for key, value in meta["scalars"].items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: optimizer {name!r} does not fit this model ({error})") from None


def save_checkpoint(run_dir: Path, model: object, state: TrainingState) -> Path:
    """Writes ``run_dir/checkpoints/step-N`` atomically and points ``last`` at it; returns the folder.

    ``model`` is a :class:`~nmflowgan.models.noise_model.NoiseModel` (anything with ``save(dir)``). A step
    already on disk is not written again: within a run the same step holds the same state.
    """
    folder = run_dir / "checkpoints" / f"step-{state.step:08d}"
    if folder.is_dir():
        read_checkpoint_meta(folder)  # folders appear only complete (by rename); refuse anything else loudly
        point(run_dir, "last", folder)
        return folder
    temporary = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        _write_checkpoint(temporary, model, state)
        temporary.rename(folder)
    except (OSError, SafetensorError) as error:  # a full disk, a quota, a vanished folder: keep `last` as it was
        shutil.rmtree(temporary, ignore_errors=True)
        last = run_dir / "last"
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written before"
        raise TrainingError(f"{folder}: cannot write the checkpoint of step {state.step} ({error}); {kept}") from None
    point(run_dir, "last", folder)
    return folder


def _write_checkpoint(temporary: Path, model: object, state: TrainingState) -> None:
    """Writes every file of a checkpoint into the folder ``temporary`` and flushes them to disk."""
    temporary.mkdir(parents=True)
    model.save(temporary)  # type: ignore[attr-defined]
    tensors: dict[str, torch.Tensor] = {}
    for name, module in state.modules.items():
        tensors.update({f"module.{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    optimizers = {}
    for name, optimizer in state.optimizers.items():
        optimizer_tensors, optimizers[name] = _optimizer_tensors(name, optimizer)
        tensors.update(optimizer_tensors)
    save_file(tensors, str(temporary / TENSOR_FILE))
    meta = {"format": FORMAT, "version": __version__, "step": state.step, "optimizers": optimizers,
            "info": state.info, "complete": True}
    (temporary / STATE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for path in temporary.iterdir():  # data on disk before the rename makes it visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def point(run_dir: Path, link: str, folder: Path) -> None:
    """Atomically makes ``run_dir/link`` a relative symbolic link to ``folder``, then prunes checkpoint
    folders that neither ``last`` nor ``best`` points at."""
    temporary = run_dir / f".{link}.new"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(folder.relative_to(run_dir))
    os.replace(temporary, run_dir / link)
    kept = {(run_dir / name).resolve() for name in KEEP if (run_dir / name).is_symlink()}
    for old in (run_dir / "checkpoints").glob("step-*"):
        if old.resolve() not in kept:
            shutil.rmtree(old, ignore_errors=True)


def read_checkpoint_meta(folder: Path) -> dict:
    """Reads and checks ``training.json``, naming the file in any error."""
    path = folder / STATE_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {folder} is not a complete training checkpoint") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable training state ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("complete") is not True:
        raise CheckpointError(f"{path}: not a complete {FORMAT} file")
    return meta


def _differences(theirs: dict, ours: dict, where: str) -> list[str]:
    """The dotted paths at which two JSON objects differ, each with both values."""
    found = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{where}.{key}")
        elif a != b:
            found.append(f"{where}.{key} ({a!r} there, {b!r} here)")
    return found


def load_checkpoint(folder: Path, state: TrainingState, must_match: Sequence[str] = ()) -> TrainingState:
    """Restores the modules and optimizers of ``state`` in place from ``folder``; returns the
    state with the checkpoint's step and info.

    Args:
        must_match: keys of ``state.info`` (this run's facts: seed, stage, batch, ...) that the checkpoint's
            info must equal, or the run cannot be resumed from it.
    """
    meta = read_checkpoint_meta(folder)
    for key in must_match:
        theirs, ours = meta["info"].get(key), state.info.get(key)
        if theirs != ours:
            what = (f"the checkpoint's {key} differs in {', '.join(_differences(theirs, ours, key))}"
                    if isinstance(theirs, dict) and isinstance(ours, dict)
                    else f"the checkpoint's {key} is {theirs!r} but this run's is {ours!r}")
            raise TrainingError(f"{folder}: cannot resume, {what} (same data, config, stage and seed needed)")
    path = folder / TENSOR_FILE
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    for name, module in state.modules.items():
        prefix = f"module.{name}."
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(weights)
        except RuntimeError as error:
            raise CheckpointError(f"{path}: {name} weights do not fit this configuration ({error})") from None
    for name, optimizer in state.optimizers.items():
        if name not in meta["optimizers"]:
            raise CheckpointError(f"{path}: no state for optimizer {name!r}")
        _restore_optimizer(name, optimizer, tensors, meta["optimizers"][name], path)
    return TrainingState(int(meta["step"]), state.modules, state.optimizers, meta["info"])
