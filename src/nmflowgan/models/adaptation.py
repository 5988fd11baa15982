"""A trained model taught new cameras: its vocabulary extended, each new camera started as a copy of a base camera,
and only what the adaptation may change left free to train.

A camera is one input column of each layer that reads the condition (:mod:`nmflowgan.condition_input`): a new
camera is a new column, and a copy of base camera ``b``'s columns makes the new camera draw exactly ``b``'s noise.
Training only the new columns (``camera``) leaves every base camera's noise exactly as it was; ``adapters`` does too,
and also gives the model a scale and a shift per camera of every hidden layer of its flow (zero for the base's
cameras, trained for the new ones), so a new camera reshapes what the shared layers compute for it; ``all`` trains every
weight, on the new pairs and on noise the frozen base draws for its own cameras (:class:`BaseReplay`), so that what
the new cameras teach the shared weights does not unteach the old ones. The stage that runs an adaptation is
:mod:`nmflowgan.training.adaptation`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nmflowgan.condition_input import grow_cameras
from nmflowgan.conditions import GRID_PX, ConditionSpace
from nmflowgan.config import ModelConfig
from nmflowgan.errors import BadInputError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions

ADAPTED_PARAMETERS = ("adapters", "camera", "all")
MIN_ADAPTATION_PAIRS = 3
NEAREST_FINALISTS = 3  # base cameras scored on all of a new camera's patches after the screening


def check_adaptable(space: ConditionSpace, cameras: Sequence[str], isos: Sequence[float], pairs: int,
                    where: str) -> None:
    """Refuses, before any work, data a base of ``space`` cannot be adapted to: a one-hot ISO base, fewer than
    :data:`MIN_ADAPTATION_PAIRS` pairs, a camera the base already knows, or an ISO outside the base's range.
    ``where`` names the data in the message."""
    if not space.iso.interpolates:
        raise BadInputError("adapt needs a base model with continuous ISO (a one-hot ISO model knows only its "
                            "training ISOs)")
    if pairs < MIN_ADAPTATION_PAIRS:
        raise BadInputError(f"{where}: {pairs} image pair(s); adapting needs at least {MIN_ADAPTATION_PAIRS}")
    known = sorted(set(cameras) & set(space.cameras))
    if known:
        raise BadInputError(f"{where}: camera(s) {', '.join(known)} are already in the base model; give a new "
                            "camera a name of its own (the base knows " + ", ".join(space.cameras) + ")")
    low, high = space.iso_range
    outside = sorted({float(i) for i in isos if not low * (1 - 1e-9) <= float(i) <= high * (1 + 1e-9)})
    if outside:
        raise BadInputError(f"{where}: ISO {', '.join(f'{i:g}' for i in outside)} outside the base model's range "
                            f"{low:g}-{high:g}")


def with_camera_parameters(config: ModelConfig) -> ModelConfig:
    """``config`` with the parameters of its own that ``adapters`` gives each camera: a scale and shift of every
    hidden layer of the flow, and a value per position in its :data:`~nmflowgan.conditions.GRID_PX` grid in the first
    hidden layer of SAL, SDL and RQS (a camera grid the base already reads at another period is kept)."""
    flow = config.flow
    flow = dataclasses.replace(flow, camera_adapters=True, camera_grid_px=flow.camera_grid_px or GRID_PX)
    return dataclasses.replace(config, flow=flow)


def grown_model(base: NoiseModel, sources: Sequence[str], cameras: Sequence[str], adapters: bool = False
                ) -> tuple[NoiseModel, dict[str, slice]]:
    """``base`` over its cameras followed by ``cameras``, new camera ``i`` a copy of base camera ``sources[i]``; and,
    for each weight that reads the camera, the new cameras' columns (axis 1). With ``adapters`` (or a base that has
    them), the model has the parameters of its own per camera of :func:`with_camera_parameters`."""
    config = with_camera_parameters(base.config) if adapters else base.config
    model = NoiseModel(config, base.cameras + tuple(cameras), base.isos)
    columns = grow_cameras(base, model, len(base.cameras), [base.space.camera_index(s) for s in sources])
    return model, columns


def restrict_to_new_cameras(model: nn.Module, columns: dict[str, slice]) -> list[nn.Parameter]:
    """Freezes every parameter but the new cameras' columns; returns the parameters left to train (their
    gradients are zero outside those columns, so Adam leaves the base cameras' columns exactly as they are)."""
    trainable = []
    for name, parameter in model.named_parameters():
        span = columns.get(name)
        parameter.requires_grad_(span is not None)
        if span is None:
            continue
        mask = torch.zeros_like(parameter)
        mask[:, span] = 1
        parameter.register_hook(lambda grad, mask=mask: grad * mask)
        trainable.append(parameter)
    return trainable


class BaseReplay:
    """Noise the frozen base model draws for its own cameras, to train the adapted model on beside the new
    pairs: each sample gets a base camera drawn uniformly and an ISO drawn log-uniformly over the base's range.

    Args:
        base: the base model (kept unchanged; drawn through its plain float32 path).
    """

    def __init__(self, base: NoiseModel) -> None:
        self.base = base.eval().requires_grad_(False)

    @torch.no_grad()
    def draw(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[str], list[float]]:
        """``(noise, cameras, isos)`` for ``(B, 3, H, W)`` clean patches in [0, 1]: quantized noise in 8-bit
        units as a camera records it, and the condition of each sample."""
        batch = clean.shape[0]
        space = self.base.space
        picks = torch.randint(len(space.cameras), (batch,), generator=generator).tolist()
        low, high = (math.log(iso) for iso in space.iso_range)
        isos = (low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)).exp().tolist()
        cameras = [space.cameras[i] for i in picks]
        cond = self.base.encode(cameras, isos, batch)
        latent = torch.randn(clean.shape, generator=generator).to(clean.device)
        noise = self.base.draw(clean, cond, latent=latent, options=SamplingOptions.plain())
        return noise, cameras, isos


@torch.no_grad()
def nearest_cameras(score: Callable[[str, str, bool], float], base_cameras: Sequence[str],
                    new_cameras: Sequence[str], finalists: int = NEAREST_FINALISTS) -> dict[str, str]:
    """For each new camera, the base camera under which its noise is most likely: every base camera screened on a
    few of the new camera's patches, the best ``finalists`` of them scored on all its patches.

    Args:
        score: ``score(new_camera, base_camera, screen)`` -> the mean NLL of the new camera's patches (a few of
            them where ``screen``) when drawn as ``base_camera`` (lower is better).
    """
    chosen = {}
    for new in new_cameras:
        screened = {base: score(new, base, True) for base in base_cameras}
        best = sorted((base for base in base_cameras if math.isfinite(screened[base])), key=screened.__getitem__)
        scores = {base: score(new, base, False) for base in best[:finalists]}
        finite = {base: value for base, value in scores.items() if math.isfinite(value)}
        if not finite:
            raise BadInputError(f"no base camera gives the pairs of {new} a finite likelihood (the base model's "
                                "weights are not usable, or the pairs are not camera noise)")
        chosen[new] = min(finite, key=finite.__getitem__)
    return chosen
