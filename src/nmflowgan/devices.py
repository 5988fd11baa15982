"""Which device a command computes on: ``--device auto|cpu|cuda|mps``."""

from __future__ import annotations

import torch

from nmflowgan.errors import BadInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The device kinds this torch build and machine can compute on."""
    kinds = ["cpu"]
    if torch.cuda.is_available():
        kinds.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        kinds.append("mps")
    return kinds


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU), then MPS, then CPU; other names are taken as given, and refused
    (:class:`BadInputError`, naming what is available) where this torch build or machine lacks them."""
    available = available_devices()
    if name == "auto":
        name = next(kind for kind in ("cuda", "mps", "cpu") if kind in available)
    elif name in DEVICE_CHOICES and name not in available:
        build = "a CPU-only build" if torch.version.cuda is None and name == "cuda" else "this machine"
        raise BadInputError(f"--device {name}: not available with torch {torch.__version__} ({build}); "
                            f"available: {', '.join(available)}")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
