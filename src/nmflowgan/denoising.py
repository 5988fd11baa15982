"""Using a trained denoiser: denoise images of any size (tiled), and score it with PSNR and SSIM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.io import MAX_PIXELS, read_rgb, write_png
from nmflowgan.data.patches import evenly_spaced
from nmflowgan.data.sidd import load_sidd_blocks
from nmflowgan.devices import resolve_device
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.metrics.image_quality import psnr, ssim
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.outputs import check_targets, input_images, make_parent, numbered, output_path
from nmflowgan.progress import progress as progress_bar
from nmflowgan.tiling import process_in_tiles


@torch.no_grad()
def denoise_image(model: DnCNN, noisy: np.ndarray, tile_px: int = 512) -> np.ndarray:
    """``uint8 (H, W, 3)`` noisy -> ``uint8 (H, W, 3)`` denoised; tiles with a margin of the receptive field."""
    device = next(model.parameters()).device
    margin = model.config.depth + 1  # each 3x3 layer sees one more pixel

    def run(tile: torch.Tensor, top: int, left: int) -> torch.Tensor:
        denoised = model(tile)
        if not bool(torch.isfinite(denoised).all()):
            raise CheckpointError("the denoiser produced non-finite values; its weights are unusable")
        return denoised.clamp(0, 1) * 255.0

    return process_in_tiles(noisy, run, tile_px, margin, device)


@dataclass(frozen=True)
class DenoiserScores:
    """PSNR (dB) and SSIM of the denoised images, and of the noisy inputs for reference.

    Attributes:
        overall: ``{"psnr", "ssim", "noisy_psnr", "noisy_ssim", "images"}``.
        per_condition: rows with ``camera``, ``iso`` and the same keys.
        available: images in the data set; ``overall["images"]`` of them, evenly spaced, were scored.
    """

    overall: dict[str, float]
    per_condition: list[dict]
    available: int

    @property
    def subset(self) -> str:
        """``"all 1280 images"`` or ``"200 of 1280 images, evenly spaced"``."""
        scored = int(self.overall["images"])
        if scored == self.available:
            return f"all {scored} images"
        return f"{scored} of {self.available} images, evenly spaced"


def _scores(rows: list[tuple[str, float, float, float, float, float]], available: int) -> DenoiserScores:
    def summary(selected: list) -> dict[str, float]:
        values = np.array([r[2:] for r in selected], dtype=np.float64)
        keys = ("psnr", "ssim", "noisy_psnr", "noisy_ssim")
        return {k: float(v) for k, v in zip(keys, values.mean(0))} | {"images": len(selected)}

    conditions = sorted({(r[0], r[1]) for r in rows})
    per_condition = [{"camera": c, "iso": i} | summary([r for r in rows if (r[0], r[1]) == (c, i)])
                     for c, i in conditions]
    return DenoiserScores(summary(rows), per_condition, available)


def evaluate_denoiser(checkpoint: str | Path, data: str | Path, split: str | None = None,
                      max_images: int | None = None, progress: bool = True, device: str = "auto",
                      max_pixels: int = MAX_PIXELS) -> DenoiserScores:
    """Scores a denoiser on real noisy/clean pairs: a paired folder, a simcam test tree, a SIDD tree, or
    SIDD validation blocks (``data`` = the noisy ``.mat`` file; the ground truth is the file beside it with
    ``Noisy`` replaced by ``Gt``).

    Args:
        max_images: score at most this many images, evenly spaced over the data set (None: all of them).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        max_pixels: the largest image accepted (SIDD blocks: all blocks of the file together).
    """
    if max_images is not None and max_images < 1:
        raise BadInputError(f"--max-images must be at least 1, got {max_images}")
    model = DnCNN.load(checkpoint, map_location=resolve_device(device))
    data = Path(data)
    if data.suffix.lower() == ".mat":
        ground_truth = data.with_name(data.name.replace("Noisy", "Gt"))
        if ground_truth == data:
            raise BadInputError(f"{data}: cannot tell the ground-truth .mat file ('Noisy' is not in the name)")
        blocks = load_sidd_blocks(data, ground_truth, max_pixels=max_pixels)
        noisy_images = blocks.noisy.reshape(-1, *blocks.noisy.shape[2:])
        clean_images = blocks.clean.reshape(-1, *blocks.clean.shape[2:])
        pairs = [("SIDD", 0.0, lambda i=i: (clean_images[i], noisy_images[i])) for i in range(len(noisy_images))]
    else:
        records = find_pairs(data, split or default_splits(data, None, None)[1])
        pairs = [(r.camera, float(r.iso), lambda r=r: (read_rgb(r.clean, max_pixels), read_rgb(r.noisy, max_pixels)))
                 for r in records]
    chosen = pairs if max_images is None else [pairs[i] for i in evenly_spaced(len(pairs), max_images)]
    rows = []
    for camera, iso, load in progress_bar(chosen, progress, desc="evaluate denoiser"):
        clean, noisy = load()
        denoised = denoise_image(model, noisy)
        rows.append((camera, iso, psnr(clean, denoised), ssim(clean, denoised), psnr(clean, noisy), ssim(clean, noisy)))
    return _scores(rows, len(pairs))


def denoise_files(checkpoint: str | Path, source: str | Path, out: str | Path, overwrite: bool = False,
                  device: str = "auto", progress: bool = True, max_pixels: int = MAX_PIXELS) -> list[Path]:
    """Denoises an image or a folder of images into PNGs that mirror the input names (numbered where two
    inputs would share one, as ``synthesize``). Every input header and every output is checked before the
    first image is written; ``max_pixels`` is the largest input accepted."""
    source, out = Path(source), Path(out)
    inputs = input_images(source, out, max_pixels)
    images = [image for image, _ in inputs]
    targets = numbered([output_path(source, out, relative) for _, relative in inputs],
                       [relative.suffix.lower() == ".png" for _, relative in inputs])
    check_targets(out, targets, overwrite, images)
    model = DnCNN.load(checkpoint, map_location=resolve_device(device))
    for image, target in progress_bar(list(zip(images, targets)), progress, desc="denoise"):
        denoised = denoise_image(model, read_rgb(image, max_pixels))
        make_parent(out, target)
        write_png(target, denoised)
    return targets
