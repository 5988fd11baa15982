"""The conditional affine layers of NM-FlowGAN: SAL, SDL and CL.

Each is an element-wise affine map ``z = exp(s) * x + b`` whose log-scale ``s`` and bias ``b`` are
computed from the clean image and the camera/ISO condition only, never from ``x``: the Jacobian with
respect to the noise is diagonal, so the flow is pixel-wise (noise at one pixel never moves z at another)
and ``log|det J| = sum(s)``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from nmflowgan.condition_input import CameraGrid, ConditionInput, GridPosition, hidden_modulations, modulated
from nmflowgan.conditions import ConditionSpace
from nmflowgan.flows.base import FlowContext, FlowLayer


class ResidualMLP(nn.Module):
    """Embeds condition features: ``ConditionInput -> [ReLU, Linear, ReLU, Linear] + skip (x blocks) -> Linear``.

    Args:
        in_features: D of the input; out_features: size of the embedding.
        hidden: width; blocks: number of residual blocks.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.first = ConditionInput(in_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(blocks)
        )
        self.last = nn.Linear(hidden, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, in_features) -> (B, out_features)``."""
        h = self.first(features)
        for block in self.blocks:
            h = h + block(h)
        return self.last(h)


def grid_term(grid: GridPosition | None, context: FlowContext, like: torch.Tensor,
              camera_grid: CameraGrid | None = None) -> torch.Tensor | float:
    """What ``grid`` and ``camera_grid`` add at each pixel of ``like`` ``(B, F, H, W)`` (in its dtype) for the
    context's grid positions (and, for ``camera_grid``, each sample's camera); 0 for a layer without either."""
    if grid is None and camera_grid is None:
        return 0.0
    positions = context.cond.grid_like(like)  # built once for both readers (the upright grid when none is carried)
    term: torch.Tensor | float = 0.0
    if grid is not None:
        term = grid(positions).to(like.dtype)
    if camera_grid is not None:
        term = term + camera_grid(positions, context.cond.features).to(like.dtype)
    return term


def with_condition_planes(meta: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``[meta as constant planes; clean]``: ``(B, E)`` condition embedding and ``(B, 3, H, W)`` clean image ->
    ``(B, E + 3, H, W)`` in the clean image's dtype, what a pointwise (1x1) network of both reads."""
    return torch.cat([meta.to(clean.dtype)[:, :, None, None].expand(-1, -1, *clean.shape[2:]), clean], 1)


class ConditionalAffine(FlowLayer):
    """``z = exp(s) * x + b`` element-wise, with ``(s, b)`` from :meth:`scale_bias`: the one computation that the
    forward map, the inverse and the sampling form all share."""

    def scale_bias(self, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, b)``, each broadcastable to ``(B, C, H, W)``, in the dtype of ``context.clean``."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, bias = self.scale_bias(context)
        return x * torch.exp(log_scale) + bias, log_scale

    def invert(self, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
        log_scale, bias = self.scale_bias(context)
        return (z - bias) * torch.exp(-log_scale)


class SignalAwareAffine(ConditionalAffine):
    """SAL: ``z = exp(s) * x + b`` with ``[s, b] = tanh(SpatialConvs(clean)) * Embed(camera, ISO)``.

    The spatial convolutions see a ``receptive_field_px`` window of the clean image, so the noise scale
    can depend on local structure (edges, texture); the condition embedding modulates it per channel. With
    ``grid_px``, the first convolution's output also gets a learned value per position in the camera's grid.

    Args:
        channels: C of the noise; space: the condition vocabulary.
        features: width of the convolutions; receptive_field_px: odd window size.
        meta_hidden, meta_blocks: the condition MLP.
        grid_px: period of the grid read (0: none).
        camera_adapters: a scale and shift per camera of every hidden layer
            (:class:`~nmflowgan.condition_input.CameraModulation`).
        camera_grid_px: period of a grid read per camera (:class:`~nmflowgan.condition_input.CameraGrid`; 0: none).
    """

    def __init__(self, channels: int, space: ConditionSpace, features: int, receptive_field_px: int,
                 meta_hidden: int, meta_blocks: int, grid_px: int = 0, camera_adapters: bool = False,
                 camera_grid_px: int = 0) -> None:
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = [nn.Conv2d(3, features, 1), nn.ReLU()]
        for _ in range(receptive_field_px // 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        layers += [nn.Conv2d(features, 2 * channels, 1), nn.Tanh()]
        self.structure = nn.Sequential(*layers)
        self.meta = ResidualMLP(space.feature_dim, 2 * channels, meta_hidden, meta_blocks)
        self.grid = GridPosition(features, grid_px) if grid_px else None
        self.camera_grid = CameraGrid(features, len(space.cameras), camera_grid_px) if camera_grid_px else None
        self.modulations = hidden_modulations(self.structure, len(space.cameras)) if camera_adapters else None

    def scale_bias(self, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = context.clean.dtype
        first = self.structure[0](context.clean_compute)
        first = first + grid_term(self.grid, context, first, self.camera_grid)
        structure = modulated(self.structure[1:], first, self.modulations, context.cond.features,
                              start=1).to(dtype)  # (B, 2C, H, W)
        meta = self.meta(context.cond.features.to(dtype))[:, :, None, None]  # (B, 2C, 1, 1)
        embedding = structure * meta
        return embedding[:, : self.channels], embedding[:, self.channels :]

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> FlowLayer:
        """The spatial convolutions (and the grid's values) in ``dtype``; the product with the embedding stays in
        float32."""
        layer = copy.deepcopy(self).float()
        layer.structure.to(dtype=dtype, memory_format=memory_format)
        if layer.grid is not None:
            layer.grid.to(dtype)
        return layer


class SignalDependentAffine(ConditionalAffine):
    """SDL: ``z = exp(s) * x + b`` with ``[s, b] = tanh(PointwiseConvs([Embed(camera, ISO), clean]))``.

    Pointwise (1x1) convolutions make scale and bias a function of the clean intensity at the same pixel:
    the heteroscedastic, signal-dependent part of camera noise. With ``grid_px`` (the period of the grid read),
    also of the pixel's position in the camera's grid: a learned value per position joins the first hidden layer.
    With ``camera_adapters``, every hidden layer is scaled and shifted per camera; with ``camera_grid_px``, each
    camera adds values of its own per grid position to the first hidden layer.
    """

    # the first two convolutions, which have no activation between them (folded when drawing)
    ENTRY = 2

    def __init__(self, channels: int, space: ConditionSpace, features: int, embedding: int,
                 meta_hidden: int, meta_blocks: int, grid_px: int = 0, camera_adapters: bool = False,
                 camera_grid_px: int = 0) -> None:
        super().__init__()
        self.channels = channels
        self.meta = ResidualMLP(space.feature_dim, embedding, meta_hidden, meta_blocks)
        negative_slope = 0.2
        self.pointwise = nn.Sequential(
            nn.Conv2d(embedding + 3, features, 1),
            nn.Conv2d(features, 2 * features, 1), nn.LeakyReLU(negative_slope),
            nn.Conv2d(2 * features, 2 * features, 1), nn.LeakyReLU(negative_slope),
            nn.Conv2d(2 * features, features, 1), nn.LeakyReLU(negative_slope),
            nn.Conv2d(features, 2 * channels, 1), nn.Tanh(),
        )
        self.grid = GridPosition(2 * features, grid_px) if grid_px else None
        self.camera_grid = CameraGrid(2 * features, len(space.cameras), camera_grid_px) if camera_grid_px else None
        self.modulations = hidden_modulations(self.pointwise, len(space.cameras)) if camera_adapters else None
        self.folded: _FoldedEntry | None = None  # set in sampling copies only (see for_sampling)

    def scale_bias(self, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        clean = context.clean_compute
        meta = self.meta(context.cond.features.to(context.clean.dtype))  # (B, E)
        if self.folded is None:
            hidden = self.pointwise[: self.ENTRY](with_condition_planes(meta, clean))
            rest = self.pointwise[self.ENTRY :]
        else:
            hidden, rest = self.folded(clean, meta), self.pointwise
        hidden = hidden + grid_term(self.grid, context, hidden, self.camera_grid)
        embedding = modulated(rest, hidden, self.modulations, context.cond.features,
                              start=self.ENTRY).to(context.clean.dtype)  # (B, 2C, H, W)
        return embedding[:, : self.channels], embedding[:, self.channels :]

    def for_sampling(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> FlowLayer:
        """The pointwise convolutions in ``dtype``; with ``fold``, the first two (no activation between them)
        become one convolution of the clean image plus a per-sample bias (:class:`_FoldedEntry`)."""
        layer = copy.deepcopy(self).float()
        if fold:
            layer.folded = _FoldedEntry(self.pointwise[0], self.pointwise[1], dtype, memory_format)
            layer.pointwise = layer.pointwise[self.ENTRY :]
        layer.pointwise.to(dtype=dtype, memory_format=memory_format)
        if layer.grid is not None:
            layer.grid.to(dtype)
        return layer


class ConditionalLinear(ConditionalAffine):
    """CL: ``z = exp(s_c) * x + b_c``, one scale and bias per channel for each condition.

    Where the ISO encoding has cells (one-hot) ``s`` and ``b`` are learned tables with one row per (camera, ISO)
    cell, as the paper's CL2; where it interpolates (continuous) they are a small network of the condition
    features, so an ISO between the trained ones gets interpolated parameters. Both start at the identity.
    """

    def __init__(self, channels: int, space: ConditionSpace, hidden: int) -> None:
        super().__init__()
        self.channels = channels
        self.per_cell = space.n_cells > 0
        if self.per_cell:
            self.log_scale = nn.Parameter(torch.zeros(space.n_cells, channels))
            self.bias = nn.Parameter(torch.zeros(space.n_cells, channels))
        else:
            self.net = nn.Sequential(
                ConditionInput(space.feature_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * channels)
            )
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def scale_bias(self, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(log_scale, bias)``, each ``(B, C, 1, 1)``."""
        dtype = context.clean.dtype
        if self.per_cell:
            cell = context.cond.cell
            if bool((cell < 0).any()):
                raise ValueError("a per-cell ConditionalLinear needs conditions encoded with cells (one-hot ISO)")
            log_scale, bias = self.log_scale[cell], self.bias[cell]
        else:
            out = self.net(context.cond.features.to(dtype))
            log_scale, bias = out[:, : self.channels], out[:, self.channels :]
        return log_scale.to(dtype)[:, :, None, None], bias.to(dtype)[:, :, None, None]

    @torch.no_grad()
    def standardize(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Sets the layer so that inputs of per-channel ``mean`` and ``std`` (each ``(C,)``) leave it with
        zero mean and unit variance, for every condition. The explicit data-dependent initialization that
        the trainer calls once before the first step; the values live in ordinary parameters."""
        log_scale = -torch.log(std.clamp_min(1e-6))
        bias = -mean * torch.exp(log_scale)
        if self.per_cell:
            self.log_scale.copy_(log_scale.expand_as(self.log_scale))
            self.bias.copy_(bias.expand_as(self.bias))
        else:
            self.net[-1].bias.copy_(torch.cat([log_scale, bias]))


class _FoldedEntry(nn.Module):
    """SDL's first two 1x1 convolutions folded into one (exact: no activation between them).

    ``W1 (W0 [meta; clean] + b0) + b1 = (W1 W0_clean) clean + (W1 (W0_meta meta + b0) + b1)``: the second term
    is constant over the image, a ``(B, 2F)`` bias computed once per batch.
    """

    def __init__(self, first: nn.Conv2d, second: nn.Conv2d, dtype: torch.dtype,
                 memory_format: torch.memory_format) -> None:
        super().__init__()
        embedding = first.in_channels - 3
        w0, w1 = first.weight[:, :, 0, 0].double(), second.weight[:, :, 0, 0].double()
        self.register_buffer("meta_weight", (w1 @ w0[:, :embedding]).float().detach())  # (2F, E)
        self.register_buffer("meta_bias", (w1 @ first.bias.double() + second.bias.double()).float().detach())
        weight = (w1 @ w0[:, embedding:])[:, :, None, None].detach()  # (2F, 3, 1, 1)
        self.register_buffer("clean_weight", weight.to(dtype).contiguous(memory_format=memory_format))

    def forward(self, clean: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        """``clean (B, 3, H, W)`` in the compute format and ``meta (B, E)`` float32 -> ``(B, 2F, H, W)``."""
        bias = F.linear(meta.float(), self.meta_weight, self.meta_bias)
        return F.conv2d(clean, self.clean_weight) + bias.to(clean.dtype)[:, :, None, None]
