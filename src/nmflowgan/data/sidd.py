"""SIDD: sRGB folder trees (Medium/Full) and the validation/benchmark blocks in MATLAB files.

A scene folder is named ``SSSS_NNN_CC_IIIII_EEEEE_TTTT_B``: instance, scene, camera, ISO, shutter,
illuminant temperature, brightness (L/N/H); it holds ``SSSS_GT_SRGB_010.PNG`` /
``SSSS_NOISY_SRGB_010.PNG`` and the second capture ``..._011.PNG``.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.data.pairs import PairRecord
from nmflowgan.errors import DataError

log = logging.getLogger(__name__)

# Instance, scene and ISO take their SIDD width or more digits (no leading zero beyond it), as the names are written:
# a simulator data set of more than 9,999 pairs numbers its instances from 10000 on.
FOLDER_PATTERN = re.compile(r"^(\d{4}|[1-9]\d{4,})_(\d{3}|[1-9]\d{3,})_([A-Z0-9]{2})_(\d{5}|[1-9]\d{5,})"
                            r"_(\d{5})_(\d{4})_([LNH])$")
CAPTURES = ("010", "011")
# The standard noise-model split of SIDD by instance id (as the NM-FlowGAN and Noise Flow papers use).
TRAIN_INSTANCES = frozenset((4, 11, 13, 17, 18, 20, 22, 23, 25, 27, 28, 29, 30, 34, 35, 39, 40, 42, 43, 44, 45,
                             47, 81, 86, 88, 90, 101, 102, 104, 105, 110, 111, 115, 116, 125, 126, 127, 129, 132,
                             135, 138, 140, 175, 177, 178, 179, 180, 181, 185, 186, 189, 192, 193, 194, 196, 197))
TEST_INSTANCES = frozenset((54, 55, 57, 59, 60, 62, 63, 66, 150, 151, 152, 154, 155, 159, 160, 161, 163, 164, 165,
                            166, 198, 199))
SPLITS = {"sidd-train": TRAIN_INSTANCES, "sidd-test": TEST_INSTANCES}
# A simcam test folder's further noisy draws of the same clean image are captures 012, 013... (three digits); the
# decorrelated oracle picks among at least two of them (one would be a second oracle).
FIRST_FURTHER_CAPTURE = 12
MIN_FURTHER_DRAWS = 2
MAX_FURTHER_DRAWS = 1000 - FIRST_FURTHER_CAPTURE


def further_capture(index: int) -> str:
    """The capture number (``"012"``, ``"013"``...) of further draw ``index`` (0-based)."""
    return f"{FIRST_FURTHER_CAPTURE + index:03d}"


@dataclass(frozen=True)
class SiddFolder:
    """The fields of a SIDD scene-folder name."""

    instance: int
    scene: int
    camera: str
    iso: int
    shutter: int
    illuminant: int
    brightness: str

    @property
    def name(self) -> str:
        return (f"{self.instance:04d}_{self.scene:03d}_{self.camera}_{self.iso:05d}_{self.shutter:05d}_"
                f"{self.illuminant:04d}_{self.brightness}")

    @classmethod
    def parse(cls, name: str) -> SiddFolder:
        """Parses a folder name; raises :class:`DataError` naming it when it does not fit the pattern."""
        match = FOLDER_PATTERN.match(name)
        if not match:
            raise DataError(f"{name!r} is not a SIDD folder name (expected SSSS_NNN_CC_IIIII_EEEEE_TTTT_B, "
                            "e.g. 0001_001_S6_00100_00060_3200_L)")
        instance, scene, camera, iso, shutter, illuminant, brightness = match.groups()
        if int(iso) == 0:
            raise DataError(f"{name!r}: ISO 00000 is not a valid ISO")
        return cls(int(instance), int(scene), camera, int(iso), int(shutter), int(illuminant), brightness)

    def pair_files(self, folder: Path, capture: str) -> tuple[Path, Path]:
        """``(clean, noisy)`` paths of capture ``"010"``, ``"011"`` (or a simcam test folder's further draws,
        ``"012"`` on) in ``folder``."""
        prefix = f"{self.instance:04d}"
        return folder / f"{prefix}_GT_SRGB_{capture}.PNG", folder / f"{prefix}_NOISY_SRGB_{capture}.PNG"


def is_sidd_tree(root: Path) -> bool:
    """Whether ``root`` (or its ``Data/`` sub-folder) holds at least one SIDD-named folder."""
    return any(FOLDER_PATTERN.match(p.name) for p in _scene_parent(root).iterdir() if p.is_dir())


def scan_sidd(root: str | Path, split: str | None = None, skip_bad: bool = False,
              oracle_capture: bool = False) -> list[PairRecord]:
    """Lists the pairs of a SIDD sRGB tree.

    Args:
        root: the folder holding the scene folders (or their parent ``Data/``).
        split: ``sidd-train`` / ``sidd-test`` for the standard instance split, or None for all.
        skip_bad: log and skip unparseable folders and folders with missing files instead of raising.
        oracle_capture: return only the ``010`` pair, with capture ``011`` as its oracle and the noisy captures
            ``012``, ``013``... that follow without a gap as its further oracle draws (simcam trees, whose captures
            share one clean image); otherwise both captures are pairs.

    Returns:
        The pairs, sorted by folder name then capture.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown SIDD split {split!r}; known: {', '.join(SPLITS)}")
    records = []
    for folder in sorted(p for p in _scene_parent(root).iterdir() if p.is_dir()):
        try:
            fields = SiddFolder.parse(folder.name)
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{folder}: {error}") from None
            log.warning("skipping folder: %s", error)
            continue
        if split is not None and fields.instance not in SPLITS[split]:
            continue
        found = [(capture, *fields.pair_files(folder, capture)) for capture in CAPTURES]
        found = [(capture, clean, noisy) for capture, clean, noisy in found if clean.exists() or noisy.exists()]
        if not found:
            error = DataError(f"{folder}: no {fields.instance:04d}_GT_SRGB_010.PNG / _NOISY_SRGB_010.PNG pair")
            if not skip_bad:
                raise error
            log.warning("skipping folder: %s", error)
            continue
        scene = f"{fields.scene:03d}"
        if oracle_capture:
            _, clean, noisy = found[0]
            oracle = fields.pair_files(folder, "011")[1]
            records.append(PairRecord(clean, noisy, fields.camera, fields.iso, scene,
                                      oracle if oracle.exists() else None, oracle_draws=_further_draws(fields, folder)))
        else:
            records += [PairRecord(clean, noisy, fields.camera, fields.iso, scene) for _, clean, noisy in found]
    return records


def _further_draws(fields: SiddFolder, folder: Path) -> tuple[Path, ...]:
    """The noisy captures ``012``, ``013``... of a simcam folder, up to the first one missing."""
    draws = []
    for index in range(MAX_FURTHER_DRAWS):
        path = fields.pair_files(folder, further_capture(index))[1]
        if not path.is_file():
            break
        draws.append(path)
    return tuple(draws)


def _scene_parent(root: Path) -> Path:
    data = root / "Data"
    return data if data.is_dir() else root


# ---- validation / benchmark blocks in .mat files -------------------------------------------------


def read_mat_array(path: str | Path, key: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Reads the one image array of a MATLAB file: v5 through scipy, v7.3 (HDF5) through h5py.

    h5py returns MATLAB arrays with their axes reversed; they are transposed back, so a
    ``40x32x256x256x3`` block array comes out with that shape either way. A file whose arrays hold more than
    ``max_pixels`` RGB pixels in all is refused from its header, before anything is read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .mat file")
    import h5py

    if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5 (scipy raises NotImplementedError on them)
        try:
            with h5py.File(path, "r") as handle:
                _refuse_large(path, [handle[k].shape for k in handle if isinstance(handle[k], h5py.Dataset)],
                              max_pixels)
                arrays = {k: np.asarray(handle[k]).transpose() for k in handle if isinstance(handle[k], h5py.Dataset)}
        except OSError as error:
            raise DataError(f"{path}: unreadable MATLAB v7.3 file ({error})") from None
    else:
        import scipy.io

        try:
            _refuse_large(path, [shape for _, shape, _ in scipy.io.whosmat(str(path))], max_pixels)
            contents = scipy.io.loadmat(str(path))
        except Exception as error:  # noqa: BLE001 - scipy's parser raises many kinds on a corrupt file
            raise DataError(f"{path}: unreadable .mat file ({type(error).__name__}: {error})") from None
        arrays = {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if key is not None:
        if key not in arrays:
            raise DataError(f"{path}: no variable {key!r}; found {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise DataError(f"{path}: expected one array variable, found {sorted(arrays)}; name one")
    return next(iter(arrays.values()))


def _refuse_large(path: Path, shapes: list[tuple[int, ...]], max_pixels: int) -> None:
    pixels = sum(math.prod(shape) for shape in shapes) // 3
    if pixels > max_pixels:
        raise DataError(f"{path}: holds {pixels:,} pixels, more than the limit of {max_pixels:,} (--max-pixels "
                        "raises it)")


@dataclass(frozen=True)
class SiddBlocks:
    """SIDD validation/benchmark blocks.

    Attributes:
        noisy, clean: ``uint8 (N_images, N_blocks, H, W, 3)``.
        cameras, isos: per image, when a metadata CSV gave them (else None).
    """

    noisy: np.ndarray
    clean: np.ndarray
    cameras: tuple[str, ...] | None = None
    isos: tuple[float, ...] | None = None


def load_sidd_blocks(noisy_mat: str | Path, clean_mat: str | Path, metadata_csv: str | Path | None = None,
                     max_pixels: int = MAX_PIXELS) -> SiddBlocks:
    """Loads ``ValidationNoisyBlocksSrgb.mat`` / ``ValidationGtBlocksSrgb.mat`` (or the benchmark's).

    Args:
        metadata_csv: optional CSV with columns ``image,camera,iso`` (``image`` is the 0-based row of the
            block array), giving each image's camera and ISO.
        max_pixels: the most pixels each file may hold (all blocks together).
    """
    noisy, clean = read_mat_array(noisy_mat, max_pixels=max_pixels), read_mat_array(clean_mat, max_pixels=max_pixels)
    for path, array in ((noisy_mat, noisy), (clean_mat, clean)):
        if array.dtype != np.uint8 or array.ndim != 5 or array.shape[-1] != 3:
            raise DataError(f"{path}: expected uint8 blocks (images, blocks, H, W, 3), got {array.dtype}{array.shape}")
    if noisy.shape != clean.shape:
        raise DataError(f"{noisy_mat}: shape {noisy.shape} does not match {clean_mat} {clean.shape}")
    if metadata_csv is None:
        return SiddBlocks(noisy, clean)
    cameras: dict[int, str] = {}
    isos: dict[int, float] = {}
    with open(metadata_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or set(reader.fieldnames) != {"image", "camera", "iso"}:
            raise DataError(f"{metadata_csv}: expected the columns image,camera,iso, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                index, iso = int(row["image"]), float(row["iso"])
            except (TypeError, ValueError):
                raise DataError(f"{metadata_csv}:{line}: image and iso must be numbers, got {row}") from None
            cameras[index], isos[index] = row["camera"], iso
    missing = sorted(set(range(noisy.shape[0])) - set(cameras))
    if missing:
        raise DataError(f"{metadata_csv}: no camera/ISO for image rows {missing[:10]}")
    return SiddBlocks(noisy, clean, tuple(cameras[i] for i in range(noisy.shape[0])),
                      tuple(isos[i] for i in range(noisy.shape[0])))
