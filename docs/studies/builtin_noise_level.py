"""The noise level a noise model draws on a flat grey image against the simulated camera's own, for every camera of
the simulator that the model knows (docs/models.md, "How well it does").

For each camera and ISO: a grey image (value 120, 96x96) is captured by the simulated camera and noised by the model;
the error is the largest over the three channels of |drawn std / true std - 1|. Prints the median error and how many
cases fall within 30%, for the PNG cameras and the JPEG cameras apart, one row per model.

    python docs/studies/builtin_noise_level.py builtin /path/to/run/best
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from nmflowgan.data.simcam.generate import camera_by_code
from nmflowgan.models.noise_model import NoiseModel

GREY, SIDE, ISOS = 120, 96, (200, 800, 3200)


def errors(model: NoiseModel, isos: tuple[int, ...] = ISOS) -> dict[str, list[float]]:
    """``{"png": [...], "jpeg": [...]}``: the largest per-channel relative std error of each (camera, ISO)."""
    cameras = {c.code: c for c in camera_by_code(None, population=32, seed=0)}  # the built-in model's 37
    clean = np.full((SIDE, SIDE, 3), GREY, np.uint8)
    clean01 = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
    found: dict[str, list[float]] = {"png": [], "jpeg": []}
    for index, code in enumerate(model.cameras):
        if code not in cameras:
            continue
        camera = cameras[code]
        for iso in isos:
            seed = 1000 * index + iso
            _, noisy = camera.capture(clean, iso, 1, torch.Generator().manual_seed(seed))
            true = (noisy[0].astype(np.float64) - clean).reshape(-1, 3).std(axis=0)
            with torch.no_grad():
                drawn01 = model.sample(clean01, code, iso, generator=torch.Generator().manual_seed(seed + 1))
            drawn = (drawn01 * 255 - clean01 * 255)[0].double().reshape(3, -1).std(dim=1).numpy()
            error = float(np.max(np.abs(drawn / np.maximum(true, 1e-6) - 1)))
            found["png" if camera.jpeg_quality is None else "jpeg"].append(error)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="builtin, or model/run folders")
    args = parser.parse_args()
    print("| model | PNG cameras | JPEG cameras |")
    print("|---|---|---|")
    for name in args.models:
        found = errors(NoiseModel.load(name))
        cells = [f"{statistics.median(v):.3f} ({sum(e <= 0.3 for e in v)} of {len(v)} within 30%)"
                 for v in (found["png"], found["jpeg"])]
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
