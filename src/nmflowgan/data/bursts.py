"""Clean/noisy pairs from bursts: N aligned noisy frames of a static scene, shot on a tripod.

Every frame becomes the noisy image of one pair whose clean image is the mean of the *other* N - 1 frames, so
that the clean image is independent of the noise it is paired with. That mean still holds noise: with the
frames' noise independent, frame i minus the mean of the others has covariance ``Sigma * N / (N - 1)`` where
the camera's is ``Sigma`` (spatial correlation included). The noise written into a pair is that difference
scaled by ``sqrt((N - 1) / N)``, which gives back the camera's own covariance, so a model trained on the pairs
learns the camera's noise level rather than one inflated by the clean image's left-over noise (by 1/7 in
variance for N = 8). Values the camera clipped (0 or 255) stay as recorded. What is the same in every frame
(fixed-pattern noise) cannot be seen in a burst and ends up in the clean image.

A burst that moved is refused: each frame's shift against the burst's per-pixel median is measured to a fraction
of a pixel (a least-squares fit of the difference to the image's gradient, and a phase-correlation search for
whole-pixel moves); so is a burst whose exposure changed between frames, and one that is too short.

Layout read: ``BURSTS/<scene>/`` folders of frames (any of the readable image types, taken in name order), or one
such folder itself. Layout written: ``OUT/<scene>/clean-NN.png`` and ``noisy-NN.png``, ``OUT/metadata.csv``
(with a ``scene`` column, so splits keep a burst's pairs together) and ``OUT/bursts.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmflowgan import __version__
from nmflowgan.atomic import write_text
from nmflowgan.conditions import check_camera_name, check_iso
from nmflowgan.data.folders import METADATA_FILE
from nmflowgan.data.io import IMAGE_SUFFIXES, MAX_PIXELS, exif_camera, exif_iso, read_rgb, write_png
from nmflowgan.errors import BadInputError, DataError
from nmflowgan.outputs import check_output_folder
from nmflowgan.progress import progress as progress_bar

log = logging.getLogger(__name__)

FORMAT = "nmflowgan-burst-pairs"
SUMMARY_FILE = "bursts.json"
MIN_FRAMES = 4  # the mean of 3 others still holds a third of the noise's variance
MAX_SHIFT_PX = 0.25  # a quarter pixel of motion already shows as noise along every edge
MAX_EXPOSURE_CHANGE = 0.02  # of the mean level (and at least half a level)
SHIFT_CROP_PX = 1024  # shifts are measured on the central crop of at most this side


@dataclass(frozen=True)
class Burst:
    """One burst on disk: its ``frames`` (image files of the same size, in name order), camera and ISO."""

    folder: Path
    frames: tuple[Path, ...]
    camera: str
    iso: float


def find_bursts(root: str | Path, camera: str | None = None, iso: float | None = None,
                min_frames: int = MIN_FRAMES) -> list[Burst]:
    """The bursts under ``root``: each sub-folder holding images, or ``root`` itself when it holds images.

    Args:
        root: a folder of burst folders, or one burst folder.
        camera, iso: given for every burst, or None to read them from each frame's EXIF (Model, ISOSpeedRatings);
            every frame of a burst must then record the same.
        min_frames: bursts with fewer frames are refused.

    Raises:
        DataError: naming the folder or file: no bursts, too few frames, EXIF missing or differing between frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of bursts")
    if min_frames < 3:
        raise BadInputError(f"a burst needs at least 3 frames (the mean of 2 others), got --min-frames {min_frames}")
    if camera is not None:
        check_camera_name(camera)
    if iso is not None:
        iso = check_iso(iso)
    folders = [root] if _images(root) else sorted(p for p in root.iterdir() if p.is_dir() and _images(p))
    if not folders:
        raise DataError(f"{root}: holds no burst (no folder of {', '.join(IMAGE_SUFFIXES)} frames)")
    bursts = []
    for folder in folders:
        frames = tuple(_images(folder))
        if len(frames) < min_frames:
            raise DataError(f"{folder}: a burst of {len(frames)} frame(s) is too short; at least {min_frames} are "
                            f"needed (--min-frames)")
        bursts.append(Burst(folder, frames, _agreed(frames, camera, exif_camera, "camera model"),
                            _agreed(frames, iso, exif_iso, "ISO")))
    return bursts


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _agreed(frames: Sequence[Path], given: object, read: object, what: str) -> object:
    """``given``, or the value ``read`` finds in every frame's EXIF when they all agree."""
    if given is not None:
        return given
    values = {frame: read(frame) for frame in frames}  # type: ignore[operator]
    first = values[frames[0]]
    for frame, value in values.items():
        if value != first:
            raise DataError(f"{frame}: its EXIF {what} {value!r} differs from {frames[0].name}'s {first!r}; a burst "
                            f"is one camera at one setting")
    return first


def read_frames(burst: Burst, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The frames as ``uint8 (N, H, W, 3)``; a frame of another size is refused naming it."""
    frames = [read_rgb(burst.frames[0], max_pixels)]
    for path in burst.frames[1:]:
        frame = read_rgb(path, max_pixels)
        if frame.shape != frames[0].shape:
            raise DataError(f"{path}: size {frame.shape[1]}x{frame.shape[0]} differs from {burst.frames[0].name}'s "
                            f"{frames[0].shape[1]}x{frames[0].shape[0]}; a burst's frames must be the same size")
        frames.append(frame)
    return np.stack(frames)


def frame_shift(frame: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """How far ``frame`` moved against ``reference`` (both ``float (H, W)``, e.g. luma): ``(dy, dx)`` in pixels,
    ``frame(p) ~ reference(p + (dy, dx))``.

    A whole-pixel move is found by phase correlation and kept only where it really explains the frame better (the
    difference's variance falls by more than 5%: on a flat scene the correlation's peak is noise). A fraction of a
    pixel is then the least-squares fit of the difference to the reference's gradient.
    """
    frame, reference = (_central(a.astype(np.float64)) for a in (frame, reference))
    window = np.outer(np.hanning(frame.shape[0]), np.hanning(frame.shape[1]))
    cross = np.fft.fft2((frame - frame.mean()) * window) * np.conj(np.fft.fft2((reference - reference.mean()) * window))
    surface = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)).real
    peak = np.unravel_index(np.argmax(surface), surface.shape)
    # the peak lies at minus the shift: frame(p) = reference(p + s) correlates best at lag -s
    whole = tuple(-int(p if p <= n // 2 else p - n) for p, n in zip(peak, surface.shape, strict=True))
    # the noise can tip the peak by a pixel: the best fit among the peak and its neighbours is the move
    whole = min(((whole[0] + a, whole[1] + b) for a in (-1, 0, 1) for b in (-1, 0, 1)),
                key=lambda shift: _misfit(frame, reference, shift))
    if whole != (0, 0) and _misfit(frame, reference, whole) < 0.95 * _misfit(frame, reference, (0, 0)):
        return float(whole[0]), float(whole[1])
    gy, gx = np.gradient(reference)
    inner = (slice(1, -1), slice(1, -1))
    gy, gx, difference = gy[inner].ravel(), gx[inner].ravel(), (frame - reference)[inner].ravel()
    normal = np.array([[gy @ gy, gy @ gx], [gx @ gy, gx @ gx]])
    if np.linalg.det(normal) <= 1e-9 * max(np.trace(normal), 1e-12) ** 2:  # no gradient at all: nothing can move
        return 0.0, 0.0
    dy, dx = np.linalg.solve(normal, np.array([gy @ difference, gx @ difference]))
    return float(dy), float(dx)


def _central(image: np.ndarray) -> np.ndarray:
    height, width = image.shape
    top, left = max(0, (height - SHIFT_CROP_PX) // 2), max(0, (width - SHIFT_CROP_PX) // 2)
    return image[top:top + SHIFT_CROP_PX, left:left + SHIFT_CROP_PX]


def _misfit(frame: np.ndarray, reference: np.ndarray, shift: tuple[int, int]) -> float:
    """The variance of ``frame(p) - reference(p + shift)`` where both are defined."""
    dy, dx = shift
    height, width = frame.shape
    ours = frame[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
    theirs = reference[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
    return float(np.var(ours - theirs))


def check_still(frames: np.ndarray, names: Sequence[Path],
                max_shift_px: float = MAX_SHIFT_PX) -> list[tuple[float, float]]:
    """Each frame's shift against the burst's per-pixel median (which one moved frame cannot drag along); raises
    naming the frame that moved most, when it moved more than ``max_shift_px``, or the frame whose mean level
    differs most from the others', when it does so by more than :data:`MAX_EXPOSURE_CHANGE`.

    Args:
        frames: ``uint8 (N, H, W, 3)``.
        names: the N frame files, for the errors.
    """
    luma = np.stack([_central(frame.astype(np.float64).mean(axis=2)) for frame in frames])
    levels = luma.mean(axis=(1, 2))
    typical = float(np.median(levels))
    worst = int(np.argmax(abs(levels - typical)))
    if abs(levels[worst] - typical) > max(0.5, MAX_EXPOSURE_CHANGE * typical):
        raise DataError(f"{names[worst]}: its mean level {levels[worst]:.1f} differs from the other frames' "
                        f"{typical:.1f}; the exposure or the light changed during the burst")
    reference = np.median(luma, axis=0)
    shifts = [frame_shift(frame, reference) for frame in luma]
    worst = int(np.argmax([math.hypot(*shift) for shift in shifts]))
    if math.hypot(*shifts[worst]) > max_shift_px:
        dy, dx = shifts[worst]
        raise DataError(f"{names[worst]}: moved by ({dy:+.2f}, {dx:+.2f}) px (rows, columns) against the other "
                        f"frames (at most {max_shift_px:g} px is allowed); the burst is not of a still scene on a "
                        f"still camera")
    return shifts


def burst_pairs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean and noisy images of the N pairs of a burst (see the module's docstring for the arithmetic).

    Args:
        frames: ``uint8 (N, H, W, 3)``, N >= 3 aligned frames.

    Returns:
        ``clean`` and ``noisy``, each ``uint8 (N, H, W, 3)``: pair i's clean image is the mean of the frames other
        than i (rounded), its noisy image the clean one plus frame i's scaled difference from that mean.
    """
    count = len(frames)
    if count < 3:
        raise BadInputError(f"a burst needs at least 3 frames, got {count}")
    scale = math.sqrt((count - 1) / count)
    total = frames.astype(np.float64).sum(axis=0)
    clean, noisy = np.empty_like(frames), np.empty_like(frames)
    for index, frame in enumerate(frames):
        others = (total - frame) / (count - 1)
        clean[index] = np.clip(np.round(others), 0, 255)
        # the noise is measured against the exact mean and added to the rounded one, so rounding the clean image
        # adds nothing to the pair's noise
        scaled = np.clip(np.round(clean[index] + scale * (frame - others)), 0, 255)
        noisy[index] = np.where((frame == 0) | (frame == 255), frame, scaled)
    return clean, noisy


def write_burst_pairs(bursts: str | Path, out: str | Path, camera: str | None = None, iso: float | None = None,
                      min_frames: int = MIN_FRAMES, max_shift_px: float = MAX_SHIFT_PX, overwrite: bool = False,
                      progress: bool = True) -> Path:
    """Turns every burst under ``bursts`` into pairs in ``out`` (a metadata.csv data set every command reads).

    Every burst is read and checked (size, EXIF, motion, exposure) before anything is written; the data set is
    written under a temporary name and renamed when complete. Returns ``out``.
    """
    source, out = Path(bursts), Path(out)
    found = find_bursts(source, camera, iso, min_frames)
    if not max_shift_px > 0:
        raise BadInputError(f"--max-shift must be a positive number of pixels, got {max_shift_px}")
    check_output_folder(out, "burst pairs", _is_burst_pairs, overwrite, inputs=[source])
    checked = []
    for burst in progress_bar(found, enabled=progress, desc="check bursts", unit="burst"):
        frames = read_frames(burst)
        checked.append((burst, check_still(frames, burst.frames, max_shift_px)))
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(staging, source, checked, progress)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write(staging: Path, source: Path, checked: list[tuple[Burst, list[tuple[float, float]]]],
           progress: bool) -> None:
    rows, summary = [], []
    names = _scene_names([burst.folder for burst, _ in checked], source)
    for (burst, shifts), scene in progress_bar(list(zip(checked, names, strict=True)), enabled=progress,
                                               desc="write pairs", unit="burst"):
        (staging / scene).mkdir(parents=True)
        clean, noisy = burst_pairs(read_frames(burst))
        for index in range(len(clean)):
            clean_name, noisy_name = f"{scene}/clean-{index:02d}.png", f"{scene}/noisy-{index:02d}.png"
            write_png(staging / clean_name, clean[index])
            write_png(staging / noisy_name, noisy[index])
            rows.append({"clean": clean_name, "noisy": noisy_name, "camera": burst.camera, "iso": f"{burst.iso:g}",
                         "scene": scene})
        summary.append({"scene": scene, "folder": str(burst.folder), "frames": [p.name for p in burst.frames],
                        "camera": burst.camera, "iso": burst.iso,
                        "noise_scale": math.sqrt((len(clean) - 1) / len(clean)),
                        "shifts_px": [[round(dy, 4), round(dx, 4)] for dy, dx in shifts]})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["clean", "noisy", "camera", "iso", "scene"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(staging / METADATA_FILE, table.getvalue())
    write_text(staging / SUMMARY_FILE, json.dumps({"format": FORMAT, "version": __version__, "bursts": summary},
                                                  indent=2) + "\n")
    log.info("burst pairs: wrote %d pairs from %d bursts", len(rows), len(summary))


def _scene_names(folders: list[Path], source: Path) -> list[str]:
    """A folder name per burst: its own name (the source's when the source is one burst)."""
    return [folder.name if folder != source else source.resolve().name for folder in folders]


def _is_burst_pairs(folder: Path) -> bool:
    """Whether ``folder`` is a data set :func:`write_burst_pairs` wrote."""
    try:
        return json.loads((folder / SUMMARY_FILE).read_text()).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
