"""``evaluate``: how realistic a noise model's noise is, next to the baselines, on the same test patches.

Sources compared (each that applies), all scored by :class:`~nmflowgan.metrics.realism.RealismScorer`:

* ``gaussian`` and ``nlf``: closed-form fits to the training split (:mod:`nmflowgan.baselines`);
* ``flow-only``: the trained flow alone on white latents; ``nmflowgan``: the full model (its latent correlation
  and refiner, those it has). Both start from the same latent draw, so their difference is the model's
  correlation (latent filter or refiner), not sampling noise;
* ``oracle``: a second independent real draw of the same clean image (simcam only): the floor.
* ``decorrelated oracle``: real noise with its correlation removed, each value from one of K further draws (a
  simcam test set written with ``--oracle-draws K``). The oracle's KLD minus its is the *correlation charge*:
  what the per-patch KLD charges the true noise for being spatially correlated, which no correlated model can
  score below.

Two protocols (:data:`PROTOCOLS`):

* ``default``: non-overlapping 64x64 test patches (at most 512, evenly spread), generated noise recorded as
  a camera records it (rounded and clipped to 8 bits);
* ``official``: every 96x96 patch at stride 48 of the test split, generated noise clipped to the 8-bit
  range but not rounded, as the NM-FlowGAN paper's code scores it, with the model in float32.

The model runs through the plain float32 path unless ``options`` says otherwise, so a score does not depend
on whether the machine has native bf16.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.data.sidd import MIN_FURTHER_DRAWS
from nmflowgan.devices import resolve_device
from nmflowgan.errors import BadInputError, DataError
from nmflowgan.metrics.noise_stats import NoiseStats
from nmflowgan.metrics.realism import Condition, Realism, RealismScorer
from nmflowgan.models.noise_model import NoiseModel, exact_8bit_noise
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.noise_sources import (
    NoiseSource,
    baseline_noise,
    decorrelated_oracle_noise,
    fit_baselines,
    model_noise,
    oracle_noise,
)
from nmflowgan.progress import progress as progress_bar

log = logging.getLogger(__name__)
DECORRELATED = "decorrelated oracle"
SOURCE_ORDER = ("gaussian", "nlf", "flow-only", "nmflowgan", "oracle", DECORRELATED)
# Generator stream of each source: flow-only and nmflowgan share one, so they refine the same latents.
STREAMS = {"gaussian": 1, "nlf": 2, "flow-only": 3, "nmflowgan": 3, "oracle": 4, DECORRELATED: 5}


@dataclass(frozen=True)
class Protocol:
    """Which test patches are scored and how generated noise is recorded.

    Attributes:
        name: ``default`` or ``official``.
        patch_px, stride_px: side of the test patches and their spacing.
        max_patches: at most this many patches, evenly spread (None: all).
        rounded: round generated noise to 8-bit integers (True) or only clip it to the 8-bit range.
    """

    name: str
    patch_px: int
    stride_px: int
    max_patches: int | None
    rounded: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "patch_px": self.patch_px, "stride_px": self.stride_px,
                "max_patches": self.max_patches, "rounded": self.rounded}


PROTOCOLS = {"default": Protocol("default", 64, 64, 512, True), "official": Protocol("official", 96, 48, None, False)}


def protocol(name: str = "default", patch_px: int | None = None, max_patches: int | None = None) -> Protocol:
    """The protocol ``name``; the default one takes another patch size (non-overlapping) or patch count."""
    if name not in PROTOCOLS:
        raise BadInputError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    chosen = PROTOCOLS[name]
    if name == "official":
        if patch_px is not None or max_patches is not None:
            raise BadInputError("the official protocol scores every 96x96 patch at stride 48: --patch-px and "
                                "--max-patches apply to the default protocol only")
        return chosen
    patch = patch_px or chosen.patch_px
    if patch < 8:
        raise BadInputError(f"patch side {patch} px is too small: use at least 8")
    count = chosen.max_patches if max_patches is None else max_patches
    if count < 1:
        raise BadInputError(f"--max-patches must be at least 1, got {count}")
    return Protocol(name, patch, patch, count, chosen.rounded)


@dataclass
class EvalResult:
    """Scores of every source with what the report plots.

    Attributes:
        realism: overall and per-condition scores (what ``results.json`` holds).
        protocol: how the patches were chosen and the noise recorded; seed: every draw derives from it.
        sampling: the sampling path of the model's noise (``plain`` or the optimized path's options).
        stats / histograms: per (camera, ISO) and source (and ``real``), for the plots.
        examples: ``{(camera, iso): {"clean", "real", source: noise}}`` one patch each (8-bit units).
        skipped: ``{"camera ISO iso": test pairs}`` of the conditions the model does not know, left out of every
            score (evaluated with ``known_only``).
    """

    realism: Realism
    protocol: Protocol
    seed: int
    sampling: str
    stats: dict[Condition, dict[str, NoiseStats]]
    histograms: dict[Condition, dict[str, torch.Tensor]]
    examples: dict[Condition, dict[str, torch.Tensor]]
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        charge = correlation_charge(self.realism.models)
        return {"protocol": self.protocol.to_dict(), "seed": self.seed, "sampling": self.sampling,
                "skipped_conditions": self.skipped, **self.realism.to_dict(),
                **({} if charge is None else {"correlation_charge": charge})}


def correlation_charge(models: dict) -> float | None:
    """The oracle's KLD minus the decorrelated oracle's (``models``: source -> scores with a ``kld``), or None
    without both."""
    if "oracle" not in models or DECORRELATED not in models:
        return None
    return models["oracle"].kld - models[DECORRELATED].kld


def evaluate(checkpoint: str | Path, data: str | Path, split: str | None = None, train_split: str | None = None,
             protocol: Protocol = PROTOCOLS["default"], fit_patches: int = 2000, seed: int = 0,
             batch_size: int = 32, progress: bool = True, options: SamplingOptions | None = None,
             device: str = "auto", max_pixels: int = MAX_PIXELS, known_only: bool = False) -> EvalResult:
    """Scores a trained noise model and the baselines on the test patches of ``data``.

    Args:
        checkpoint: a run folder (its ``best``, else ``last``) or a saved model folder.
        data: the data set; split / train_split: test and training splits (default: the data set's). A data
            set without a test split (a single metadata.csv folder) is refused: the baselines would be fitted
            on the pairs they are scored on.
        protocol: which patches, how noise is recorded (see :data:`PROTOCOLS`).
        fit_patches: training patches the baselines are fitted on. seed: every draw derives from it.
        options: how the model's noise is computed (default: the plain float32 path).
        device: where the model runs (``auto``, ``cpu``, ``cuda`` or ``mps``); scores are computed in float64 on
            the CPU.
        max_pixels: the largest image accepted (checked from each header before decoding).
        known_only: score only the test pairs whose camera/ISO the model knows, and record the others in
            :attr:`EvalResult.skipped`; without it such pairs are refused (a score over part of the test set
            must not pass for a score over all of it).

    Returns:
        An :class:`EvalResult`.
    """
    options = options or SamplingOptions.plain()
    if protocol.name == "official" and options.precision != "fp32":
        raise BadInputError(f"the official protocol runs the model in float32; got sampling precision "
                            f"{options.precision!r} (use --sampling plain or fp32)")
    train_split, split = default_splits(data, train_split, split)
    if split is None or split == train_split:
        raise DataError(f"{data}: no test split apart from the training pairs; evaluate needs held-out pairs (a "
                        "folder with train/ and test/, each a metadata.csv folder or a SIDD-layout tree)")
    model = NoiseModel.load(checkpoint, map_location=resolve_device(device)).eval()
    train_records, test_records = find_pairs(data, train_split), find_pairs(data, split)
    if not test_records:
        raise DataError(f"{data}: the test split {split!r} holds no image pairs")
    usable = [r for r in test_records if model.space.knows(r.camera, r.iso)]
    if not usable:
        raise DataError(f"{data}: no test pair has a camera/ISO this model knows ({', '.join(model.cameras)})")
    skipped = Counter(f"{r.camera} ISO {r.iso:g}" for r in test_records if not model.space.knows(r.camera, r.iso))
    if skipped and not known_only:
        raise DataError(f"{data}: {sum(skipped.values())} of {len(test_records)} test pairs have a camera/ISO this "
                        f"model does not know ({', '.join(sorted(skipped))}); pass --known-only to score the other "
                        f"{len(usable)}")
    gaussian, nlf = fit_baselines(train_records, protocol.patch_px, fit_patches, seed, progress, max_pixels)
    test = PatchDataset(usable, protocol.patch_px, protocol.stride_px, with_oracle=True, max_pixels=max_pixels)
    indices = list(range(len(test))) if protocol.max_patches is None else test.evenly_spaced(protocol.max_patches)

    sources: dict[str, NoiseSource] = {
        "gaussian": baseline_noise(gaussian, protocol.rounded), "nlf": baseline_noise(nlf, protocol.rounded),
        "flow-only": model_noise(model, False, options, protocol.rounded),
        "nmflowgan": model_noise(model, True, options, protocol.rounded)}
    if all(r.oracle is not None for r in usable):
        sources["oracle"] = oracle_noise
        draws = {len(r.oracle_draws) for r in usable}  # every test pair with the same number, enough to pick among
        if len(draws) == 1 and min(draws) >= MIN_FURTHER_DRAWS:
            sources[DECORRELATED] = decorrelated_oracle_noise
    generators = {name: torch.Generator().manual_seed(seed + STREAMS[name]) for name in sources}

    scorer = RealismScorer(list(sources))
    examples: dict[Condition, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for start in progress_bar(range(0, len(indices), batch_size), progress, desc="evaluate"):
            batch = collate([test[i] for i in indices[start : start + batch_size]])
            clean = batch.clean.double() / 255.0
            real = batch.noisy.double() - batch.clean.double()
            drawn = {name: draw(clean.float(), batch, generators[name]) for name, draw in sources.items()}
            noises = {name: exact_8bit_noise(noise, batch.clean, protocol.rounded) for name, noise in drawn.items()}
            conditions = list(zip(batch.cameras, batch.isos.tolist()))
            scorer.update(clean, real, noises, conditions)
            _keep_examples(examples, batch, conditions, real, noises)
    sampling = "plain" if options.is_plain else f"optimized {options.precision}"
    return EvalResult(scorer.result(), protocol, seed, sampling, scorer.stats(), scorer.histograms(), examples,
                      dict(sorted(skipped.items())))


def _keep_examples(examples: dict[Condition, dict[str, torch.Tensor]], batch: PatchBatch,
                   conditions: list[Condition], real: torch.Tensor, noises: dict[str, torch.Tensor]) -> None:
    """The first patch of each condition: its clean image, real noise and every source's noise."""
    for b, key in enumerate(conditions):
        if key not in examples:
            examples[key] = {"clean": batch.clean[b], "real": real[b]} | {n: v[b] for n, v in noises.items()}
