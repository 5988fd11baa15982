"""The one reader and writer of RGB images: 8-bit and 16-bit PNG/TIFF, JPEG, always RGB, never BGR.

Images cross this module as ``uint8`` arrays ``(H, W, 3)`` in 8-bit units (0-255). 16-bit RGB PNG and
TIFF files are reduced to 8-bit units by keeping the high byte, ``v // 256`` (Pillow's conversion), so
65535 -> 255 and 0 -> 0; every noise statistic of this project works in 8-bit units anyway. An EXIF
orientation (a camera's "rotate 90 degrees to display") is applied as image viewers apply it, so an image is
read, and its outputs written, the way it is seen.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nmflowgan.atomic import atomic_path
from nmflowgan.conditions import check_camera_name, check_iso
from nmflowgan.errors import BadInputError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 as stored; 2-8 mirrored and/or turned
EXIF_IFD, EXIF_ISO, EXIF_MODEL = 0x8769, 0x8827, 0x0110  # the Exif sub-IFD, ISOSpeedRatings, the camera's Model
# The project's own bound on the pixels of one image, checked from the header before anything is decoded:
# it guards against decompression bombs (a tiny file that decodes to gigabytes) without changing Pillow's
# process-wide setting. It sits below Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS, about 179 MP).
MAX_PIXELS = 150_000_000


@contextmanager
def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Opens an image lazily (header only) and refuses it, naming the file and the limit, when it has more
    than ``max_pixels`` pixels; Pillow's decompression-bomb warning is silenced here only, as this check
    replaces it."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:
            raise DataError(f"{path}: image too large ({error}); the limit is {max_pixels:,} pixels") from None
        except FileNotFoundError:
            raise DataError(f"{path}: no such image file") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise DataError(f"{path}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
                            f"{max_pixels:,} pixels per image (--max-pixels raises it)")
        yield image


@contextmanager
def open_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """:func:`open_image` for RGB images only; every failure, in the block too (decoding a truncated file),
    becomes one :class:`DataError` naming the file."""
    path = Path(path)
    try:
        with open_image(path, max_pixels) as image:
            if image.mode != "RGB":
                raise DataError(f"{path}: image mode {image.mode} is not RGB (need a 3-channel colour image)")
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise DataError(f"{path}: holds {frames} images (frames or pages); nmflowgan reads one image per "
                                "file, so save the one you mean on its own")
            yield image
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable or truncated image ({error})") from None


def _orientation(image: Image.Image, path: Path) -> int:
    """The EXIF orientation of an image (1 when absent), without decoding its pixels: from the header of a JPEG
    or TIFF, and from the eXIf chunk of a PNG wherever it sits (the chunks are walked by their lengths)."""
    if image.format in ("JPEG", "MPO", "TIFF"):
        return image.getexif().get(ORIENTATION_TAG, 1)
    if image.format != "PNG":
        return 1
    exif = image.info.get("exif") or _png_exif_chunk(path)
    if not exif:
        return 1
    parsed = Image.Exif()
    parsed.load(exif)
    return parsed.get(ORIENTATION_TAG, 1)


def _png_exif_chunk(path: Path) -> bytes | None:
    """The data of a PNG's eXIf chunk, found by reading the chunks' headers and skipping their data."""
    with open(path, "rb") as handle:
        handle.seek(8)  # the PNG signature
        while header := handle.read(8):
            if len(header) < 8:
                return None
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"eXIf":
                return handle.read(length)
            if kind == b"IEND":
                return None
            handle.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    return None


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(H, W)`` of an RGB image from its header, without decoding the pixels; raises :class:`DataError` naming
    the file when it is missing, unreadable, not RGB or larger than ``max_pixels``."""
    with open_rgb(path, max_pixels) as image:
        width, height = image.size
        if _orientation(image, Path(path)) in (5, 6, 7, 8):  # shown turned by 90 degrees
            width, height = height, width
    return height, width


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Reads an RGB image as ``uint8 (H, W, 3)`` (0-255).

    Raises:
        DataError: naming the file when it is missing, unreadable, truncated, larger than ``max_pixels``, or
            not RGB (grey, RGBA, palette and CMYK images are refused rather than silently converted).
    """
    with open_rgb(path, max_pixels) as image:
        orientation = _orientation(image, Path(path))
        image.load()
        if orientation != 1:
            turned = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                      4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                      7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}.get(orientation)
            return np.asarray(image.transpose(turned) if turned else image, dtype=np.uint8).copy()
        return np.asarray(image, dtype=np.uint8).copy()


def png_bytes(image: np.ndarray, compress_level: int = 1, name: str | Path = "image", exif: bytes = b"") -> bytes:
    """``uint8 (H, W, 3)`` encoded as a PNG file (``name`` is what an error names), with ``exif`` when given."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{name}: can only write uint8 (H, W, 3) images, got {image.dtype}{image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", compress_level=compress_level, exif=exif)
    return buffer.getvalue()


def write_png(path: str | Path, image: np.ndarray, compress_level: int = 1, exif: bytes = b"") -> None:
    """Writes ``uint8 (H, W, 3)`` as PNG, atomically (a crash never leaves a half-written file)."""
    data = png_bytes(image, compress_level, path, exif)
    with atomic_path(Path(path)) as temp:
        temp.write_bytes(data)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Writes ``uint8 (H, W, 3)`` in the format its suffix names (PNG, JPEG at quality 95, TIFF)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        write_png(path, image)
        return
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{path}: can only write uint8 (H, W, 3) images, got {image.dtype}{image.shape}")
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
    if suffix not in formats:
        raise DataError(f"{path}: unknown image type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    options = {"quality": 95} if formats[suffix] == "JPEG" else {}
    with atomic_path(path) as temp:
        Image.fromarray(image, "RGB").save(temp, format=formats[suffix], **options)


def exif_iso(path: str | Path, max_pixels: int = MAX_PIXELS) -> float:
    """The ISO an image's EXIF records (tag ISOSpeedRatings); raises naming the file when there is none."""
    value = _exif_tag(Path(path), max_pixels, EXIF_ISO)
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    if value is None:
        raise DataError(f"{path}: no ISO in the image's EXIF (pass --iso N instead of --iso exif)")
    try:
        return check_iso(value)
    except BadInputError as error:
        raise DataError(f"{path}: its EXIF ISO is unusable ({error})") from None


def exif_camera(path: str | Path, max_pixels: int = MAX_PIXELS) -> str:
    """The camera model an image's EXIF records (tag Model), stripped; raises naming the file when there is none."""
    value = _exif_tag(Path(path), max_pixels, EXIF_MODEL)
    name = value.strip("\0 ") if isinstance(value, str) else ""
    if not name:
        raise DataError(f"{path}: no camera model in the image's EXIF (pass --camera NAME)")
    try:
        return check_camera_name(name)
    except BadInputError as error:
        raise DataError(f"{path}: its EXIF camera model is unusable ({error}); pass --camera NAME") from None


def _exif_tag(path: Path, max_pixels: int, tag: int) -> object:
    """A tag of the image's EXIF, from the Exif sub-IFD or the main one; None when absent."""
    try:
        with open_image(path, max_pixels) as image:
            exif = image.getexif()
            return exif.get_ifd(EXIF_IFD).get(tag, exif.get(tag))
    except OSError as error:
        raise DataError(f"{path}: unreadable image ({error})") from None
