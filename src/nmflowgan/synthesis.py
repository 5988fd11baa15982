"""Synthesizing noisy images of any size, file by file, with memory bounded by the tile size.

The latent of every pixel is a pure function of ``(seed, pixel position)``: it is drawn in fixed
128x128 blocks, each from its own generator seeded by its block coordinates. A tile, grown by a margin
on every side, gathers the latents of the blocks it covers, goes through flow and refiner, and keeps
only its centre. Overlapping tiles therefore see the same latents, and the margin hides the refiner's
border effects, so tile seams leave no trace in the noise statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmflowgan.atomic import write_together
from nmflowgan.conditions import grid_positions
from nmflowgan.data.io import MAX_PIXELS, exif_iso, png_bytes, read_rgb
from nmflowgan.devices import resolve_device
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.models.noise_model import WEIGHTS_FILE, NoiseModel, checked_temperature, resolve_model_dir
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.outputs import check_targets, input_images, make_parent, numbered, output_path
from nmflowgan.progress import progress as progress_bar
from nmflowgan.seeds import checked_seed
from nmflowgan.tiling import process_in_tiles

log = logging.getLogger(__name__)
BLOCK_PX = 128


def latent_block(seed: int, row: int, column: int) -> torch.Tensor:
    """The ``(3, 128, 128)`` standard-normal latent of block ``(row, column)``."""
    block_seed = int(np.random.SeedSequence([seed, row, column]).generate_state(1)[0])
    return torch.randn((3, BLOCK_PX, BLOCK_PX), generator=torch.Generator().manual_seed(block_seed))


def latent_window(seed: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The latent of the window ``[top, top + height) x [left, left + width)``: ``(1, 3, height, width)``.

    Positions outside the image (negative) are valid too: the blocks extend the grid in every direction.
    """
    out = torch.empty(3, height, width)
    for row in range(top // BLOCK_PX, (top + height - 1) // BLOCK_PX + 1):
        for column in range(left // BLOCK_PX, (left + width - 1) // BLOCK_PX + 1):
            block = latent_block(seed, row, column)
            y0, x0 = max(top, row * BLOCK_PX), max(left, column * BLOCK_PX)
            y1, x1 = min(top + height, (row + 1) * BLOCK_PX), min(left + width, (column + 1) * BLOCK_PX)
            out[:, y0 - top : y1 - top, x0 - left : x1 - left] = block[:, y0 - row * BLOCK_PX : y1 - row * BLOCK_PX,
                                                                        x0 - column * BLOCK_PX : x1 - column * BLOCK_PX]
    return out[None]


@torch.no_grad()
def synthesize_image(model: NoiseModel, clean: np.ndarray, camera: str, iso: float, seed: int = 0,
                     tile_px: int = 512, margin_px: int = 32, temperature: float = 1.0, refine: bool = True,
                     extrapolate: bool = False, options: SamplingOptions | None = None,
                     origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Returns a noisy version of ``clean`` (``uint8 (H, W, 3)``, 8-bit units), processed in tiles.

    Args:
        model: the noise model (on any device). camera, iso: the condition (checked against the model).
        seed: the output is a pure function of the seed (and the model): same seed, same image.
        tile_px: side of the core of each tile; margin_px: extra context on every side, cropped off.
        options: the sampling path (default: the optimized one).
        origin: ``(y, x)`` of the image's top-left pixel in the camera's frame (where it was cropped from). The
            camera's colour-filter and JPEG grids, which a model with ``grid_px`` follows, are counted from the
            frame's origin, and each pixel's latent is that of its place in the frame: a crop drawn with its offset
            gets the noise the whole image gets there, away from the crop's border (where the model sees less
            context).
    """
    if clean.dtype != np.uint8 or clean.ndim != 3 or clean.shape[2] != 3:
        raise BadInputError(f"clean images must be uint8 (H, W, 3), got {clean.dtype}{clean.shape}")
    origin = checked_origin(origin)
    cond = model.encode(camera, iso, 1, extrapolate)
    device = next(model.parameters()).device
    temperature = checked_temperature(temperature)

    def draw(tile: torch.Tensor, top: int, left: int) -> torch.Tensor:
        top, left = top + origin[0], left + origin[1]
        latent = latent_window(seed, top, left, *tile.shape[-2:]).to(device) * temperature
        grid = grid_positions(1, *tile.shape[-2:], top, left, device)
        noise = model.draw(tile, cond.with_grid(grid), latent=latent, refine=refine, options=options)
        if not bool(torch.isfinite(noise).all()):
            raise CheckpointError(f"the noise model drew non-finite noise for {camera} ISO {iso:g}; its weights "
                                  "are unusable")
        return tile * 255.0 + noise

    return process_in_tiles(clean, draw, tile_px, margin_px, device)


def checked_origin(origin: object) -> tuple[int, int]:
    """``origin`` as ``(y, x)`` if it is two whole numbers >= 0, else BadInputError."""
    try:
        y, x = origin  # type: ignore[misc]
    except (TypeError, ValueError):
        raise BadInputError(f"the origin must be two whole numbers >= 0 (y, x), got {origin!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (y, x)):
        raise BadInputError(f"the origin must be two whole numbers >= 0 (y, x), got {origin!r}")
    return y, x


def checkpoint_hash(model_dir: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the weights in ``model_dir`` (a resolved model folder)."""
    digest = hashlib.sha256()
    with open(model_dir / WEIGHTS_FILE, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SynthesisJob:
    """One output: ``source`` drawn at ``camera``/``iso`` into ``target`` with ``seed``."""

    source: Path
    target: Path
    camera: str
    iso: float
    seed: int

    @property
    def sidecar(self) -> Path:
        return self.target.with_suffix(".json")


def plan(source: Path, out: Path, cameras: Sequence[str], isos: Sequence[float | str], seed: int,
         max_pixels: int = MAX_PIXELS) -> list[SynthesisJob]:
    """Every (image, camera, ISO) output, with every input checked first: its header (RGB, at most
    ``max_pixels``) and, for ``"exif"``, its ISO, so that a bad input stops the job before anything is written.

    OUT mirrors IN's relative names as PNG; with several cameras or ISOs each name gets ``_CAMERA_isoN``;
    inputs that would share an output name (``a.jpg`` and ``a.png``) are numbered (``a_2.png``). Each output's
    image seed (:func:`image_seed`) derives from the seed, the input's name relative to IN, the camera and the
    ISO, not from OUT: the same ``--seed`` on the same input draws the same image into any output.
    """
    source, out = Path(source), Path(out)
    several = len(cameras) * len(isos) > 1
    planned = []
    for image, relative in input_images(source, out, max_pixels):
        recorded = exif_iso(image, max_pixels) if "exif" in isos else None  # read once per image
        for camera in cameras:
            for iso in isos:
                suffix = f"_{camera}_iso{iso if isinstance(iso, str) else f'{iso:g}'}" if several else ""
                value = recorded if iso == "exif" else float(iso)
                planned.append((image, relative, camera, value, output_path(source, out, relative, suffix)))
    jobs = []
    own = [p[1].suffix.lower() == ".png" for p in planned]
    for (image, relative, camera, iso, _), target in zip(planned, numbered([p[-1] for p in planned], own)):
        jobs.append(SynthesisJob(image, target, camera, iso, image_seed(seed, relative, camera, iso)))
    return jobs


def image_seed(seed: int, relative: Path, camera: str, iso: float) -> int:
    """The seed of one output (what :func:`synthesize_image` takes): a hash of the run's ``seed``, the input's
    name relative to IN, the camera and the ISO."""
    key = f"{seed}/{relative.as_posix()}/{camera}/{iso:g}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def synthesize(checkpoint: str | Path, source: str | Path, out: str | Path, cameras: Sequence[str],
               isos: Sequence[float | str], seed: int = 0, overwrite: bool = False, extrapolate: bool = False,
               tile_px: int = 512, device: str = "auto", progress: bool = True,
               options: SamplingOptions | None = None, max_pixels: int = MAX_PIXELS,
               origin: tuple[int, int] = (0, 0)) -> list[Path]:
    """Writes noisy versions of every image of ``source`` (a file or a folder) into ``out``.

    Everything is checked before the first image is written: the options, the model, every input's header and
    EXIF ISO, and every output (none may exist without ``overwrite``, sidecars included, and none may land
    outside ``out`` through a symbolic link).

    Args:
        cameras, isos: every combination is drawn; an ISO may be ``"exif"`` (read from each image).
        overwrite: replace existing outputs (refused otherwise, before any work starts).
        tile_px: side of the tiles the image is drawn in (>= 1; bounds the memory).
        device: where the model runs: ``auto`` (the default, as on the command line), ``cpu``, ``cuda``, ``mps``.
        options: the sampling path (default: the optimized one).
        max_pixels: the largest input accepted (checked from each header before decoding).
        origin: ``(y, x)`` of every input's top-left pixel in the camera's frame (:func:`synthesize_image`).

    Returns:
        The written images; each has a JSON sidecar (camera, ISO, seed, checkpoint hash, source file, and
        the sampling path: ``plain`` or the optimized path's number format).
    """
    if not cameras or not isos:
        raise BadInputError(f"no {'camera' if not cameras else 'ISO'} given; name at least one")
    if tile_px < 1:
        raise BadInputError(f"the tile side must be at least 1 pixel, got {tile_px}")
    checked_seed(seed)
    origin = checked_origin(origin)
    model_dir = resolve_model_dir(checkpoint)  # once: it logs which checkpoint of a run folder it takes
    model = NoiseModel.load(model_dir, map_location=resolve_device(device))
    for camera in cameras:
        model.space.camera_index(camera)
    for iso in isos:
        if iso != "exif":
            model.space.iso.check(iso, extrapolate)
    out = Path(out)
    jobs = plan(Path(source), out, cameras, isos, seed, max_pixels)
    first_with = {job.iso: job.source for job in reversed(jobs)}  # the named ISOs passed above: these came from EXIF
    for iso, image in first_with.items():
        try:
            model.space.iso.check(iso, extrapolate)
        except BadInputError as error:
            raise BadInputError(f"{image}: its EXIF ISO does not fit this model ({error})") from None
    outputs = [path for job in jobs for path in (job.target, job.sidecar)]
    check_targets(out, outputs, overwrite, [job.source for job in jobs])
    digest = checkpoint_hash(model_dir)
    # The same seed gives the same image only on the same path: the sidecar says which one drew it.
    options = options or SamplingOptions()
    path = "plain" if options.is_plain else str(model.sampler(options).dtype).removeprefix("torch.")
    written = []
    for job in progress_bar(jobs, progress, desc="synthesize", unit="img"):
        noisy = synthesize_image(model, read_rgb(job.source, max_pixels), job.camera, job.iso, job.seed, tile_px,
                                 extrapolate=extrapolate, options=options, origin=origin)
        make_parent(out, job.target)
        sidecar = {"camera": job.camera, "iso": job.iso, "seed": seed, "image_seed": job.seed, "origin": list(origin),
                   "checkpoint": str(checkpoint), "checkpoint_sha256": digest, "source": str(job.source),
                   "sampling": path, "reproduce": "the same --seed, camera, ISO and --origin on the same input (its "
                   "name relative to IN), checkpoint and sampling path; or synthesize_image(..., seed=image_seed, "
                   "origin=origin)"}
        # image and sidecar land together or not at all; without --overwrite neither replaces a file that
        # appeared while this run worked
        write_together({job.target: png_bytes(noisy, name=job.target),
                        job.sidecar: (json.dumps(sidecar, indent=2) + "\n").encode()}, overwrite)
        written.append(job.target)
    return written


class SynthesizedPairs(torch.utils.data.Dataset):
    """Turns any dataset of clean images into on-the-fly ``(noisy, clean)`` pairs for chosen cameras and ISOs.

    Item ``i`` is clean image ``i // (cameras x ISOs)`` drawn at one (camera, ISO) combination, with a
    generator seeded by ``(seed, i)``: the same index always gives the same pair, in any worker.

    Args:
        images: a sequence or map-style dataset whose items are clean images, ``uint8 (H, W, 3)`` arrays or
            ``(3, H, W)`` tensors (uint8, or float in [0, 1]); a ``(image, ...)`` tuple uses its first element.
        model: a noise model (kept on its device; keep it on the CPU for DataLoader workers).
        cameras, isos: every combination is drawn for every image.
        options: the sampling path (default: the optimized one).

    Example:
        >>> model = NoiseModel.from_preset("small")
        >>> pairs = SynthesizedPairs([np.full((8, 8, 3), 100, np.uint8)], model, ["S6"], [800])
        >>> sorted(pairs[0])
        ['camera', 'clean', 'iso', 'noisy']
    """

    def __init__(self, images: Sequence | torch.utils.data.Dataset, model: NoiseModel, cameras: Sequence[str],
                 isos: Sequence[float], seed: int = 0, extrapolate: bool = False,
                 options: SamplingOptions | None = None) -> None:
        cameras = [cameras] if isinstance(cameras, str) else list(cameras)  # one camera, not its letters
        isos = list(isos) if isinstance(isos, Sequence) and not isinstance(isos, str) else [isos]
        if not cameras or not isos:
            raise BadInputError(f"SynthesizedPairs needs at least one camera and one ISO, got cameras={list(cameras)} "
                                f"and isos={list(isos)}")
        for camera in cameras:
            model.space.camera_index(camera)
        for iso in isos:
            model.space.iso.check(iso, extrapolate)
        self.images, self.model, self.seed, self.extrapolate = images, model, seed, extrapolate
        self.options = options
        self.conditions = [(camera, float(iso)) for camera in cameras for iso in isos]

    def __len__(self) -> int:
        return len(self.images) * len(self.conditions)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        image = self.images[index // len(self.conditions)]
        if isinstance(image, tuple | list):
            image = image[0]
        camera, iso = self.conditions[index % len(self.conditions)]
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0]))
        noisy = self.model.sample(image, camera, iso, generator=generator, extrapolate=self.extrapolate,
                                  options=self.options)
        return {"noisy": noisy, "clean": image, "camera": camera, "iso": iso}
