"""``gaussian``: zero-mean Gaussian noise with one standard deviation per (camera, ISO)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nmflowgan.errors import BadInputError


def condition_key(camera: str, iso: float) -> tuple[str, float]:
    return camera, float(iso)


def unknown_condition(model: str, key: tuple[str, float], known: Sequence[tuple[str, float]]) -> BadInputError:
    listed = ", ".join(f"{c}@{i:g}" for c, i in sorted(known))
    return BadInputError(f"the {model} baseline has no fit for camera {key[0]!r} at ISO {key[1]:g}; fitted: {listed}")


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
        key = condition_key(camera, iso)
        if key not in self._count:
            raise unknown_condition(self.name, key, list(self._count))
        return (self._sum_sq[key] / self._count[key]) ** 0.5

    def noise(self, clean: torch.Tensor, cameras: Sequence[str], isos: Sequence[float],
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``(B, 3, H, W)`` noise in 8-bit units for clean images in [0, 1]."""
        std = torch.tensor([self.std(c, i) for c, i in zip(cameras, isos)], dtype=clean.dtype)
        gaussian = torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
        return (gaussian * std[:, None, None, None]).to(clean.device)
