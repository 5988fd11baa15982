"""The pixel-wise conditional flow of NM-FlowGAN: its invertible layers (UD, NE, SAL, SDL, CL, the RQS spline),
each with its forward map, inverse and log-derivatives, and the flow that composes them."""

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
