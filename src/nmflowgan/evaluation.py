"""``evaluate``: how realistic a noise model's noise is, next to the baselines, on the same test patches.

Models compared (each that applies):

* ``gaussian`` and ``nlf``: closed-form fits to the training split (:mod:`nmflowgan.baselines`);
* ``flow-only``: the trained flow without its refiner; ``nmflowgan``: the full model;
* ``oracle``: a second independent real draw of the same clean image (simcam only): the floor.

Every model's noise is recorded as a camera records it (rounded and clipped to 8 bits), then scored
per test patch with KLD and AKLD, and pooled per (camera, ISO) into the noise statistics behind the
correlation error. Scores per condition are averaged over patches; overall scores are averaged over
all patches (KLD, AKLD) and over conditions (correlation error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from nmflowgan.baselines import GaussianNoise, HeteroscedasticNoise
from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.errors import DataError
from nmflowgan.metrics.akld import akld_per_patch
from nmflowgan.metrics.kld import histograms, kld_per_patch
from nmflowgan.metrics.noise_stats import NoiseStats, NoiseStatsAccumulator, corr_error
from nmflowgan.models.noise_model import NoiseModel, quantize
from nmflowgan.models.sampler import SamplingOptions

log = logging.getLogger(__name__)
MODEL_ORDER = ("gaussian", "nlf", "flow-only", "nmflowgan", "oracle")
Condition = tuple[str, float]


@dataclass
class ConditionScores:
    """Per (camera, ISO): patch scores, pooled statistics and histograms of each model (and ``real``)."""

    kld: dict[str, list[float]] = field(default_factory=dict)
    akld: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, NoiseStatsAccumulator] = field(default_factory=dict)
    histogram: dict[str, torch.Tensor] = field(default_factory=dict)
    example: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Scores of every model, overall and per condition, with what the report plots.

    Attributes:
        models: ``{name: {"kld", "akld", "corr_error"}}``.
        per_condition: ``[{"camera", "iso", name: {...}, ...}]``.
        stats: ``{(camera, iso): {name or "real": NoiseStats}}``; histograms likewise (130 counts).
        examples: ``{(camera, iso): {"clean", "real", name: noise}}`` one patch each (8-bit units).
    """

    models: dict[str, dict[str, float]]
    per_condition: list[dict]
    n_patches: int
    seed: int
    stats: dict[Condition, dict[str, NoiseStats]]
    histograms: dict[Condition, dict[str, torch.Tensor]]
    examples: dict[Condition, dict[str, torch.Tensor]]

    def to_dict(self) -> dict:
        return {"models": self.models, "per_condition": self.per_condition, "n_patches": self.n_patches,
                "seed": self.seed}


NoiseSource = Callable[[torch.Tensor, PatchBatch, torch.Generator], torch.Tensor]
"""``(clean (B, 3, P, P) in [0, 1], its batch, a generator) -> (B, 3, P, P)`` noise as a camera records it
(rounded and clipped to 8 bits), in 8-bit units."""


def baseline_noise(baseline: GaussianNoise | HeteroscedasticNoise) -> NoiseSource:
    """Noise drawn from a fitted closed-form baseline at each patch's camera and ISO."""
    return lambda clean, batch, g: quantize(clean, baseline.noise(clean, batch.cameras, batch.isos.tolist(), g))


def model_noise(model: NoiseModel, refine: bool = True, options: SamplingOptions | None = None) -> NoiseSource:
    """Noise drawn from a noise model at each patch's camera and ISO (``refine=False``: its flow alone)."""
    def draw(clean: torch.Tensor, batch: PatchBatch, g: torch.Generator) -> torch.Tensor:
        cond = model.encode(batch.cameras, batch.isos.tolist(), clean.shape[0])
        return model.quantized_noise(clean, cond, g, refine=refine, options=options)
    return draw


def fit_baselines(records: list, patch_px: int, max_patches: int, seed: int, progress: bool
                  ) -> tuple[GaussianNoise, HeteroscedasticNoise]:
    """Fits ``gaussian`` and ``nlf`` on up to ``max_patches`` training patches (a fixed random subset)."""
    dataset = PatchDataset(records, patch_px, patch_px)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_patches].tolist()
    gaussian, nlf = GaussianNoise(), HeteroscedasticNoise()
    for start in tqdm(range(0, len(order), 64), desc="fit baselines", disable=not progress):
        batch = collate([dataset[i] for i in order[start : start + 64]])
        clean = batch.clean.double()
        noise, isos = batch.noisy.double() - clean, batch.isos.tolist()
        for model in (gaussian, nlf):
            model.update(clean / 255.0, noise, batch.cameras, isos)
    return gaussian, nlf


def evaluate(checkpoint: str | Path, data: str | Path, split: str | None = None, train_split: str | None = None,
             patch_px: int = 64, max_patches: int = 512, fit_patches: int = 2000, seed: int = 0,
             batch_size: int = 32, progress: bool = True, options: SamplingOptions | None = None) -> EvalResult:
    """Scores a trained noise model and the baselines on the test patches of ``data``.

    Args:
        checkpoint: a run folder (its ``best``, else ``last``) or a saved model folder.
        data: the data set; split / train_split: test and training splits (default: the data set's).
        patch_px: side of the (non-overlapping) test patches; max_patches: at most this many, evenly spread.
        fit_patches: training patches the baselines are fitted on. seed: every draw derives from it.
        options: how the model's noise is computed (default: the optimized sampling path, what users get).

    Returns:
        An :class:`EvalResult`.
    """
    model = NoiseModel.load(checkpoint).eval()
    train_split, split = default_splits(data, train_split, split)
    train_records, test_records = find_pairs(data, train_split), find_pairs(data, split)
    usable = [r for r in test_records if model.space.knows(r.camera, r.iso)]
    if not usable:
        raise DataError(f"{data}: no test pair has a camera/ISO this model knows ({', '.join(model.cameras)})")
    gaussian, nlf = fit_baselines(train_records, patch_px, fit_patches, seed, progress)
    test = PatchDataset(usable, patch_px, patch_px, with_oracle=True)
    indices = test.evenly_spaced(max_patches)
    has_oracle = all(r.oracle is not None for r in usable)

    sources: dict[str, NoiseSource] = {"gaussian": baseline_noise(gaussian), "nlf": baseline_noise(nlf),
                                       "flow-only": model_noise(model, False, options),
                                       "nmflowgan": model_noise(model, True, options)}
    if has_oracle:
        sources["oracle"] = lambda clean, batch, g: batch.oracle.double() - batch.clean.double()
    generators = {name: torch.Generator().manual_seed(seed + k) for k, name in enumerate(sources)}

    per_condition: dict[Condition, ConditionScores] = {}
    with torch.no_grad():
        for start in tqdm(range(0, len(indices), batch_size), desc="evaluate", disable=not progress):
            batch = collate([test[i] for i in indices[start : start + batch_size]])
            clean = batch.clean.double() / 255.0
            real = batch.noisy.double() - batch.clean.double()
            noises = {"real": real} | {name: draw(clean.float(), batch, generators[name]).double()
                                        for name, draw in sources.items()}
            _accumulate(per_condition, batch, clean, noises)
    return _summarize(per_condition, len(indices), seed)


def _accumulate(per_condition: dict[Condition, ConditionScores], batch: PatchBatch, clean: torch.Tensor,
                noises: dict[str, torch.Tensor]) -> None:
    real = noises["real"]
    klds = {n: kld_per_patch(real, v) for n, v in noises.items() if n != "real"}
    aklds = {n: akld_per_patch(real / 255.0, v / 255.0) for n, v in noises.items() if n != "real"}
    for b, key in enumerate(zip(batch.cameras, batch.isos.tolist())):
        scores = per_condition.setdefault(key, ConditionScores())
        if not scores.example:
            scores.example = {"clean": batch.clean[b]} | {n: v[b] for n, v in noises.items()}
        for name, noise in noises.items():
            scores.stats.setdefault(name, NoiseStatsAccumulator()).update(clean[b : b + 1], noise[b : b + 1])
            counts = histograms(noise[b : b + 1])[0]
            scores.histogram[name] = scores.histogram.get(name, torch.zeros_like(counts)) + counts
            if name != "real":
                scores.kld.setdefault(name, []).append(float(klds[name][b]))
                scores.akld.setdefault(name, []).append(float(aklds[name][b]))


def _summarize(per_condition: dict[Condition, ConditionScores], n_patches: int, seed: int) -> EvalResult:
    names = [n for n in MODEL_ORDER if any(n in s.kld for s in per_condition.values())]
    rows, stats, hists, examples = [], {}, {}, {}
    totals: dict[str, dict[str, list[float]]] = {n: {"kld": [], "akld": [], "corr_error": []} for n in names}
    for key in sorted(per_condition):
        scores = per_condition[key]
        stats[key] = {name: acc.result() for name, acc in scores.stats.items()}
        hists[key], examples[key] = scores.histogram, scores.example
        row: dict = {"camera": key[0], "iso": key[1], "n_patches": len(scores.kld[names[0]])}
        for name in names:
            error = corr_error(stats[key]["real"], stats[key][name])
            row[name] = {"kld": _mean(scores.kld[name]), "akld": _mean(scores.akld[name]), "corr_error": error}
            totals[name]["kld"] += scores.kld[name]
            totals[name]["akld"] += scores.akld[name]
            totals[name]["corr_error"].append(error)
        rows.append(row)
    models = {name: {metric: _mean(values) for metric, values in totals[name].items()} for name in names}
    return EvalResult(models, rows, n_patches, seed, stats, hists, examples)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
