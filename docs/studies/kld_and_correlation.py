"""How much the per-patch KLD charges a noise source for being spatially correlated.

The KLD of the sRGB noise papers compares one test patch's noise histogram with one generated patch's
(docs/metrics.md). A correlated source fills a patch's histogram from fewer independent values than a white
source with the same per-pixel distribution, so its histogram is noisier and its expected KLD higher, even
when its distribution is the true one. This script measures that charge twice:

1. On the simulator, with the truth: for each camera, ISO and scene it captures ``K + 1`` independent noisy
   images of one clean image. Draw 0 is the "real" noise; draw 1 is a second real draw (the oracle); the
   "decorrelated oracle" takes each pixel and channel from a draw among 1..K picked at random, so every value
   keeps the true distribution for its pixel while neighbours and channels come from different draws.
2. On a trained model (``--checkpoint`` and ``--data``): on evaluation's test patches, the flow alone, the
   full model, and the full model decorrelated in the same way from ``K`` of its own draws. If the full
   model's KLD above its flow were a worse per-pixel distribution, decorrelating it would not remove it.

Usage::

    python docs/studies/kld_and_correlation.py [--checkpoint RUN --data DATA] [--draws 8] [--scenes 4]

Prints one table per part; CPU only, a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse

import torch

from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.patches import PatchDataset, collate
from nmflowgan.data.simcam.camera import builtin_cameras, scene_tensor
from nmflowgan.data.simcam.scenes import PROCEDURAL, make_scene
from nmflowgan.metrics.kld import kld_per_patch
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.noise_sources import model_noise

PATCH_PX = 64


def decorrelated(draws: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(K, B, C, H, W)`` independent draws -> ``(B, C, H, W)``, each value from a draw picked at random."""
    pick = torch.randint(draws.shape[0], draws.shape[1:], generator=generator)
    return draws.gather(0, pick[None]).squeeze(0)


def lag1(noise: torch.Tensor) -> float:
    """Mean correlation of horizontal neighbours in ``(B, C, H, W)`` noise (each patch and channel centred)."""
    x = noise - noise.mean(dim=(2, 3), keepdim=True)
    return float((x[..., 1:] * x[..., :-1]).mean() / x.square().mean())


def patches(image: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N * tiles, 3, 64, 64)`` non-overlapping patches."""
    tiles = image.unfold(2, PATCH_PX, PATCH_PX).unfold(3, PATCH_PX, PATCH_PX)  # (N, 3, h, w, P, P)
    return tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, PATCH_PX, PATCH_PX)


def simulator_part(draws: int, scenes: int, size_px: int = 256) -> dict[str, list[float]]:
    """Per-patch KLD and lag-1 correlation of the oracle and the decorrelated oracle on simcam captures."""
    generator = torch.Generator().manual_seed(0)
    klds: dict[str, list[torch.Tensor]] = {"oracle": [], "decorrelated oracle": []}
    lags: dict[str, list[float]] = {"real": [], "oracle": [], "decorrelated oracle": []}
    for scene_index in range(scenes):
        scene = scene_tensor(make_scene(PROCEDURAL[scene_index % len(PROCEDURAL)], 1000 + scene_index, size_px))
        for camera in builtin_cameras():
            raw = camera.unprocess(scene)
            for iso in (100, 400, 1600, 3200):
                clean, noisy = camera.capture_raw(raw, iso, draws + 1, generator)
                clean_t = torch.from_numpy(clean).permute(2, 0, 1).double()[None]
                noise = torch.from_numpy(noisy).permute(0, 3, 1, 2).double() - clean_t  # (K + 1, 3, H, W)
                real, others = patches(noise[:1]), torch.stack([patches(n[None]) for n in noise[1:]])
                sources = {"real": real, "oracle": others[0], "decorrelated oracle": decorrelated(others, generator)}
                for name, values in sources.items():
                    lags[name].append(lag1(values))
                    if name != "real":
                        klds[name].append(kld_per_patch(real, values))
    return {name: [float(torch.cat(values).mean()), sum(lags[name]) / len(lags[name])]
            for name, values in klds.items()} | {"real": [float("nan"), sum(lags["real"]) / len(lags["real"])]}


def model_part(checkpoint: str, data: str, draws: int, max_patches: int) -> dict[str, list[float]]:
    """Per-patch KLD and lag-1 correlation of flow-only, nmflowgan and nmflowgan decorrelated."""
    model = NoiseModel.load(checkpoint).eval()
    _, split = default_splits(data, None, None)
    records = [r for r in find_pairs(data, split) if model.space.knows(r.camera, r.iso)]
    test = PatchDataset(records, PATCH_PX, PATCH_PX)
    indices = test.evenly_spaced(max_patches)
    flow_only, full = model_noise(model, refine=False), model_noise(model, refine=True)
    generator = torch.Generator().manual_seed(0)
    klds: dict[str, list[torch.Tensor]] = {"flow-only": [], "nmflowgan": [], "nmflowgan decorrelated": []}
    lags: dict[str, list[float]] = {name: [] for name in klds}
    with torch.no_grad():
        for start in range(0, len(indices), 32):
            batch = collate([test[i] for i in indices[start : start + 32]])
            clean = batch.clean.float() / 255.0
            real = batch.noisy.double() - batch.clean.double()
            full_draws = torch.stack([full(clean, batch, generator).double() for _ in range(draws)])
            sources = {"flow-only": flow_only(clean, batch, generator).double(), "nmflowgan": full_draws[0],
                       "nmflowgan decorrelated": decorrelated(full_draws, generator)}
            for name, values in sources.items():
                klds[name].append(kld_per_patch(real, values))
                lags[name].append(lag1(values))
    return {name: [float(torch.cat(values).mean()), sum(lags[name]) / len(lags[name])]
            for name, values in klds.items()}


def print_table(title: str, rows: dict[str, list[float]]) -> None:
    print(f"\n{title}\n| source | KLD | lag-1 correlation |\n|---|---|---|")
    for name, (kld, lag) in rows.items():
        print(f"| {name} | {kld:.4f} | {lag:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=8, help="K, the draws a decorrelated source picks from")
    parser.add_argument("--scenes", type=int, default=4, help="procedural scenes on the simulator (0: skip part 1)")
    parser.add_argument("--checkpoint", help="a trained run or model folder (part 2)")
    parser.add_argument("--data", help="the data set it is scored on (part 2)")
    parser.add_argument("--max-patches", type=int, default=400)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.scenes > 0:
        print_table(f"simulator: {args.scenes} scenes x 5 cameras x 4 ISOs, 64x64 patches, K = {args.draws}",
                    simulator_part(args.draws, args.scenes))
    if args.checkpoint and args.data:
        print_table(f"model {args.checkpoint} on {args.data}, K = {args.draws}",
                    model_part(args.checkpoint, args.data, args.draws, args.max_patches))


if __name__ == "__main__":
    main()
