"""The files of a saved network: safetensors weights plus a JSON description, never a pickle.

Shared by every saved model (noise model, denoiser): writing atomically, finding the folder of a run's
``best`` or ``last`` checkpoint, reading the description with its format tag, and loading weights
strictly, with every failure naming the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nmflowgan import __version__
from nmflowgan.atomic import atomic_path, write_text
from nmflowgan.errors import BadInputError, CheckpointError

log = logging.getLogger(__name__)
# The most parameters a network described by a config or a checkpoint may have: 2 GB of float32 weights. The
# paper's noise model has 31 million, its critic 14 million; a description above this is refused before any
# memory is allocated for it.
MAX_PARAMETERS = 500_000_000


def save_module(module: nn.Module, directory: str | Path, weights_name: str, meta_name: str, meta: dict) -> Path:
    """Writes ``module``'s weights and ``meta`` (plus the package version) into ``directory``, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(directory / weights_name) as temp:
        save_file(tensors, str(temp))
    write_text(directory / meta_name, json.dumps(meta | {"version": __version__}, indent=2) + "\n")
    return directory


def resolve_checkpoint_dir(path: str | Path, meta_name: str, kind: str) -> Path:
    """``path`` itself if it holds ``meta_name``, else its ``best/`` or ``last/`` sub-folder; a run folder's
    choice is logged (which link and the checkpoint it points at), as ``last`` is a fallback."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / meta_name).is_file():
            if candidate != path:
                why = "its best checkpoint" if candidate.name == "best" else "its last checkpoint (no 'best' yet)"
                log.info("%s: loading %s, %s", path, why, candidate.resolve().relative_to(path.resolve()))
            return candidate
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    raise CheckpointError(f"{path}: not a {kind} checkpoint (no {meta_name} here or in best/ or last/)")


def read_meta(path: Path, expected_format: str) -> dict:
    """Reads a checkpoint's JSON description and checks its format tag."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint description ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: unreadable checkpoint description (nested too deeply)") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: expected a {expected_format} checkpoint, found {found!r}")
    return meta


def built_within_budget(build: Callable[[], nn.Module], what: str) -> nn.Module:
    """``build()``, after building it once on PyTorch's ``meta`` device (no memory) to count its parameters:
    a network over :data:`MAX_PARAMETERS` is refused, naming ``what`` described it, instead of allocating."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build().parameters())
    if count > MAX_PARAMETERS:
        raise BadInputError(f"{what}: describes a network of {count:,} parameters, more than the limit of "
                            f"{MAX_PARAMETERS:,}")
    return build()


def load_weights(module: nn.Module, path: Path) -> None:
    """Loads safetensors weights into ``module``, strictly; every failure names ``path``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    expected = module.state_dict()
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit this architecture (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}); was it saved with another preset, or for data with other "
            "cameras or ISOs?"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}; "
                "was it saved with another preset, or for data with other cameras or ISOs?"
            )
        if tensor.is_floating_point() != expected[name].is_floating_point():  # a cast would change the model
            raise CheckpointError(f"{path}: {name} is stored as {str(tensor.dtype).removeprefix('torch.')}, "
                                  f"expected {str(expected[name].dtype).removeprefix('torch.')}")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {name} holds non-finite values (NaN or infinity); the model is unusable")
    module.load_state_dict(tensors)
