"""The one composition of a noise model: ``latent -> latent correlation -> pixel-wise flow -> refiner``.

:class:`~nmflowgan.models.noise_model.NoiseModel` (its own eager, differentiable forward) and
:class:`~nmflowgan.models.sampler.Sampler` (the same function laid out for fast drawing) both hold the same
three parts and inherit this composition, so the two cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import nn

from nmflowgan.conditions import Condition
from nmflowgan.flows.base import FlowContext
from nmflowgan.flows.flow import invert_layers


class ComposedNoise(nn.Module):
    """Noise from a latent through the parts a subclass holds.

    Subclasses set:
        flow_layers: the flow's layers in data -> latent order (drawing inverts them in reverse).
        correlation: a :class:`~nmflowgan.models.correlation.LatentCorrelation`, or None.
        refiner: a module ``(noise_255, clean, features) -> noise_255``, or None (a model without the
            adversarial refiner).
    and may override :meth:`flow_context` (how the clean image reaches the layers' convolutions).
    """

    flow_layers: nn.ModuleList
    correlation: nn.Module | None
    refiner: nn.Module | None

    def flow_context(self, clean: torch.Tensor, cond: Condition) -> FlowContext:
        return FlowContext(clean, cond)

    def compose(self, clean: torch.Tensor, cond: Condition, latent: torch.Tensor, correlate: bool = True,
                refine: bool = True, refiner_only: bool = False) -> torch.Tensor:
        """Noise in 8-bit units (not quantized) for ``clean (B, 3, H, W)`` in [0, 1] and a standard-normal
        ``latent`` of the same shape.

        Args:
            correlate: pass the latent through the latent correlation (when the model has one).
            refine: pass the flow's noise through the refiner (when the model has one).
            refiner_only: differentiable in the refiner alone (the flow's noise drawn without a graph): what the
                adversarial loss trains.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not refiner_only):
            if correlate and self.correlation is not None:
                latent = self.correlation(latent, cond, clean)
            noise = invert_layers(self.flow_layers, latent, self.flow_context(clean, cond)) - clean * 255.0
        if refine and self.refiner is not None:
            noise = self.refiner(noise, clean, cond.features)
        return noise
