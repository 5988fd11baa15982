"""KLD of an ``evaluate`` run broken down by ISO, by camera and by how a simulated camera saves its images (PNG, JPEG
once, JPEG twice): each figure the patch-weighted mean of the per-(camera, ISO) KLDs in results.json (docs/models.md).

    python docs/studies/kld_breakdown.py EVAL/results.json SIMCAM_DATA [--model nmflowgan]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def saving(camera: dict) -> str:
    """``png``, ``jpeg once`` or ``jpeg twice``: how a camera of simcam.json saves its images."""
    if camera.get("jpeg_quality") is None:
        return "png"
    return "jpeg twice" if camera.get("jpeg_requality") is not None else "jpeg once"


def breakdown(results: dict, cameras: dict[str, dict], model: str) -> dict[str, dict[str, float]]:
    """``{"iso": {...}, "camera": {...}, "saving": {...}}``: patch-weighted KLD of ``model`` per group."""
    sums: dict[str, dict[str, list[float]]] = {axis: defaultdict(lambda: [0.0, 0.0])
                                               for axis in ("iso", "camera", "saving")}
    for row in results["per_condition"]:
        weight, kld = row["n_patches"], row["models"][model]["kld"]
        for axis, key in (("iso", f"{row['iso']:g}"), ("camera", row["camera"]),
                          ("saving", saving(cameras[row["camera"]]))):
            sums[axis][key][0] += weight * kld
            sums[axis][key][1] += weight
    return {axis: {key: total / weight for key, (total, weight) in groups.items()} for axis, groups in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("data", type=Path, help="the simcam data set evaluated (its simcam.json names the cameras)")
    parser.add_argument("--model", default="nmflowgan")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    cameras = {c["code"]: c for c in json.loads((args.data / "simcam.json").read_text())["cameras"]}
    for axis, groups in breakdown(results, cameras, args.model).items():
        print(f"{axis}: " + ", ".join(f"{key} {value:.4f}" for key, value in groups.items()))


if __name__ == "__main__":
    main()
