"""Peak memory and time of synthesizing one large image (24 megapixels, 6000x4000) in tiles, on the
plain path and the default path, each in a fresh process so that its peak resident memory is its own.

    python benchmarks/memory.py            # paper preset, 24 MP, both paths; small preset at 3 tile sizes
    python benchmarks/memory.py --quick    # small preset, 4 MP (2000x2000), under a minute

Peak memory is the process's maximum resident set (``ru_maxrss``), which includes Python, torch and the
model; "synthesis" is what the run added on top of the process before it started. The last line,
``ratio: X``, is the default path's speed-up over the plain path on the first job.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness import arguments, busy_model, finish, machine, print_machine, print_table
from harness import setup as setup_device
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.synthesis import synthesize_image

LIMIT_MB = 4096


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def clean_image(height: int, width: int, rows_per_block: int = 256) -> np.ndarray:
    """A colour gradient with a texture, a stand-in photo (costs do not depend on content), built a band
    of rows at a time so that making it does not set the process's peak memory."""
    image = np.empty((height, width, 3), np.uint8)
    columns = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    for top in range(0, height, rows_per_block):
        rows = np.linspace(0, 1, height, dtype=np.float32)[top : top + rows_per_block, None]
        texture = 0.1 * np.sin(rows * 900) * np.cos(columns * 700)
        bases = (rows * columns, 1 - rows + 0 * columns, columns * (1 - columns) * 4 + 0 * rows)
        for channel, base in enumerate(bases):
            image[top : top + rows_per_block, :, channel] = (np.clip(base + texture, 0, 1) * 255).round()
    return image


def child(preset: str, path: str, height: int, width: int, tile: int, threads: int) -> None:
    """One synthesis job; prints its measurements as JSON."""
    torch.set_num_threads(threads)
    model = busy_model(preset)
    image = clean_image(height, width)
    options = SamplingOptions.plain() if path == "plain" else SamplingOptions()
    before = _rss_mb()
    start = time.perf_counter()
    noisy = synthesize_image(model, image, "S6", 800, seed=0, tile_px=tile, options=options)
    seconds = time.perf_counter() - start
    assert noisy.shape == image.shape
    print(json.dumps({"seconds": seconds, "peak_mb": _rss_mb(), "before_mb": before}))


def run_job(preset: str, path: str, height: int, width: int, tile: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", preset, path, str(height), str(width), str(tile), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    if result.returncode != 0:
        raise SystemExit(f"synthesis job {command[3:]} failed:\n{result.stderr}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    megapixels = height * width / 1e6
    return {"preset": preset, "path": path, "megapixels": megapixels, "tile_px": tile, **measured,
            "mp_per_s": megapixels / measured["seconds"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        preset, path, height, width, tile, threads = sys.argv[2:8]
        child(preset, path, int(height), int(width), int(tile), int(threads))
        return
    parser = arguments(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    info = machine(setup_device(args))
    print_machine(info)
    if args.quick:
        jobs = [("small", path, 2000, 2000, 512) for path in ("plain", "default")]
    else:
        jobs = [("paper", path, 4000, 6000, 512) for path in ("plain", "default")]
        jobs += [("small", "default", 4000, 6000, tile) for tile in (256, 512, 1024)]
    results = [run_job(*job, args.threads) for job in jobs]
    rows = [[r["preset"], r["path"], f"{r['megapixels']:.0f}", r["tile_px"], f"{r['seconds']:.1f}",
             f"{r['mp_per_s']:.3f}", f"{r['peak_mb']:,.0f}", f"{r['peak_mb'] - r['before_mb']:,.0f}",
             "yes" if r["peak_mb"] < LIMIT_MB else "NO"] for r in results]
    print(f"\nsynthesizing one image in tiles (32 px margins) on the CPU, {args.threads} threads")
    print_table(["preset", "path", "MP", "tile px", "seconds", "MP/s", "peak MB", "synthesis MB",
                 f"under {LIMIT_MB} MB"], rows)
    plain, default = results[0], results[1]
    finish(args, info, {"jobs": results}, plain["seconds"] / default["seconds"])


if __name__ == "__main__":
    main()
