"""Where file-to-file commands (``synthesize``, ``denoise``) write: OUT mirrors IN's names, as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nmflowgan.data.io import IMAGE_SUFFIXES
from nmflowgan.errors import BadInputError, DataError, OutputExistsError


def input_images(source: Path, out: Path) -> list[tuple[Path, Path]]:
    """``(image, name relative to IN)`` for ``source`` itself or every image under it (recursively, sorted).

    Refuses an OUT folder inside the IN folder and an IN without images.
    """
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise BadInputError(f"{out}: the output folder is inside the input folder {source}")
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise DataError(f"{source}: no such image file or folder")
    images = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{source}: no PNG, JPEG or TIFF images found")
    return [(image, image.relative_to(source)) for image in images]


def output_path(source: Path, out: Path, relative: Path, suffix: str = "") -> Path:
    """OUT itself when one input file goes to an OUT ending in ``.png`` (and no suffix is needed), else
    ``OUT/relative`` with ``suffix`` added to the name and ``.png`` as extension."""
    if source.is_file() and out.suffix.lower() == ".png" and not suffix:
        return out
    return out / relative.parent / f"{relative.stem}{suffix}.png"


def refuse_existing(targets: Sequence[Path], overwrite: bool) -> None:
    """Raises before any work when an output exists and ``overwrite`` is off."""
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: exists ({len(existing)} outputs do); pass --overwrite to replace")
