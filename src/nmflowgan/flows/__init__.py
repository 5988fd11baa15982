"""Invertible layers and the pixel-wise conditional flow of NM-FlowGAN."""

from nmflowgan.flows.affine import ConditionalLinear, SignalAwareAffine, SignalDependentAffine
from nmflowgan.flows.base import FlowContext, FlowLayer
from nmflowgan.flows.dequantize import NoiseExtraction, UniformDequantization
from nmflowgan.flows.flow import NoiseFlow

__all__ = [
    "ConditionalLinear",
    "FlowContext",
    "FlowLayer",
    "NoiseExtraction",
    "NoiseFlow",
    "SignalAwareAffine",
    "SignalDependentAffine",
    "UniformDequantization",
]
