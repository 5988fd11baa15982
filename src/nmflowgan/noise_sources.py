"""Noise sources: the functions that draw noise for a batch of clean patches, for scoring and for
denoiser training alike.

A source is ``(clean (B, 3, P, P) in [0, 1], its batch, a generator) -> (B, 3, P, P)`` noise in 8-bit
units as a camera records it: ``clean * 255 + noise`` clipped to [0, 255] and, unless ``rounded=False``,
rounded to integers. The sources are the closed-form baselines (``gaussian``, ``nlf``, fitted on training
patches), a noise model (``nmflowgan``) or its flow alone (``flow-only``), the ``oracle``: a second
real capture of the same clean image (simcam only), and the ``decorrelated oracle``: every value from one of K
further captures picked at random, so each keeps its true distribution while its neighbours come from other
captures (a simcam test set written with ``--oracle-draws K``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nmflowgan.baselines import GaussianNoise, HeteroscedasticNoise
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.models.noise_model import NoiseModel, clip_to_8bit, quantize
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.progress import progress as progress_bar

NoiseSource = Callable[[torch.Tensor, PatchBatch, torch.Generator], torch.Tensor]


def recorded(clean: torch.Tensor, noise_255: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """The noise a camera records for ``clean`` in [0, 1]: clipped to the 8-bit range, rounded if ``rounded``."""
    return quantize(clean, noise_255) if rounded else clip_to_8bit(clean, noise_255)


def baseline_noise(baseline: GaussianNoise | HeteroscedasticNoise, rounded: bool = True) -> NoiseSource:
    """Noise drawn from a fitted closed-form baseline at each patch's camera and ISO."""
    return lambda clean, batch, g: recorded(clean, baseline.noise(clean, batch.cameras, batch.isos.tolist(), g),
                                            rounded)


def model_noise(model: NoiseModel, refine: bool = True, options: SamplingOptions | None = None,
                rounded: bool = True) -> NoiseSource:
    """Noise drawn from a noise model at each patch's camera and ISO (``refine=False``: its flow alone),
    computed on the model's device and returned on ``clean``'s.

    The latent is the first draw from the generator, so two sources given generators in the same state
    (``flow-only`` and ``nmflowgan``) start from the same latent draw: their difference is what the model adds
    to its flow (the latent correlation, the refiner).
    """
    device = next(model.parameters()).device

    def draw(clean: torch.Tensor, batch: PatchBatch, g: torch.Generator) -> torch.Tensor:
        on_device = clean.to(device)
        cond = model.encode(batch.cameras, batch.isos.tolist(), clean.shape[0], grid=batch.grid)
        return model.draw(on_device, cond, g, refine=refine, options=options, rounded=rounded).to(clean.device,
                                                                                                   clean.dtype)
    return draw


def oracle_noise(clean: torch.Tensor, batch: PatchBatch, g: torch.Generator) -> torch.Tensor:
    """The noise of the second real capture of each patch (simcam data sets only)."""
    if batch.oracle is None:
        raise ValueError("this batch has no second capture")
    return (batch.oracle.double() - batch.clean.double()).to(clean.device, clean.dtype)


def decorrelated_oracle_noise(clean: torch.Tensor, batch: PatchBatch, g: torch.Generator) -> torch.Tensor:
    """Real noise without its spatial and cross-channel correlation: each value (pixel and channel) taken from one
    of the batch's K further captures, picked at random from ``g``. Each value is still a draw of the camera's
    noise for its pixel; two neighbours share a capture with probability 1/K only, so their correlation shrinks by
    that factor. Scored beside the oracle, it shows what the per-patch KLD charges the real noise for being
    correlated (a correlated patch fills its histogram from fewer independent values)."""
    if batch.oracle_draws is None:
        raise ValueError("this batch has no further captures")
    draws = batch.oracle_draws.double()  # (B, K, 3, P, P)
    pick = torch.randint(draws.shape[1], (draws.shape[0], 1, *draws.shape[2:]), generator=g)
    return (draws.gather(1, pick).squeeze(1) - batch.clean.double()).to(clean.device, clean.dtype)


def fit_baselines(records: list, patch_px: int, max_patches: int, seed: int, progress: bool,
                  max_pixels: int = MAX_PIXELS) -> tuple[GaussianNoise, HeteroscedasticNoise]:
    """Fits ``gaussian`` and ``nlf`` on up to ``max_patches`` training patches (a fixed random subset)."""
    dataset = PatchDataset(records, patch_px, patch_px, max_pixels=max_pixels)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_patches].tolist()
    gaussian, nlf = GaussianNoise(), HeteroscedasticNoise()
    for start in progress_bar(range(0, len(order), 64), progress, desc="fit baselines"):
        batch = collate([dataset[i] for i in order[start : start + 64]])
        clean = batch.clean.double()
        noise, isos = batch.noisy.double() - clean, batch.isos.tolist()
        for model in (gaussian, nlf):
            model.update(clean / 255.0, noise, batch.cameras, isos)
    return gaussian, nlf
