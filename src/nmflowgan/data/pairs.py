"""A (clean, noisy, camera, ISO) pair on disk: what every data source produces and training reads."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nmflowgan.data.io import MAX_PIXELS, image_size
from nmflowgan.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairRecord:
    """One noisy/clean image pair.

    Attributes:
        clean, noisy: image files (8-bit or 16-bit RGB).
        camera: camera code; iso: ISO.
        scene: an identifier of the scene, so that splits can keep scenes disjoint.
        oracle: a second noisy image of the very same clean image, when the source has one (simcam).
        oracle_draws: further independent noisy images of the same clean image (a simcam test set written with
            ``--oracle-draws``), from which evaluation builds the decorrelated oracle; empty otherwise.
        clean_only: no noisy capture exists (``noisy`` is the clean file itself): a denoiser draws synthesized
            noise on it (:mod:`nmflowgan.data.clean_images`).
        rows: ``(top, bottom)``: only these image rows belong to the record (a band of the image carved out for
            validation, :func:`~nmflowgan.data.training_data.held_out_strips`); None: the whole image.
    """

    clean: Path
    noisy: Path
    camera: str
    iso: float
    scene: str = ""
    oracle: Path | None = None
    oracle_draws: tuple[Path, ...] = ()
    clean_only: bool = False
    rows: tuple[int, int] | None = None


def check_pair(record: PairRecord, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Checks that both files exist, are RGB and have the same size; returns ``(H, W)``."""
    for path in (record.clean, record.noisy):
        if not path.is_file():
            raise DataError(f"{path}: missing file (partner of {_partner(record, path)})")
    clean_size, noisy_size = image_size(record.clean, max_pixels), image_size(record.noisy, max_pixels)
    if clean_size != noisy_size:
        raise DataError(f"{record.noisy}: size {noisy_size[1]}x{noisy_size[0]} does not match its clean "
                        f"image {record.clean} ({clean_size[1]}x{clean_size[0]})")
    return clean_size


def checked(records: Iterable[PairRecord], skip_bad: bool, max_pixels: int = MAX_PIXELS
            ) -> list[tuple[PairRecord, tuple[int, int]]]:
    """Each record with its ``(H, W)``; a bad pair raises, or is logged and dropped with ``skip_bad``."""
    good = []
    for record in records:
        try:
            good.append((record, check_pair(record, max_pixels)))
        except DataError as error:
            if not skip_bad:
                raise
            log.warning("skipping bad pair: %s", error)
    return good


def _partner(record: PairRecord, path: Path) -> Path:
    return record.noisy if path == record.clean else record.clean
