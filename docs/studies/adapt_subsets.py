"""Data folders for the adaptation study (docs/adapt.md): K training pairs per camera of a real paired set.

For each K and seed it writes ``OUT/NAME-kK-sS/`` with ``train/`` (K pairs per camera drawn with the seed,
all of a camera's pairs where it has fewer; ``all``: every pair) and ``test/`` (the test pairs of the (camera,
ISO) cells ``train/`` has: the baselines, NLF among them, are fitted per cell, so a test pair of a cell without
training pairs has nothing to compare with; with K=5 and all, that is the whole test split), each with its
metadata.csv. Images are hard links to the originals (no copy of the data). With ``--scenes N`` it also
writes ``OUT/scenes-N/``: N simulator scenes of 512 px, clean images for ``train-denoiser --extra-clean``.

Usage::

    python docs/studies/adapt_subsets.py --data ../shared/data/real/polyu --name polyu --out /tmp/subsets \\
        --pairs 1 3 5 all --seeds 0 1 2 [--scenes 20]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path

import numpy as np

from nmflowgan.data.io import write_png
from nmflowgan.data.simcam.scenes import PROCEDURAL, available_photos, make_scene


def read_rows(metadata: Path) -> list[dict[str, str]]:
    with open(metadata, newline="") as handle:
        return list(csv.DictReader(handle))


def write_folder(rows: list[dict[str, str]], source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for column in ("clean", "noisy"):
            target = folder / row[column]
            if not target.exists():
                os.link(source / row[column], target)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["clean", "noisy", "camera", "iso"])
        writer.writeheader()
        writer.writerows({k: row[k] for k in ("clean", "noisy", "camera", "iso")} for row in rows)


def chosen_pairs(rows: list[dict[str, str]], pairs: str, seed: int) -> list[dict[str, str]]:
    if pairs == "all":
        return rows
    by_camera: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_camera.setdefault(row["camera"], []).append(row)
    rng = random.Random(seed)
    picked = []
    for camera in sorted(by_camera):
        picked += rng.sample(by_camera[camera], min(int(pairs), len(by_camera[camera])))
    return picked


def write_scenes(folder: Path, scenes: int) -> None:
    """``scenes`` simulator scenes of 512 px (photographs and procedural kinds in turn) as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [f"photo:{p}" for p in available_photos()] + list(PROCEDURAL)
    for index in range(scenes):
        scene = make_scene(kinds[index % len(kinds)], index, 512)
        write_png(folder / f"scene_{index:03d}.png", np.ascontiguousarray(scene))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", nargs="+", default=["1", "3", "5", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--scenes", type=int, default=0)
    args = parser.parse_args()
    train, test = read_rows(args.data / "train" / "metadata.csv"), read_rows(args.data / "test" / "metadata.csv")
    for pairs in args.pairs:
        for seed in args.seeds if pairs != "all" else [0]:
            name = f"{args.name}-k{pairs}-s{seed}"
            picked = chosen_pairs(train, pairs, seed)
            cells = {(row["camera"], float(row["iso"])) for row in picked}
            tested = [row for row in test if (row["camera"], float(row["iso"])) in cells]
            write_folder(picked, args.data / "train", args.out / name / "train")
            write_folder(tested, args.data / "test", args.out / name / "test")
            print(f"{args.out / name}: {len(picked)} training pairs, {len(tested)} of {len(test)} test pairs")
    if args.scenes:
        write_scenes(args.out / f"scenes-{args.scenes}", args.scenes)
        print(f"{args.out / f'scenes-{args.scenes}'}: {args.scenes} clean simulator scenes")


if __name__ == "__main__":
    main()
