"""RQS: a conditional monotone rational-quadratic spline per pixel and channel, the flow's non-affine layer.

Every affine layer maps the noise linearly, so given its conditioning the flow's noise is Gaussian. Real sRGB
noise is not: the tone curve skews it and shifts its mean, clipping piles it up at the ends, demosaicing and
sharpening give it heavy tails. A monotone spline of the noise value (Durkan et al. 2019, "Neural Spline
Flows", arXiv 1906.04032), its knots predicted from the clean intensity and the camera/ISO, can bend a Gaussian
into any smooth unimodal (or multimodal) shape, and it stays pixel-wise: the Jacobian with respect to the noise
is diagonal, so the latent correlation keeps the flow's per-pixel marginal exactly.

The spline math is zuko's :class:`~zuko.transforms.MonotonicRQSTransform` (value, inverse and log-abs-det): a
maintained implementation, tested upstream; this module only predicts its knots.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from zuko.transforms import MonotonicRQSTransform

from nmflowgan.conditions import ConditionSpace
from nmflowgan.flows.affine import ResidualMLP
from nmflowgan.flows.base import FlowContext, FlowLayer

BINS = 8
# The spline acts on [-BOUND, BOUND] (it follows the affine layers, whose output is standardized, so that is
# +-4 standard deviations) and is the identity outside.
BOUND = 4.0


class ConditionalSpline(FlowLayer):
    """RQS: ``z = g(x)``, ``g`` a monotone rational-quadratic spline of ``BINS`` bins on ``[-BOUND, BOUND]`` for
    each pixel and channel, whose widths, heights and knot slopes are 1x1 convolutions of
    ``[Embed(camera, ISO), clean]`` (as SDL's scale and bias). It starts as the identity.

    Args:
        channels: C of the noise; space: the condition vocabulary.
        features: width of the pointwise convolutions; embedding: channels of the condition embedding.
        meta_hidden, meta_blocks: the condition MLP.
    """

    def __init__(self, channels: int, space: ConditionSpace, features: int, embedding: int, meta_hidden: int,
                 meta_blocks: int) -> None:
        super().__init__()
        self.channels = channels
        self.meta = ResidualMLP(space.feature_dim, embedding, meta_hidden, meta_blocks)
        negative_slope = 0.2
        self.pointwise = nn.Sequential(
            nn.Conv2d(embedding + 3, features, 1), nn.LeakyReLU(negative_slope),
            nn.Conv2d(features, features, 1), nn.LeakyReLU(negative_slope),
            nn.Conv2d(features, channels * (3 * BINS - 1), 1),
        )
        nn.init.zeros_(self.pointwise[-1].weight)  # equal bins and unit slopes: the identity
        nn.init.zeros_(self.pointwise[-1].bias)

    def spline(self, context: FlowContext) -> MonotonicRQSTransform:
        """The spline of every pixel and channel: knots ``(B, C, H, W, BINS)`` in the dtype of ``context.clean``."""
        clean = context.clean_compute
        meta = self.meta(context.cond.features.to(context.clean.dtype))  # (B, E)
        hidden = torch.cat([meta.to(clean.dtype)[:, :, None, None].expand(-1, -1, *clean.shape[2:]), clean], 1)
        knots = self.pointwise(hidden).to(context.clean.dtype)  # (B, C * (3K - 1), H, W)
        batch, _, height, width = knots.shape
        knots = knots.view(batch, self.channels, 3 * BINS - 1, height, width).movedim(2, -1)
        widths, heights, slopes = knots.split((BINS, BINS, BINS - 1), dim=-1)
        return MonotonicRQSTransform(widths, heights, slopes, bound=BOUND)

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_slope = self.spline(context).call_and_ladj(x)
        return z, log_slope.flatten(1).sum(1)

    def inverse(self, z: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        spline = self.spline(context)
        x = spline.inv(z)
        return x, -spline.call_and_ladj(x)[1].flatten(1).sum(1)

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        return self.spline(context).inv(z)

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> FlowLayer:
        """The pointwise convolutions in ``dtype``; the knots and the spline itself in float32."""
        layer = copy.deepcopy(self).float()
        layer.pointwise.to(dtype=dtype, memory_format=memory_format)
        return layer
