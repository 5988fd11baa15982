"""Which camera and ISO of a trained model explain a user's pairs best: the start ``adapt`` takes, and a choice of
its own for a user who has no time to adapt.

For every (camera, ISO) condition of the pairs, up to ``patches`` patches spread over its pairs are scored under
every camera of the model at the pairs' own ISO (the nearest the model knows), and under the best three at a ladder
of ISOs across the model's range: the mean negative log-likelihood of a noise value (nats; lower is better). The
best (camera, ISO) is then scored as ``evaluate`` scores a model: the KLD between the real noise of those patches
and noise the model draws on their clean images at that condition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate, evenly_spaced
from nmflowgan.devices import resolve_device
from nmflowgan.errors import BadInputError
from nmflowgan.metrics.kld import kld
from nmflowgan.models.noise_model import NoiseModel, exact_8bit_noise
from nmflowgan.progress import progress as progress_bar
from nmflowgan.seeds import checked_seed

PATCH_PX = 48  # the patches adapt trains on
MATCHED_PATCHES = 64  # per condition of the pairs
ISO_STEPS = 9  # ISOs tried across the model's range, evenly in log-ISO
FINALISTS = 3  # cameras whose ISO is searched, the best at the pairs' own ISO
# patches scored per pass: a batch of 64 patches of 48 px spills a CPU's cache and took 2.4x the time of four
# batches of 16 (the built-in model, 2-core AMD EPYC with AVX-512)
SCORED_CHUNK = 16


@dataclass(frozen=True)
class CameraMatch:
    """The best (camera, ISO) of a model for one condition of the user's pairs.

    Attributes:
        camera, iso: the user's condition; patches: how many of its patches were scored.
        model_camera, model_iso: the model's condition under which those patches are most likely.
        nll: their mean negative log-likelihood per noise value there (nats).
        kld: KLD between their real noise and the model's draws at (model_camera, model_iso).
        by_camera: the best NLL of each of the model's cameras (at the pairs' ISO, or its best for the finalists).
    """

    camera: str
    iso: float
    patches: int
    model_camera: str
    model_iso: float
    nll: float
    kld: float
    by_camera: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_isos(model: NoiseModel, own_iso: float) -> list[float]:
    """The ISOs tried: :data:`ISO_STEPS` across the model's range evenly in log-ISO, and ``own_iso`` when it lies
    inside (a one-hot model: its trained ISOs)."""
    if model.space.iso_mode != "continuous":
        return list(model.isos)
    low, high = model.space.iso_range
    ladder = np.exp(np.linspace(math.log(low), math.log(high), ISO_STEPS)).round(1).tolist()
    return sorted(set(ladder) | ({float(own_iso)} if low <= own_iso <= high else set()))


def condition_patches(data: str | Path, split: str | None, patches: int) -> dict[tuple[str, float], PatchBatch]:
    """Up to ``patches`` upright patches of each (camera, ISO) of the data set, spread evenly over its pairs."""
    dataset = PatchDataset(find_pairs(data, split), patch_px=PATCH_PX, stride_px=PATCH_PX)
    return grouped_patches(dataset, lambda record: (record.camera, record.iso), patches)


def grouped_patches(dataset: PatchDataset, key: Callable[[PairRecord], Hashable], patches: int) -> dict:
    """Up to ``patches`` patches of each group of ``dataset``'s pairs (``key(record)``), spread evenly over the
    group's pairs, each group as one un-augmented :class:`PatchBatch`, in the order of the sorted keys."""
    chosen: dict = {}
    for pair, record in enumerate(dataset.records):
        chosen.setdefault(key(record), []).extend(range(dataset.starts[pair], dataset.starts[pair + 1]))
    return {group: collate([dataset[(indices[i], 0)] for i in evenly_spaced(len(indices), patches)])
            for group, indices in sorted(chosen.items())}


@torch.no_grad()
def mean_nll(model: NoiseModel, batch: PatchBatch, camera: str, iso: float | Sequence[float], uniform: torch.Tensor,
             censored: bool = True) -> float:
    """The mean negative log-likelihood per noise value (nats) of ``batch``'s noise under ``model`` drawing as
    ``camera`` at ``iso`` (one, or one per patch); ``uniform`` (shaped like the noise) dequantizes it. Scored
    :data:`SCORED_CHUNK` patches at a time."""
    device = next(model.parameters()).device
    isos = [float(iso)] * len(batch.clean) if isinstance(iso, int | float) else list(iso)
    total = 0.0
    for start in range(0, len(batch.clean), SCORED_CHUNK):
        part = slice(start, start + SCORED_CHUNK)
        clean = batch.clean[part].float().to(device) / 255.0
        noise = (batch.noisy[part].float() - batch.clean[part].float()).to(device)
        grid = batch.grid[part].to(device) if batch.grid is not None else None
        cond = model.encode(camera, isos[part], len(clean), grid=grid)
        _, log_prob = model.flow.latent_and_log_prob(noise, clean, cond, uniform=uniform[part].to(device),
                                                     censored=censored)
        total += float(log_prob.double().sum())
    return -total / batch.noisy[0].numel() / len(batch.clean)


def match_pairs(model: NoiseModel | str | Path, data: str | Path, split: str | None = None,
                patches: int = MATCHED_PATCHES,
                seed: int = 0, device: str = "auto", progress: bool = True,
                cameras: Sequence[str] | None = None) -> list[CameraMatch]:
    """For each (camera, ISO) of the pairs in ``data``, the model's (camera, ISO) that explains them best.

    Args:
        model: the model searched, or its folder (``"builtin"``: the package's own).
        data, split: the pairs, any layout ``find_pairs`` reads (default split: the training one).
        patches: patches scored per condition of the pairs (48 px).
        seed: the dequantization and the KLD's draws.
        cameras: the model's cameras to try (default: all).
    """
    seed = checked_seed(seed)
    if patches < 1:
        raise BadInputError(f"--patches must be at least 1, got {patches}")
    if not isinstance(model, NoiseModel):
        model = NoiseModel.load(model)
    tried = list(cameras or model.cameras)
    unknown = [c for c in tried if c not in model.cameras]
    if unknown:
        raise BadInputError(f"the model has no camera(s) {unknown}; it knows {', '.join(model.cameras)}")
    model = model.to(resolve_device(device)).eval()
    found = condition_patches(data, default_splits(data, split, None)[0], patches)
    matches = []
    for (camera, iso), batch in progress_bar(found.items(), enabled=progress, desc="match", unit="condition"):
        uniform = torch.rand(batch.noisy.shape, generator=torch.Generator().manual_seed(seed))
        near = min(max(iso, model.space.iso_range[0]), model.space.iso_range[1])
        # every camera at the pairs' own ISO (or the nearest the model knows), then the ISO ladder for the best few
        scores = {(candidate, near): mean_nll(model, batch, candidate, near, uniform) for candidate in tried}
        finalists = sorted(tried, key=lambda c: _or_inf(scores[c, near]))[:FINALISTS]
        ladder = [(candidate, value) for candidate in finalists for value in candidate_isos(model, iso)]
        scores |= {key: mean_nll(model, batch, *key, uniform) for key in ladder if key not in scores}
        finite = {key: value for key, value in scores.items() if math.isfinite(value)}
        if not finite:
            raise BadInputError(f"no camera of the model gives the pairs of {camera} at ISO {iso:g} a finite "
                                "likelihood (the model's weights are not usable, or the pairs are not camera noise)")
        best_camera, best_iso = min(finite, key=finite.__getitem__)
        by_camera = {c: min((v for (k, _), v in finite.items() if k == c), default=math.inf) for c in tried}
        matches.append(CameraMatch(camera, iso, len(batch.clean), best_camera, best_iso, finite[best_camera, best_iso],
                                   _kld(model, batch, best_camera, best_iso, seed), by_camera))
    return matches


def _or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


@torch.no_grad()
def _kld(model: NoiseModel, batch: PatchBatch, camera: str, iso: float, seed: int) -> float:
    device = next(model.parameters()).device
    clean = batch.clean.float().to(device) / 255.0
    grid = batch.grid.to(device) if batch.grid is not None else None
    cond = model.encode(camera, [iso] * len(clean), len(clean), grid=grid)
    drawn = exact_8bit_noise(model.draw(clean, cond, torch.Generator(device).manual_seed(seed)), batch.clean)
    return kld((batch.noisy.double() - batch.clean.double()).to(device), drawn)
