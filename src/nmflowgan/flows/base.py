"""The layer protocol every flow layer follows."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from nmflowgan.conditions import Condition


@dataclass
class FlowContext:
    """What a flow layer is conditioned on.

    Attributes:
        clean: ``(B, 3, H, W)`` clean image in [0, 1]; its dtype is the dtype of every scale and bias.
        cond: encoded camera/ISO of each sample.
        generator: source of the dequantization noise (``None``: torch's global generator).
        uniform: pre-drawn dequantization noise ``(B, C, H, W)`` in [0, 1), used instead of drawing
            (distributed training draws the global batch's noise once and gives each rank its slice).
        compute: the clean image as the layers' convolutions take it (a sampler's number format and memory
            layout); ``None``: ``clean`` itself.
    """

    clean: torch.Tensor
    cond: Condition
    generator: torch.Generator | None = None
    uniform: torch.Tensor | None = None
    compute: torch.Tensor | None = None

    @property
    def clean_255(self) -> torch.Tensor:
        """The clean image in 8-bit units (0-255)."""
        return self.clean * 255.0

    @property
    def clean_compute(self) -> torch.Tensor:
        """What the convolutions read: :attr:`compute`, else :attr:`clean`."""
        return self.clean if self.compute is None else self.compute


def summed(log_derivative: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)``: per-value log-derivatives (broadcastable to ``like`` ``(B, C, H, W)``) summed over C, H and W."""
    return log_derivative.expand_as(like).flatten(1).sum(1)


class FlowLayer(nn.Module):
    """A conditional, increasing bijection of each value of a ``(B, C, H, W)`` tensor alone (pixel-wise): its
    Jacobian is diagonal, so its log-determinant is the sum of each value's log-derivative.

    A layer implements :meth:`transform` (data towards the latent z, with each value's log-derivative) and
    :meth:`invert` (back, what drawing needs). ``forward`` returns ``(z, logdet)`` with ``logdet`` of shape ``(B,)``,
    log|det J| of the map. ``for_sampling`` gives a frozen copy laid out for drawing.
    """

    def transform(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log dz/dx)``: the log-derivative of each value, broadcastable to ``x``."""
        raise NotImplementedError

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        """The inverse map, without its log-determinant (what drawing needs)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_derivative = self.transform(x, context)
        return z, summed(log_derivative, x)

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> FlowLayer:
        """A copy of this layer for drawing only: the same :meth:`invert`, its convolutions in ``dtype`` and
        ``memory_format`` (they read :attr:`FlowContext.clean_compute`), and with ``fold`` any exact algebraic
        shortcut. The default is a plain copy."""
        return copy.deepcopy(self)
