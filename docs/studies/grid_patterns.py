"""Where in the frame each camera's noise lies: the 2x2 colour-filter grid and the 8x8 JPEG grid, per camera.

For every camera of each data set named on the command line it pools the noise (noisy - clean, 8-bit units) of
all its pairs in one split, each image whole from its own top-left pixel, and prints per camera

* ``phase ratio``: per channel the largest over the smallest of the four 2x2-phase standard deviations, averaged
  over the channels (1.0: the same noise level at every phase);
* ``phase r1 spread``: per channel the largest minus the smallest 2x2-phase lag-1 correlation, averaged;
* ``8x8 CV``: the coefficient of variation of the standard deviation over the 64 positions of the 8x8 grid,
  averaged over the channels (0: noise that ignores the JPEG grid);
* ``8x8 CV beyond 2x2``: the same after each position's standard deviation is divided by that of its 2x2 phase, so
  that a colour-filter pattern alone scores 0 and what is left is the JPEG grid's own;

then the range over each set's cameras, so that the simulator's population can be set beside real cameras
(docs/realism.md, "The simulator against real grids"). The statistics are those of the scorer
(:mod:`nmflowgan.metrics.grid_stats`).

Usage::

    python docs/studies/grid_patterns.py --data SIMCAM --split train --data ../shared/data/real/polyu --split train \\
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from nmflowgan.data.folders import find_pairs
from nmflowgan.data.io import read_rgb
from nmflowgan.metrics.grid_stats import GridStats, GridStatsAccumulator


def camera_grid_stats(data: Path, split: str | None) -> dict[str, GridStats]:
    """Grid statistics of each camera's noise over all its pairs of ``split`` of ``data``."""
    accumulators: dict[str, GridStatsAccumulator] = defaultdict(GridStatsAccumulator)
    for record in find_pairs(data, split):
        clean = torch.from_numpy(read_rgb(record.clean)).double().permute(2, 0, 1)  # 8-bit units, whatever the file
        noisy = torch.from_numpy(read_rgb(record.noisy)).double().permute(2, 0, 1)
        accumulators[record.camera].update((noisy - clean)[None])
    return {camera: accumulator.result() for camera, accumulator in sorted(accumulators.items())}


def summary(stats: GridStats) -> dict[str, float]:
    """The four one-number summaries of the module doc."""
    phase_std = stats.phase_std.flatten(1)
    phase_r1 = stats.phase_r1.flatten(1)
    flattened = GridStats(stats.phase_std, stats.phase_r1, beyond_phase(stats))
    return {"phase_ratio": float((phase_std.max(1).values / phase_std.min(1).values.clamp_min(1e-12)).mean()),
            "phase_r1_spread": float((phase_r1.max(1).values - phase_r1.min(1).values).mean()),
            "block_cv": float(stats.block_cv.mean()),
            "block_cv_beyond_phase": float(flattened.block_cv.mean())}


def beyond_phase(stats: GridStats) -> torch.Tensor:
    """``(3, 8, 8)``: each 8x8 position's standard deviation over its 2x2 phase's, times the mean phase std."""
    phase = stats.phase_std.repeat(1, 4, 4)  # position (y, x) -> phase (y % 2, x % 2)
    return stats.block_std / phase.clamp_min(1e-12) * stats.phase_std.flatten(1).mean(1)[:, None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, type=Path, help="a data set (repeatable)")
    parser.add_argument("--split", action="append", default=[],
                        help="its split, one per --data in order ('none' for a metadata.csv folder)")
    parser.add_argument("--json", type=Path, help="also write every camera's summaries here")
    args = parser.parse_args()
    splits = args.split + ["train"] * (len(args.data) - len(args.split))
    table: dict[str, dict[str, dict[str, float]]] = {}
    print("| data | camera | phase ratio | phase r1 spread | 8x8 CV | 8x8 CV beyond 2x2 |\n|---|---|---|---|---|---|")
    for data, split in zip(args.data, splits):
        per_camera = {camera: summary(stats)
                      for camera, stats in camera_grid_stats(data, None if split == "none" else split).items()}
        table[str(data)] = per_camera
        for camera, row in per_camera.items():
            print(f"| {data.name} | {camera} | {row['phase_ratio']:.3f} | {row['phase_r1_spread']:.3f} "
                  f"| {row['block_cv']:.4f} | {row['block_cv_beyond_phase']:.4f} |")
    print("\n| data | cameras | phase ratio (min - median - max) | phase r1 spread | 8x8 CV | 8x8 CV beyond 2x2 |\n"
          "|---|---|---|---|---|---|")
    for data, per_camera in table.items():
        columns = [sorted(row[key] for row in per_camera.values())
                   for key in ("phase_ratio", "phase_r1_spread", "block_cv", "block_cv_beyond_phase")]
        cells = [f"{c[0]:.3f} - {c[len(c) // 2]:.3f} - {c[-1]:.3f}" for c in columns]
        print(f"| {Path(data).name} | {len(per_camera)} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
