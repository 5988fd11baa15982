"""The layer protocol every flow layer follows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nmflowgan.conditions import Condition


@dataclass
class FlowContext:
    """What a flow layer is conditioned on.

    Attributes:
        clean: ``(B, 3, H, W)`` clean image in [0, 1].
        cond: encoded camera/ISO of each sample.
        generator: source of the dequantization noise (``None``: torch's global generator).
        uniform: pre-drawn dequantization noise ``(B, C, H, W)`` in [0, 1), used instead of drawing
            (distributed training draws the global batch's noise once and gives each rank its slice).
    """

    clean: torch.Tensor
    cond: Condition
    generator: torch.Generator | None = None
    uniform: torch.Tensor | None = None

    @property
    def clean_255(self) -> torch.Tensor:
        """The clean image in 8-bit units (0-255)."""
        return self.clean * 255.0


@dataclass(frozen=True)
class SamplingInputs:
    """What a sampling step reads besides the tensor it maps.

    Attributes:
        clean: ``(B, 3, H, W)`` float32 clean image in [0, 1].
        clean_compute: the same in the sampler's number format and memory layout (what its convolutions take).
        cond: the encoded camera/ISO of each sample.
    """

    clean: torch.Tensor
    clean_compute: torch.Tensor
    cond: Condition


class FlowLayer(nn.Module):
    """A conditional bijection on ``(B, C, H, W)`` tensors.

    ``forward`` maps data towards the latent z and ``inverse`` maps back; each returns
    ``(output, logdet)`` where ``logdet`` has shape ``(B,)`` and is log|det J| of the map it applied,
    summed over C, H and W, so that ``inverse``'s logdet is minus ``forward``'s at the matching point.
    ``sampling_inverse`` gives the layer's inverse for drawing only.
    """

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sampling_inverse(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> nn.Module:
        """The inverse as drawing needs it: a module ``(x (B, C, H, W) float32, SamplingInputs) -> x`` holding a
        frozen copy of the weights, with no log-determinant, its convolutions in ``dtype`` and
        ``memory_format``, and (``fold``) exact algebraic shortcuts. Same function as :meth:`inverse`."""
        raise NotImplementedError
