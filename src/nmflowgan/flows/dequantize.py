"""Uniform dequantization (UD) and noise extraction (NE): the data end of the flow."""

from __future__ import annotations

import torch

from nmflowgan.flows.base import FlowContext, FlowLayer


class UniformDequantization(FlowLayer):
    """UD: ``y = x + u``, ``u ~ U[0, 1)``, on 8-bit integer images; inverse ``x = clamp(floor(y), 0, 255)``.

    Training on ``x + u`` maximizes a lower bound of the discrete likelihood of the integer image, so the
    log-determinant is 0. The inverse recovers any integer ``x`` in [0, 255] exactly.
    """

    def __init__(self, levels: int = 256) -> None:
        super().__init__()
        self.levels = levels

    def transform(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        u = context.uniform
        if u is None:
            u = torch.rand(x.shape, generator=context.generator, dtype=x.dtype,
                           device=context.generator.device if context.generator is not None else x.device)
        return x + u.to(device=x.device, dtype=x.dtype), x.new_zeros(())

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        return z.floor().clamp(0, self.levels - 1)


class NoiseExtraction(FlowLayer):
    """NE: ``noise = noisy - clean`` (both in 8-bit units); inverse ``noisy = noise + clean``. Volume-preserving."""

    def transform(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return x - context.clean_255.to(x.dtype), x.new_zeros(())

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        return z + context.clean_255.to(z.dtype)
