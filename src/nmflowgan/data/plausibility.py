"""Pairs whose noise cannot be a camera's: caught before a model learns from them.

A pair whose noisy image equals its clean one, whose noisy image is saturated to one value, whose two images
were swapped, or whose noisy image shows another scene trains a model silently and wrongly (a model trained on
clean == noisy draws noise of std 0.3). The checks look at one central patch of each pair, so they cost a patch
read per pair, not a pass over the data. Checked against every pair of the demo's data, polyu and nam_cc15 (none
is flagged there).
"""

from __future__ import annotations

import torch

from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.patches import PatchDataset, evenly_spaced

MIN_NOISE_STD = 0.5  # 8-bit units: below this the "noise" is rounding at most
# A pair is taken for swapped when its "clean" image is rougher than its noisy one by more than this share of the
# noise's own roughness: a swap makes the difference most of it (the noise adds its roughness to the image it
# lands on), while a camera that compresses can leave a weakly noisy image a little smoother than its clean one.
# Measured on central patches: simulated JPEG cameras at ISO 50, 0.05-0.10; swapped pairs of the demo's cameras,
# 0.17 (V2, ISO 100, on texture) to 1.06.
SWAPPED_SHARE = 0.12
# A noisy image of another scene leaves a residual (noisy - clean) that is image structure, not noise: smooth (its
# lag-1 correlation near 1) and holding the clean image's edges negated. Measured on central 64 px patches: real
# pairs of polyu, nam_cc15, the demo's data and simulated cameras at ISO 50 and 12,800 reach lag-1 0.87 and edge
# cosine -0.40; a noisy image of another scene was flagged by these bounds in 279 of 291 such pairs.
UNRELATED_LAG1 = 0.9
UNRELATED_EDGE_COSINE = -0.45


def roughness(image: torch.Tensor) -> float:
    """Mean squared difference of horizontal and vertical neighbours of ``(3, H, W)`` (8-bit units squared)."""
    image = image.double()
    return float(image.diff(dim=-1).square().mean() + image.diff(dim=-2).square().mean())


def residual_lag1(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Horizontal lag-1 correlation of the residual ``noisy - clean`` (``(3, H, W)`` each, mean removed per
    channel)."""
    residual = noisy.double() - clean.double()
    residual = residual - residual.mean(dim=(1, 2), keepdim=True)
    left, right = residual[..., :-1].flatten(), residual[..., 1:].flatten()
    return float((left * right).sum() / (left.norm() * right.norm()).clamp_min(1e-9))


def edge_cosine(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Cosine between the neighbour differences of the residual and those of the clean image: near 0 for camera
    noise, strongly negative when the residual holds the clean image's edges."""
    residual, clean = noisy.double() - clean.double(), clean.double()
    a = torch.cat([residual.diff(dim=-1).flatten(), residual.diff(dim=-2).flatten()])
    b = torch.cat([clean.diff(dim=-1).flatten(), clean.diff(dim=-2).flatten()])
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-9))


def implausible_pairs(dataset: PatchDataset, max_pairs: int = 64) -> tuple[list[tuple[PairRecord, str]], int]:
    """``([(pair, why)], pairs checked)``: pairs whose central patch shows no noise, a noisy image of one value, a
    "clean" image rougher than its noisy partner (swapped), or a residual that is image structure rather than noise
    (a noisy image of another scene). At most ``max_pairs`` pairs, spread over the data set, are read."""
    found = []
    chosen = evenly_spaced(len(dataset.records), max_pairs)
    for pair in chosen:
        rows, columns = dataset.grids[pair]
        item = dataset[(dataset.starts[pair] + (rows // 2) * columns + columns // 2, 0)]
        clean, noisy = item["clean"].double(), item["noisy"].double()
        if (noisy - clean).std() < MIN_NOISE_STD:
            found.append((dataset.records[pair], "no noise: the noisy image equals the clean one"))
        elif noisy.std() < MIN_NOISE_STD < clean.std():
            found.append((dataset.records[pair], f"the noisy image is one flat value ({float(noisy.mean()):.0f})"))
        elif roughness(clean) - roughness(noisy) > SWAPPED_SHARE * roughness(noisy - clean):
            found.append((dataset.records[pair], "the clean image is rougher than the noisy one (swapped?)"))
        elif residual_lag1(clean, noisy) > UNRELATED_LAG1 or edge_cosine(clean, noisy) < UNRELATED_EDGE_COSINE:
            found.append((dataset.records[pair], "noisy - clean is image structure, not noise (the noisy image of "
                                                 "another scene?)"))
    return found, len(chosen)
