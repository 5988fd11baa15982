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

from nmflowgan.conditions import ConditionSpace
from nmflowgan.flows.base import FlowContext, FlowLayer, SamplingInputs


class ResidualMLP(nn.Module):
    """Embeds condition features: ``Linear -> [ReLU, Linear, ReLU, Linear] + skip (x blocks) -> Linear``.

    Args:
        in_features: D of the input; out_features: size of the embedding.
        hidden: width; blocks: number of residual blocks.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.first = nn.Linear(in_features, hidden)
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


def _affine(x: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor, inverse: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Applies ``exp(s) * x + b`` (or its inverse) with broadcasting; returns output and (B,) logdet."""
    log_scale = log_scale.expand_as(x)
    logdet = log_scale.flatten(1).sum(1)
    if inverse:
        return (x - bias) * torch.exp(-log_scale), -logdet
    return x * torch.exp(log_scale) + bias, logdet


class SignalAwareAffine(FlowLayer):
    """SAL: ``z = exp(s) * x + b`` with ``[s, b] = tanh(SpatialConvs(clean)) * Embed(camera, ISO)``.

    The spatial convolutions see a ``receptive_field_px`` window of the clean image, so the noise scale
    can depend on local structure (edges, texture); the condition embedding modulates it per channel.

    Args:
        channels: C of the noise; space: the condition vocabulary.
        features: width of the convolutions; receptive_field_px: odd window size.
        meta_hidden, meta_blocks: the condition MLP.
    """

    def __init__(self, channels: int, space: ConditionSpace, features: int, receptive_field_px: int,
                 meta_hidden: int, meta_blocks: int) -> None:
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = [nn.Conv2d(3, features, 1), nn.ReLU()]
        for _ in range(receptive_field_px // 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        layers += [nn.Conv2d(features, 2 * channels, 1), nn.Tanh()]
        self.structure = nn.Sequential(*layers)
        self.meta = ResidualMLP(space.feature_dim, 2 * channels, meta_hidden, meta_blocks)

    def _scale_bias(self, context: FlowContext, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        structure = self.structure(context.clean.to(dtype))  # (B, 2C, H, W)
        meta = self.meta(context.cond.features.to(dtype))[:, :, None, None]  # (B, 2C, 1, 1)
        embedding = structure * meta
        return embedding[:, : self.channels], embedding[:, self.channels :]

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(x, *self._scale_bias(context, x.dtype), inverse=False)

    def inverse(self, z: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(z, *self._scale_bias(context, z.dtype), inverse=True)

    def sampling_inverse(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> nn.Module:
        return _SignalAwareInverse(self, dtype, memory_format)


class SignalDependentAffine(FlowLayer):
    """SDL: ``z = exp(s) * x + b`` with ``[s, b] = tanh(PointwiseConvs([Embed(camera, ISO), clean]))``.

    Pointwise (1x1) convolutions make scale and bias a function of the clean intensity at the same pixel:
    the heteroscedastic, signal-dependent part of camera noise.
    """

    def __init__(self, channels: int, space: ConditionSpace, features: int, embedding: int,
                 meta_hidden: int, meta_blocks: int) -> None:
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

    def _scale_bias(self, context: FlowContext, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        clean = context.clean.to(dtype)
        meta = self.meta(context.cond.features.to(dtype))[:, :, None, None]  # (B, E, 1, 1)
        meta = meta.expand(-1, -1, *clean.shape[2:])  # (B, E, H, W)
        embedding = self.pointwise(torch.cat([meta, clean], dim=1))  # (B, 2C, H, W)
        return embedding[:, : self.channels], embedding[:, self.channels :]

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(x, *self._scale_bias(context, x.dtype), inverse=False)

    def inverse(self, z: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(z, *self._scale_bias(context, z.dtype), inverse=True)

    def sampling_inverse(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> nn.Module:
        if fold:
            return _FoldedSignalDependentInverse(self, dtype, memory_format)
        return _SignalDependentInverse(self, dtype, memory_format)


class ConditionalLinear(FlowLayer):
    """CL: ``z = exp(s_c) * x + b_c``, one scale and bias per channel for each condition.

    In ``onehot`` mode ``s`` and ``b`` are learned tables with one row per (camera, ISO) cell, as the
    paper's CL2; in ``continuous`` mode they are a small network of the condition features, so an ISO
    between the trained ones gets interpolated parameters. Both start at the identity.
    """

    def __init__(self, channels: int, space: ConditionSpace, hidden: int) -> None:
        super().__init__()
        self.channels = channels
        self.onehot = space.iso_mode == "onehot"
        if self.onehot:
            self.log_scale = nn.Parameter(torch.zeros(space.n_cells, channels))
            self.bias = nn.Parameter(torch.zeros(space.n_cells, channels))
        else:
            self.net = nn.Sequential(
                nn.Linear(space.feature_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * channels)
            )
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def parameters_for(self, context: FlowContext, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(log_scale, bias)``, each ``(B, C, 1, 1)``."""
        if self.onehot:
            cell = context.cond.cell
            if bool((cell < 0).any()):
                raise ValueError("a one-hot ConditionalLinear needs conditions encoded in onehot mode")
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
        if self.onehot:
            self.log_scale.copy_(log_scale.expand_as(self.log_scale))
            self.bias.copy_(bias.expand_as(self.bias))
        else:
            self.net[-1].bias.copy_(torch.cat([log_scale, bias]))

    def forward(self, x: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(x, *self.parameters_for(context, x.dtype), inverse=False)

    def inverse(self, z: torch.Tensor, context: FlowContext) -> tuple[torch.Tensor, torch.Tensor]:
        return _affine(z, *self.parameters_for(context, z.dtype), inverse=True)

    def sampling_inverse(self, dtype: torch.dtype, memory_format: torch.memory_format, fold: bool) -> nn.Module:
        return _ConditionalLinearInverse(self)


# ---- the sampling forms: each layer's inverse for drawing only (see FlowLayer.sampling_inverse) ---------------


class _AffineInverse(nn.Module):
    """``x = (z - b) * exp(-s)`` in float32, with ``s, b`` from :meth:`scale_bias`; no log-determinant."""

    def scale_bias(self, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, inputs: SamplingInputs) -> torch.Tensor:
        scale, bias = self.scale_bias(inputs)
        return (z - bias) * torch.exp(-scale)


class _SignalAwareInverse(_AffineInverse):
    """SAL's inverse: the spatial convolutions in the compute format, the product with the embedding in float32."""

    def __init__(self, layer: SignalAwareAffine, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.channels = layer.channels
        self.structure = copy.deepcopy(layer.structure).to(dtype=dtype, memory_format=memory_format)
        self.meta = copy.deepcopy(layer.meta).float()

    def scale_bias(self, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.structure(inputs.clean_compute).float() * self.meta(inputs.cond.features.float())[:, :, None, None]
        return out[:, : self.channels], out[:, self.channels :]


class _SignalDependentInverse(_AffineInverse):
    """SDL's inverse as it is, its pointwise convolutions in the compute format."""

    def __init__(self, layer: SignalDependentAffine, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.channels = layer.channels
        self.meta = copy.deepcopy(layer.meta).float()
        self.pointwise = copy.deepcopy(layer.pointwise).to(dtype=dtype, memory_format=memory_format)

    def scale_bias(self, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor]:
        clean = inputs.clean_compute
        meta = self.meta(inputs.cond.features.float()).to(clean.dtype)[:, :, None, None]
        out = self.pointwise(torch.cat([meta.expand(-1, -1, *clean.shape[2:]), clean], dim=1)).float()
        return out[:, : self.channels], out[:, self.channels :]


class _FoldedSignalDependentInverse(_AffineInverse):
    """SDL's inverse with its first two 1x1 convolutions folded into one (exact, no activation between them).

    ``W1 (W0 [meta; clean] + b0) + b1 = (W1 W0_clean) clean + (W1 (W0_meta meta + b0) + b1)``: the second term
    is constant over the image, a ``(B, 2F)`` bias computed once per batch.
    """

    def __init__(self, layer: SignalDependentAffine, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        first, second = layer.pointwise[0], layer.pointwise[1]
        embedding = first.in_channels - 3
        w0, w1 = first.weight[:, :, 0, 0].double(), second.weight[:, :, 0, 0].double()
        self.channels = layer.channels
        self.meta = copy.deepcopy(layer.meta).float()
        self.register_buffer("meta_weight", (w1 @ w0[:, :embedding]).float())  # (2F, E)
        self.register_buffer("meta_bias", (w1 @ first.bias.double() + second.bias.double()).float())  # (2F,)
        weight = (w1 @ w0[:, embedding:])[:, :, None, None]  # (2F, 3, 1, 1)
        self.register_buffer("clean_weight", weight.to(dtype).contiguous(memory_format=memory_format))
        self.rest = copy.deepcopy(layer.pointwise[2:]).to(dtype=dtype, memory_format=memory_format)

    def scale_bias(self, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor]:
        clean = inputs.clean_compute
        bias = F.linear(self.meta(inputs.cond.features.float()), self.meta_weight, self.meta_bias)  # (B, 2F)
        hidden = F.conv2d(clean, self.clean_weight) + bias.to(clean.dtype)[:, :, None, None]
        out = self.rest(hidden).float()
        return out[:, : self.channels], out[:, self.channels :]


class _ConditionalLinearInverse(_AffineInverse):
    """CL's inverse: one scale and bias per sample and channel, in float32."""

    def __init__(self, layer: ConditionalLinear) -> None:
        super().__init__()
        self.layer = copy.deepcopy(layer).float()

    def scale_bias(self, inputs: SamplingInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer.parameters_for(FlowContext(inputs.clean, inputs.cond), torch.float32)
