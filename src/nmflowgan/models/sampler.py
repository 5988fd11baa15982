"""The sampling-time form of a noise model: the function of :meth:`NoiseModel.compose`, computed faster.

A :class:`Sampler` is a frozen snapshot of a model's weights rearranged for inference only:

* each flow layer's own sampling copy (:meth:`FlowLayer.for_sampling`) and the refiner's
  (:meth:`UNetRefiner.for_sampling`), with exact folding: SDL's first two 1x1 convolutions have no
  activation between them, so they become one convolution on the clean image plus a per-sample bias that
  carries the camera/ISO embedding (constant over the image); the refiner's input scale ``1 / noise_scale``
  goes into its first convolution and the output scale ``noise_scale`` into its last one;
* skipped work: no log-determinants, condition networks run once per batch, no graph (inference mode);
* on the CPU, large batches in chunks of a few hundred thousand pixels (the working set stays in cache);
* channels-last memory and a cheaper number format for the convolutions: bf16 where the device has
  native bf16 dot products (AVX512-BF16 or AMX CPUs, CUDA GPUs that support it). The scale/bias maps
  and every elementwise step of the flow stay in float32; only the convolutions' inputs and weights are
  rounded to bf16 (they accumulate in float32);
* optionally ``torch.compile`` of the refiner.

``SamplingOptions.plain()`` is the reference path: the model's own eager float32 forward, unchanged.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from nmflowgan.conditions import Condition
from nmflowgan.errors import BadInputError
from nmflowgan.flows.base import FlowContext
from nmflowgan.models.composition import ComposedNoise

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Largest batch (pixels) one CPU forward takes: on the 2-core test machine the paper preset drew 0.52 MP/s
# one 256x256 image at a time and 0.37 MP/s eight at a time (see BENCHMARKS.md).
CPU_CHUNK_PX = 2**17


@dataclass(frozen=True)
class SamplingOptions:
    """How noise is computed at inference.

    Attributes:
        precision: number format of the convolutions: ``fp32``, ``bf16``, ``fp16`` (CUDA only), or
            ``auto`` (bf16 where the device computes it natively, else fp32).
        channels_last: NHWC memory for the convolutions.
        fold: exact folding and skipped work (see the module docstring); False with fp32 and no
            channels-last is the plain path.
        compile: ``torch.compile`` the refiner (pays back its compile time only on long jobs).
    """

    precision: str = "auto"
    channels_last: bool = True
    fold: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadInputError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")

    @classmethod
    def plain(cls) -> SamplingOptions:
        """The model's own eager float32 forward (the reference every benchmark compares against)."""
        return cls(precision="fp32", channels_last=False, fold=False, compile=False)

    @classmethod
    def named(cls, name: str, compile: bool = False) -> SamplingOptions:
        """The command line's ``--sampling`` choices: ``plain``, or a precision of the optimized path."""
        if name == "plain":
            return cls.plain()
        return cls(precision=name, compile=compile)

    @property
    def is_plain(self) -> bool:
        return self == SamplingOptions.plain()


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 natively (so bf16 convolutions are faster than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # oneDNN, which runs the convolutions, may be capped below the CPU's own ISA (ONEDNN_MAX_CPU_ISA=AVX2
        # makes an AVX512-BF16 CPU compute as an AVX2 one): then bf16 would be emulated.
        cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        if cap != "ALL" and "BF16" not in cap and "AMX" not in cap:
            return False
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's ISA checks
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype ``precision`` means on ``device``."""
    if precision == "auto":
        return torch.bfloat16 if has_native_bf16(device) else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise BadInputError("fp16 sampling needs a CUDA device; use bf16 or fp32 on the CPU")
    return DTYPES[precision]


class Sampler(ComposedNoise):
    """Draws noise from a snapshot of ``model`` the fast way; same function as ``model.compose`` (the same
    composition, :class:`ComposedNoise`, of parts laid out for drawing).

    Args:
        model: a :class:`~nmflowgan.models.noise_model.NoiseModel` (the sampler copies its weights:
            later changes to the model do not reach it).
        options: precision, memory format, folding, compilation.
    """

    def __init__(self, model: ComposedNoise, options: SamplingOptions | None = None) -> None:
        super().__init__()
        self.options = options or SamplingOptions()
        device = next(model.parameters()).device
        self.dtype = resolve_dtype(self.options.precision, device)
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.flow_layers = nn.ModuleList(layer.for_sampling(self.dtype, self.memory_format, self.options.fold)
                                         for layer in model.flow_layers)
        # The latent filter stays float32: its taps are normalized to unit energy, which bf16 would spoil.
        self.correlation = copy.deepcopy(model.correlation)
        self.refiner = (model.refiner.for_sampling(self.dtype, self.memory_format, self.options.fold,
                                                   self.options.compile)
                        if model.refiner is not None else None)
        self.requires_grad_(False)

    def flow_context(self, clean: torch.Tensor, cond: Condition) -> FlowContext:
        """Scales, biases and every elementwise step in float32; the convolutions read the clean image in the
        compute format."""
        clean = clean.float()
        return FlowContext(clean, cond, compute=clean.to(self.dtype).contiguous(memory_format=self.memory_format))

    @torch.inference_mode()
    def noise(self, clean: torch.Tensor, cond: Condition, latent: torch.Tensor, refine: bool = True) -> torch.Tensor:
        """Noise in 8-bit units (float32, not quantized) for ``clean (B, 3, H, W)`` in [0, 1] and a
        standard-normal ``latent`` of the same shape (already multiplied by any temperature); ``refine``
        as in :meth:`NoiseModel.draw`.

        On the CPU the batch goes through in chunks of at most ``CPU_CHUNK_PX`` pixels (at least one
        image): every step acts on each image alone, so chunking is exact, and it keeps the working set
        in cache.
        """
        images = max(1, CPU_CHUNK_PX // (clean.shape[-2] * clean.shape[-1])) if clean.device.type == "cpu" else None
        if images is None or images >= clean.shape[0]:
            return self.compose(clean.float(), cond, latent.float(), correlate=refine, refine=refine)
        return torch.cat([self.noise(clean[i : i + images], cond[i : i + images], latent[i : i + images], refine)
                          for i in range(0, clean.shape[0], images)])
