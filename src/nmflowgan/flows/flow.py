"""The pixel-wise conditional flow: a stack of layers built from a spec string such as
``UD|NE|SAL|SDL|CL2|SAL|SDL|CL2``, with a standard normal base distribution."""

from __future__ import annotations

import math

import torch
from torch import nn, special

from nmflowgan.conditions import Condition, ConditionSpace
from nmflowgan.config import FlowConfig
from nmflowgan.flows.affine import ConditionalLinear, SignalAwareAffine, SignalDependentAffine
from nmflowgan.flows.base import FlowContext, FlowLayer
from nmflowgan.flows.dequantize import NoiseExtraction, UniformDequantization
from nmflowgan.flows.spline import ConditionalSpline

LOG_2PI = math.log(2 * math.pi)


def build_layer(name: str, config: FlowConfig, space: ConditionSpace, channels: int) -> FlowLayer:
    """The one place a layer name becomes a layer."""
    if name == "UD":
        return UniformDequantization()
    if name == "NE":
        return NoiseExtraction()
    if name == "SAL":
        return SignalAwareAffine(channels, space, config.conv_features, config.receptive_field_px,
                                 config.meta_hidden, config.meta_blocks, config.grid_px, config.camera_adapters,
                                 config.camera_grid_px)
    if name == "SDL":
        return SignalDependentAffine(channels, space, config.conv_features, config.sdl_embedding,
                                     config.meta_hidden, config.meta_blocks, config.grid_px, config.camera_adapters,
                                     config.camera_grid_px)
    if name == "CL2":
        return ConditionalLinear(channels, space, config.meta_hidden)
    if name == "RQS":
        return ConditionalSpline(channels, space, config.conv_features, config.sdl_embedding, config.meta_hidden,
                                 config.meta_blocks, config.grid_px, config.camera_adapters, config.camera_grid_px)
    raise ValueError(f"unknown flow layer {name!r}")  # FlowConfig validates names first


def invert_layers(layers: nn.ModuleList, z: torch.Tensor, context: FlowContext) -> torch.Tensor:
    """Latents ``(B, C, H, W)`` back to noisy images in 8-bit units through ``layers`` (data -> latent order)
    in reverse, without log-determinants: what drawing needs."""
    for layer in reversed(layers):
        z = layer.invert(z, context)
    return z


def latent_like(clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A standard-normal latent shaped like ``clean``, drawn on the generator's device and then moved to
    ``clean``'s, so a CPU generator gives the same numbers on any device."""
    device = generator.device if generator is not None else clean.device
    return torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype).to(clean.device)


class NoiseFlow(nn.Module):
    """Conditional normalizing flow of camera noise given the clean image, camera and ISO.

    The layers map a noisy image (8-bit units) to a latent ``z ~ N(0, I)`` of the same shape: scoring is
    :meth:`latent_and_log_prob`; drawing inverts the layers (:func:`invert_layers`, which the noise model's
    composition calls). Every
    layer after ``NE`` acts on each pixel and channel alone, so noise at one pixel is independent of noise
    at other pixels given the clean image: spatial and cross-channel correlation come from outside the
    flow (the latent correlation, or the refiner).

    Args:
        config: the layer spec and network sizes.
        space: the camera/ISO vocabulary.
        channels: C of the images (3 for RGB).
    """

    def __init__(self, config: FlowConfig, space: ConditionSpace, channels: int = 3) -> None:
        super().__init__()
        self.config = config
        self.space = space
        self.layers = nn.ModuleList(build_layer(n, config, space, channels) for n in config.layer_names)

    def transform(self, x: torch.Tensor, context: FlowContext, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log dz/dx)`` of each value ``(B, C, H, W)`` through the layers from index ``start`` on (every layer
        is pixel-wise, so the log-derivatives of a value add up along the flow)."""
        total = x.new_zeros(x.shape)
        for layer in self.layers[start:]:
            x, log_derivative = layer.transform(x, context)
            total = total + log_derivative
        return x, total

    def latent_and_log_prob(self, noise: torch.Tensor, clean: torch.Tensor, cond: Condition,
                            generator: torch.Generator | None = None, uniform: torch.Tensor | None = None,
                            censored: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The one score path: ``(z, log_prob)``, the latent ``(B, C, H, W)`` that ``noise`` maps to and the
        log-density of ``noise`` given ``clean`` and the condition.

        Args:
            noise: ``(B, C, H, W)`` noise in 8-bit units (``noisy - clean``; integers if the flow has UD).
            clean: ``(B, C, H, W)`` clean image in [0, 1].
            cond: encoded condition of batch size B.
            generator: source of the dequantization noise.
            uniform: pre-drawn dequantization noise in [0, 1), shape of ``noise`` (instead of drawing).
            censored: score a noisy value of 0 or 255 as what it records, every value the camera clipped there:
                ``P(Y < 1)`` and ``P(Y >= 255)`` under the flow (``Y`` the dequantized value; 0 and 255 without
                ``UD``), instead of a density at a point where the real noise has a point mass. The latent of a
                clipped value is that of its censoring boundary: every layer is an increasing map of each value
                alone, so ``P(Y < b) = Phi(z(b))`` and ``P(Y >= b) = Phi(-z(b))``, and one pass through the flow
                gives both the densities and the clipped values' probabilities.

        Returns:
            ``z`` and ``(B,)`` log-likelihood in nats, summed over C, H and W (a lower bound of the discrete
            log-probability when the flow dequantizes).
        """
        context = FlowContext(clean, cond, generator, uniform)
        noisy = clean * 255.0 + noise
        if not censored:
            z, log_derivative = self.transform(noisy, context)
            return z, (log_derivative - 0.5 * (z.square() + LOG_2PI)).flatten(1).sum(1)
        low, high = noisy <= 0, noisy >= 255
        x, start, lower_edge = noisy, 0, 0.0
        if isinstance(self.layers[0], UniformDequantization):  # the recorded 0 stands for every y below 1
            x, _ = self.layers[0].transform(noisy, context)
            start, lower_edge = 1, 1.0
        x = torch.where(low, lower_edge, torch.where(high, 255.0, x))
        z, log_derivative = self.transform(x, context, start)
        log_density = log_derivative - 0.5 * (z.square() + LOG_2PI)
        log_p = torch.where(low, special.log_ndtr(z), torch.where(high, special.log_ndtr(-z), log_density))
        return z, log_p.flatten(1).sum(1)

    @torch.no_grad()
    def initialize(self, noise: torch.Tensor, clean: torch.Tensor, cond: Condition,
                   generator: torch.Generator | None = None) -> None:
        """Data-dependent initialization, called once by the trainer before the first step: each CL
        layer is set to standardize what reaches it on this batch (as ActNorm's initialization), so
        training starts with z of roughly unit variance whatever the noise level."""
        context = FlowContext(clean, cond, generator)
        x = clean * 255.0 + noise
        for layer in self.layers:
            if isinstance(layer, ConditionalLinear):
                layer.standardize(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
            x, _ = layer(x, context)
