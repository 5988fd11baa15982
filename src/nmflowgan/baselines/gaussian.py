"""``gaussian``: zero-mean Gaussian noise with one standard deviation per (camera, ISO)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from nmflowgan.errors import BadInputError


def condition_key(camera: str, iso: float) -> tuple[str, float]:
    return camera, float(iso)


def unknown_condition(model: str, key: tuple[str, float], known: Sequence[tuple[str, float]]) -> BadInputError:
    listed = ", ".join(f"{c}@{i:g}" for c, i in sorted(known))
    return BadInputError(f"the {model} baseline has no fit for camera {key[0]!r} at ISO {key[1]:g}; fitted: {listed}")


def across_iso(model: str, key: tuple[str, float], fitted: Sequence[tuple[str, float]],
               fit: Callable[[tuple[str, float]], torch.Tensor]) -> torch.Tensor:
    """A baseline's parameters at ``key``: its own fit where it has one, else those of the camera's fitted ISOs
    interpolated linearly in log-ISO between the two that surround it, or held at the nearest fitted ISO outside
    them (a baseline is a function of ISO per camera, so a test ISO its training pairs lacked still gets a fit).
    A camera with no fit at all is refused (:func:`unknown_condition`)."""
    if key in fitted:
        return fit(key)
    isos = sorted(i for c, i in fitted if c == key[0])
    if not isos:
        raise unknown_condition(model, key, fitted)
    low = max((i for i in isos if i <= key[1]), default=isos[0])
    high = min((i for i in isos if i >= key[1]), default=isos[-1])
    if low == high:
        return fit((key[0], low))
    weight = (math.log(key[1]) - math.log(low)) / (math.log(high) - math.log(low))
    return (1 - weight) * fit((key[0], low)) + weight * fit((key[0], high))


class GaussianNoise:
    """Fitted by the root-mean-square of the training noise of each (camera, ISO)."""

    name = "gaussian"

    def __init__(self) -> None:
        self._sum_sq: dict[tuple[str, float], float] = {}
        self._count: dict[tuple[str, float], int] = {}

    def update(self, clean: torch.Tensor, noise_255: torch.Tensor, cameras: Sequence[str], isos: Sequence[float]
               ) -> None:
        """Adds training noise ``(B, 3, H, W)`` in 8-bit units (``clean`` is unused, kept for one interface)."""
        for b, key in enumerate(condition_key(c, i) for c, i in zip(cameras, isos)):
            self._sum_sq[key] = self._sum_sq.get(key, 0.0) + float(noise_255[b].double().square().sum())
            self._count[key] = self._count.get(key, 0) + noise_255[b].numel()

    def std(self, camera: str, iso: float) -> float:
        """The fitted standard deviation (8-bit units), across ISO as :func:`across_iso` says."""
        own = lambda key: torch.tensor((self._sum_sq[key] / self._count[key]) ** 0.5)  # noqa: E731
        return float(across_iso(self.name, condition_key(camera, iso), list(self._count), own))

    def noise(self, clean: torch.Tensor, cameras: Sequence[str], isos: Sequence[float],
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``(B, 3, H, W)`` noise in 8-bit units for clean images in [0, 1]."""
        std = torch.tensor([self.std(c, i) for c, i in zip(cameras, isos)], dtype=clean.dtype)
        gaussian = torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
        return (gaussian * std[:, None, None, None]).to(clean.device)
