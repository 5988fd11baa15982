"""RQS: a conditional monotone rational-quadratic spline per pixel and channel, the flow's non-affine layer.

Every affine layer maps the noise linearly, so given its conditioning the flow's noise is Gaussian. Real sRGB
noise is not: the tone curve skews it and shifts its mean, clipping piles it up at the ends, demosaicing and
sharpening give it heavy tails. A monotone spline of the noise value (Durkan et al. 2019, "Neural Spline
Flows", arXiv 1906.04032), its knots predicted from the clean intensity and the camera/ISO, can bend a Gaussian
into any smooth unimodal (or multimodal) shape, and it stays pixel-wise: the Jacobian with respect to the noise
is diagonal, so the latent correlation keeps the flow's per-pixel marginal exactly.

The spline is computed here rather than with a flows library: zuko's ``MonotonicRQSTransform`` (the same
function: bins and heights from a softmax, knot slopes from an exponential, each raw value soft-clamped so that
no bin or slope vanishes) keeps the bins on the last axis, and building it for a 2 x 256 x 256 batch took
230 ms on one core of the project's CPU against 48 ms for the convolutions that predict the knots. Here the
bins lie on axis 2 of ``(B, C, K, H, W)``, so every step runs over contiguous pixels; the same function
(checked against zuko's in tests/flows/test_layers.py) is 2.7x faster, and BENCHMARKS.md has its cost in
sampling.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from nmflowgan.condition_input import CameraGrid, GridPosition, hidden_modulations, modulated
from nmflowgan.conditions import ConditionSpace
from nmflowgan.flows.affine import ResidualMLP, grid_term, with_condition_planes
from nmflowgan.flows.base import FlowContext, FlowLayer

BINS = 8
# The spline acts on [-BOUND, BOUND] (it follows the affine layers, whose output is standardized, so that is
# +-4 standard deviations) and is the identity outside.
BOUND = 4.0
# The smallest bin width, height and knot slope the soft clamps allow, relative to uniform bins and slope 1.
MIN_SLOPE = 1e-3


def _soft_clamp(v: torch.Tensor, limit: float) -> torch.Tensor:
    """``v / (1 + |v| / limit)``: about ``v`` near 0, never beyond ``+-limit``."""
    return v / (1 + v.abs() / limit)


class Spline:
    """Monotone rational-quadratic splines (Durkan et al. 2019), one per pixel and channel, identity outside
    ``[-bound, bound]``.

    Bin widths and heights are a softmax of their soft-clamped raw values (no bin narrower than about
    ``MIN_SLOPE`` of a uniform one), knot slopes the exponential of theirs, 1 at both ends so that the spline
    runs smoothly into the identity. The knots are kept as cumulative sums of the exponentials (knot ``j`` of
    ``K`` at ``bound * (2 * sums_j / sums_K - 1)``, knot 0 at ``-bound``): a value is placed among them in that
    scale, and only the two knots of its bin are ever turned into positions.

    Args:
        raw: ``(B, C, 3K - 1, H, W)`` unconstrained parameters: K bin widths, K bin heights, K - 1 inner knot
            slopes (log scale). All zero gives equal bins and unit slopes: the identity.
        bins: K; bound: half the side of the square the spline maps onto itself.
    """

    def __init__(self, raw: torch.Tensor, bins: int, bound: float) -> None:
        widths, heights, slopes = raw.split((bins, bins, bins - 1), dim=2)
        limit = -math.log(MIN_SLOPE)
        # bounded exponents: no overflow without a maximum subtracted
        self.x_sums, self.y_sums = (_soft_clamp(v, limit / 2).exp().cumsum(2) for v in (widths, heights))
        self.log_slopes = _soft_clamp(slopes, limit)  # (B, C, K - 1, H, W), the inner knots'
        self.bins, self.bound = bins, bound

    def _ends(self, sums: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions of knots ``k`` and ``k + 1`` (``k`` ``(B, C, 1, H, W)`` bins) that ``sums`` places."""
        below, above = sums.gather(2, torch.cat([(k - 1).clamp_min(0), k], 2)).split(1, 2)
        below = torch.where(k == 0, 0.0, below)
        scale = 2 * self.bound / sums[:, :, -1:]
        return (below * scale - self.bound).squeeze(2), (above * scale - self.bound).squeeze(2)

    def _bin(self, sums: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The bin of each value of ``v`` ``(B, C, H, W)`` among the knots ``sums`` places (the x or the y
        knots), and that bin's knots, heights, slopes and mean slope."""
        inside = (v > -self.bound) & (v <= self.bound)
        position = (v.unsqueeze(2) / self.bound + 1) / 2 * sums[:, :, -1:]
        k = (sums[:, :, :-1] < position).sum(2, keepdim=True)  # inner knots below: the bin, (B, C, 1, H, W)
        x0, x1 = self._ends(self.x_sums, k)
        y0, y1 = self._ends(self.y_sums, k)
        inner = self.log_slopes.gather(2, torch.cat([(k - 1).clamp_min(0), k.clamp_max(self.bins - 2)], 2))
        d0 = torch.where(k == 0, 0.0, inner[:, :, :1]).exp().squeeze(2)
        d1 = torch.where(k == self.bins - 1, 0.0, inner[:, :, 1:]).exp().squeeze(2)
        return inside, x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log dy/dx)`` for ``x`` ``(B, C, H, W)``."""
        inside, x0, x1, y0, y1, d0, d1, s = self._bin(self.x_sums, x)
        t = torch.where(inside, (x - x0) / (x1 - x0), 0.0)
        mix = t * (1 - t)
        denominator = s + (d0 + d1 - 2 * s) * mix
        y = y0 + (y1 - y0) * (s * t.square() + d0 * mix) / denominator
        slope = s.square() * (2 * s * mix + d0 * (1 - t).square() + d1 * t.square()) / denominator.square()
        return torch.where(inside, y, x), torch.where(inside, slope.log(), 0.0)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` with ``self(x)[0] == y``: the root of the bin's quadratic that lies in [0, 1]."""
        inside, x0, x1, y0, y1, d0, d1, s = self._bin(self.y_sums, y)
        rise = torch.where(inside, y - y0, 0.0)
        a = (y1 - y0) * (s - d0) + rise * (d0 + d1 - 2 * s)
        b = (y1 - y0) * d0 - rise * (d0 + d1 - 2 * s)
        c = -s * rise
        t = 2 * c / (-b - (b.square() - 4 * a * c).clamp_min(0).sqrt())
        return torch.where(inside, x0 + t * (x1 - x0), y)


class ConditionalSpline(FlowLayer):
    """RQS: ``z = g(x)``, ``g`` a monotone rational-quadratic spline of ``BINS`` bins on ``[-BOUND, BOUND]`` for
    each pixel and channel, whose widths, heights and knot slopes are 1x1 convolutions of
    ``[Embed(camera, ISO), clean]`` (as SDL's scale and bias; with ``grid_px``, also of the pixel's position in the
    camera's grid). It starts as the identity.

    Args:
        channels: C of the noise; space: the condition vocabulary.
        features: width of the pointwise convolutions; embedding: channels of the condition embedding.
        meta_hidden, meta_blocks: the condition MLP.
        grid_px: period of the grid read (0: none).
        camera_adapters: a scale and shift per camera of every hidden layer
            (:class:`~nmflowgan.condition_input.CameraModulation`).
        camera_grid_px: period of a grid read per camera (:class:`~nmflowgan.condition_input.CameraGrid`; 0: none).
    """

    def __init__(self, channels: int, space: ConditionSpace, features: int, embedding: int, meta_hidden: int,
                 meta_blocks: int, grid_px: int = 0, camera_adapters: bool = False, camera_grid_px: int = 0) -> None:
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
        self.grid = GridPosition(features, grid_px) if grid_px else None
        self.camera_grid = CameraGrid(features, len(space.cameras), camera_grid_px) if camera_grid_px else None
        self.modulations = hidden_modulations(self.pointwise, len(space.cameras)) if camera_adapters else None

    def spline(self, context: FlowContext) -> Spline:
        """The spline of every pixel and channel, in the dtype of ``context.clean``."""
        clean = context.clean_compute
        meta = self.meta(context.cond.features.to(context.clean.dtype))  # (B, E)
        hidden = self.pointwise[0](with_condition_planes(meta, clean))
        hidden = hidden + grid_term(self.grid, context, hidden, self.camera_grid)
        raw = modulated(self.pointwise[1:], hidden, self.modulations,
                        context.cond.features, start=1)  # (B, C * (3K - 1), H, W)
        raw = raw.to(context.clean.dtype)
        batch, _, height, width = raw.shape
        return Spline(raw.reshape(batch, self.channels, 3 * BINS - 1, height, width), BINS, BOUND)

    def transform(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.spline(context)(x)

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        return self.spline(context).inverse(z)

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> FlowLayer:
        """The pointwise convolutions in ``dtype``; the knots and the spline itself in float32."""
        layer = copy.deepcopy(self).float()
        layer.pointwise.to(dtype=dtype, memory_format=memory_format)
        if layer.grid is not None:
            layer.grid.to(dtype)
        return layer
