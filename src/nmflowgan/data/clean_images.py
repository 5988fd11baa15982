"""Clean images without a noisy partner: more content for a denoiser whose noise is synthesized.

A user with a few real pairs of a camera usually has many more clean images (low-ISO shots, any photo collection).
A denoiser trained from real pairs and a noise model can draw that camera's noise on them too. Each clean image is
given one of the real pairs' ``(camera, ISO)`` conditions, in turn by sorted file name, so that every condition the
pairs cover gets a share of the extra content; its record has ``clean_only`` set, and ``noisy`` is the clean file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nmflowgan.data.io import IMAGE_SUFFIXES, MAX_PIXELS, image_size
from nmflowgan.data.pairs import PairRecord
from nmflowgan.errors import DataError


def clean_image_records(folder: str | Path, conditions: Sequence[tuple[str, float]], max_pixels: int = MAX_PIXELS
                        ) -> list[PairRecord]:
    """A clean-only record for every image under ``folder`` (recursively, sorted), image ``i`` at
    ``conditions[i % len(conditions)]``.

    Raises:
        DataError: ``folder`` is missing or holds no image, or an image's header is unreadable or too large
            (each named), or there are no conditions to give them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of clean images")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{folder}: no PNG, JPEG or TIFF images found")
    if not conditions:
        raise DataError(f"{folder}: no camera/ISO conditions to draw noise at (the training pairs have none)")
    conditions = sorted(set(conditions))
    for image in images:
        image_size(image, max_pixels)  # a bad file stops the run before the first step, naming the file
    return [PairRecord(image, image, *conditions[i % len(conditions)], scene=f"clean:{image}", clean_only=True)
            for i, image in enumerate(images)]
