"""How close the noise of pairs made from a burst comes to the camera's true noise (simcam, whose truth is known).

For every (camera, ISO) of a simcam data set written with ``--burst N``, pixels are binned by the *true* clean
intensity (32 levels wide) and channel; in each bin with enough pixels the std of the pairs' noise (noisy - clean
of ``nmflowgan burst-pairs``) is compared with the std of the true noise (each frame minus the simulator's clean
image). Printed: the mean and largest ``|std_pairs / std_true - 1|`` over the bins, for the pairs as written
(scaled by sqrt((N - 1) / N)) and for the unscaled differences from the mean of the other frames.

    python docs/studies/burst_pairs.py --frames 8 --scenes 16 --size 256
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from nmflowgan.data.bursts import write_burst_pairs
from nmflowgan.data.io import read_rgb
from nmflowgan.data.simcam import simulate

BIN = 32
MIN_PIXELS = 5000
KINDS = ("true", "pairs", "unscaled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--isos", type=float, nargs="+", default=[100, 400, 1600, 3200])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        data, pairs = Path(temp) / "simcam", Path(temp) / "pairs"
        simulate(data, isos=args.isos, scenes=args.scenes, size_px=args.size, seed=args.seed,
                 burst_frames=args.frames, progress=False)
        write_burst_pairs(data / "bursts", pairs, progress=False)
        # (camera, iso, channel, bin) -> kind -> [count, sum, sum of squares]
        moments = defaultdict(lambda: {kind: np.zeros(3) for kind in KINDS})
        for burst in sorted((data / "bursts").iterdir()):
            truth = read_rgb(next((data / "train" / burst.name).glob("*_GT_SRGB_010.PNG"))).astype(np.float64)
            frames = np.stack([read_rgb(f) for f in sorted(burst.glob("*.png"))]).astype(np.float64)
            camera, iso = burst.name.split("_")[2], float(burst.name.split("_")[3])
            total = frames.sum(axis=0)
            bins = (truth // BIN).astype(int)
            for index, frame in enumerate(frames):
                clean = read_rgb(pairs / burst.name / f"clean-{index:02d}.png").astype(np.float64)
                noisy = read_rgb(pairs / burst.name / f"noisy-{index:02d}.png").astype(np.float64)
                noise = {"true": frame - truth, "pairs": noisy - clean,
                         "unscaled": frame - (total - frame) / (len(frames) - 1)}
                for channel in range(3):
                    for level in np.unique(bins[..., channel]):
                        inside = bins[..., channel] == level
                        cell = moments[camera, iso, channel, level]
                        for kind, values in noise.items():
                            picked = values[..., channel][inside]
                            cell[kind] += (picked.size, picked.sum(), (picked ** 2).sum())
    errors = {"pairs": [], "unscaled": []}
    for (camera, iso, channel, level), cell in sorted(moments.items()):
        if cell["true"][0] < MIN_PIXELS:
            continue
        reference = _std(cell["true"])
        for kind in errors:
            errors[kind].append((abs(_std(cell[kind]) / reference - 1), camera, iso, "RGB"[channel], level * BIN))
    print(f"{args.frames} frames, {len(errors['pairs'])} (camera, ISO, channel, intensity bin) cells of >= "
          f"{MIN_PIXELS} pixels")
    for kind, found in errors.items():
        values = np.array([e[0] for e in found])
        worst = max(found)
        print(f"{kind:9s} mean |std / true - 1| {values.mean():.4f}, cells within 3%: {np.mean(values <= 0.03):.3f}, "
              f"largest {worst[0]:.4f} ({worst[1]} ISO {worst[2]:g} {worst[3]} from {worst[4]})")


def _std(moment: np.ndarray) -> float:
    count, total, squares = moment
    return float(np.sqrt(squares / count - (total / count) ** 2))


if __name__ == "__main__":
    main()
