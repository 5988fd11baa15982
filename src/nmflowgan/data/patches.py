"""Paired patches cut on a grid, read lazily, augmented deterministically.

A :class:`PatchDataset` indexes every ``patch_px`` window on a ``stride_px`` grid of every pair. Images
are decoded on demand and kept in a small per-process LRU cache, so a data set of any size is never held
in memory and DataLoader workers each keep their own cache. Augmentation (the 8 symmetries of the square, or
only the 4 flips that keep rows as rows) is a pure function of ``(seed, epoch, index)``: the same patch comes out
whatever the worker, the order or a resume.

Each patch carries its pixels' positions in the camera's 8x8 grid (full-frame ``y`` and ``x`` modulo 8), cut and
flipped or rotated with the pixels, so a model that reads the grid sees every pixel where the camera had it, and
the symmetry it was given, so that what is fitted to the noise's spatial correlation can turn it back.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nmflowgan.conditions import grid_positions
from nmflowgan.config import AUGMENTATIONS
from nmflowgan.data.io import MAX_PIXELS, read_rgb
from nmflowgan.data.pairs import PairRecord, checked
from nmflowgan.data.symmetries import ROW_KEEPING, oriented
from nmflowgan.errors import DataError


@dataclass(frozen=True)
class PatchBatch:
    """A batch of paired patches.

    Attributes:
        clean, noisy: ``uint8 (B, 3, P, P)``, 0-255.
        cameras: camera code per patch; isos: ``(B,)`` float ISOs.
        oracle: ``uint8 (B, 3, P, P)`` second noisy draw (simcam only), else None.
        oracle_draws: ``uint8 (B, K, 3, P, P)`` further independent noisy draws (a simcam test set written with
            ``--oracle-draws``, every patch with the same K), else None.
        grid: ``uint8 (B, 2, P, P)`` each pixel's row and column in the camera's 8x8 grid
            (:attr:`~nmflowgan.conditions.Condition.grid`); None: each patch from the frame's origin, upright.
        symmetries: ``(B,)`` the symmetry each patch was given (:mod:`~nmflowgan.data.symmetries`); None: none.
        real: ``(B,)`` bool, whether the patch's noisy partner is a real capture (False for a clean-only image,
            whose ``noisy`` is its clean); None: all are.
    """

    clean: torch.Tensor
    noisy: torch.Tensor
    cameras: list[str]
    isos: torch.Tensor
    oracle: torch.Tensor | None = None
    grid: torch.Tensor | None = None
    symmetries: torch.Tensor | None = None
    real: torch.Tensor | None = None
    oracle_draws: torch.Tensor | None = None

    def subset(self, indices: Sequence[int]) -> PatchBatch:
        """The patches at ``indices``, in that order."""
        def pick(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[list(indices)]
        return PatchBatch(pick(self.clean), pick(self.noisy), [self.cameras[i] for i in indices], pick(self.isos),
                          pick(self.oracle), pick(self.grid), pick(self.symmetries), pick(self.real),
                          pick(self.oracle_draws))


class PatchDataset(Dataset):
    """Patches of a list of pairs.

    Args:
        records: the pairs; sizes are read from the headers once.
        patch_px, stride_px: window size and grid stride (96/48 by default, as the official code).
        augment: a random symmetry per patch: ``"all"`` (True) the 8 symmetries of the square (flips and quarter
            turns), ``"flips"`` the 4 that keep rows as rows (none, either flip, both), ``"none"`` (False) none.
        seed: the augmentation seed; :meth:`set_epoch` changes it per epoch.
        skip_bad: drop unusable pairs (logged) instead of raising.
        with_oracle: also read each pair's oracle image and further oracle draws (evaluation); training does not
            need them.
        cache_mb: decoded images kept per process, in megabytes (least recently used are dropped).
        max_pixels: the largest image accepted (checked from each header before decoding).
    """

    def __init__(self, records: Sequence[PairRecord], patch_px: int = 96, stride_px: int = 48,
                 augment: bool | str = False, seed: int = 0, skip_bad: bool = False, with_oracle: bool = False,
                 cache_mb: float = 1024, max_pixels: int = MAX_PIXELS) -> None:
        augment = {True: "all", False: "none"}.get(augment, augment)
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.patch_px, self.stride_px, self.augment, self.seed = patch_px, stride_px, augment, seed
        self.max_pixels = max_pixels
        self.epoch = 0
        self.records: list[PairRecord] = []
        self.grids: list[tuple[int, int]] = []  # patches per column and per row of each pair
        self.tops: list[int] = []  # the first image row of each pair's patches (its band's top, else 0)
        self.starts = [0]
        for record, (height, width) in checked(records, skip_bad, max_pixels):
            top, bottom = record.rows or (0, height)
            if not 0 <= top < bottom <= height:
                raise DataError(f"{record.clean}: rows {top}-{bottom} are not inside its {height} rows")
            if bottom - top < patch_px or width < patch_px:
                raise DataError(f"{record.clean}: {width}x{bottom - top}"
                                f"{'' if record.rows is None else f' (rows {top}-{bottom})'} is smaller than the "
                                f"{patch_px}px patch")
            rows, cols = (bottom - top - patch_px) // stride_px + 1, (width - patch_px) // stride_px + 1
            self.records.append(record)
            self.tops.append(top)
            self.grids.append((rows, cols))
            self.starts.append(self.starts[-1] + rows * cols)
        if not self.records:
            raise DataError("no usable image pairs")
        self.with_oracle = with_oracle
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def __len__(self) -> int:
        return self.starts[-1]

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentations of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def evenly_spaced(self, count: int) -> list[int]:
        """At most ``count`` patch indices spread evenly over the whole data set (a fixed subset)."""
        return evenly_spaced(len(self), count)


    def locate(self, index: int) -> tuple[PairRecord, int, int]:
        """The pair and the top-left ``(y, x)`` of patch ``index``."""
        pair = bisect.bisect_right(self.starts, index) - 1
        columns = self.grids[pair][1]
        offset = index - self.starts[pair]
        y = self.tops[pair] + (offset // columns) * self.stride_px
        return self.records[pair], y, (offset % columns) * self.stride_px

    def _image(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = read_rgb(path, self.max_pixels)
        self._cache[path] = image
        self._cached_bytes += image.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return image

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Patch ``key``: an index (augmented for the current epoch) or an ``(index, epoch)`` pair."""
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(index)
        record, y, x = self.locate(index)
        window = np.s_[y : y + self.patch_px, x : x + self.patch_px]
        oracle = self.with_oracle and record.oracle is not None
        draws = list(record.oracle_draws) if self.with_oracle else []
        paths = [record.clean, record.noisy] + ([record.oracle] if oracle else []) + draws
        crops = [self._image(p)[window] for p in paths] + [grid_window(y, x, self.patch_px)]
        code = 0
        if self.augment == "all":
            code = int(np.random.default_rng([self.seed, epoch, index]).integers(8))
        elif self.augment == "flips":
            code = ROW_KEEPING[int(np.random.default_rng([self.seed, epoch, index]).integers(4))]
        tensors = [torch.from_numpy(oriented(c, code).copy()).permute(2, 0, 1) for c in crops]
        item = {"clean": tensors[0], "noisy": tensors[1], "camera": record.camera, "iso": float(record.iso),
                "grid": tensors[-1], "symmetry": code, "real": not record.clean_only}
        if oracle:
            item["oracle"] = tensors[2]
        if draws:
            item["oracle_draws"] = torch.stack(tensors[2 + oracle : 2 + oracle + len(draws)])
        return item


def grid_window(y: int, x: int, size: int) -> np.ndarray:
    """``uint8 (size, size, 2)``: :func:`~nmflowgan.conditions.grid_positions` of the ``size`` window whose top-left
    pixel is ``(y, x)`` of the frame, channels last (as an image crop, so that it is augmented as one)."""
    return grid_positions(1, size, size, y, x)[0].permute(1, 2, 0).to(torch.uint8).numpy()


def collate(items: list[dict]) -> PatchBatch:
    """Stacks dataset items into a :class:`PatchBatch` (the DataLoader's ``collate_fn``)."""
    oracle = torch.stack([i["oracle"] for i in items]) if all("oracle" in i for i in items) else None
    draws = [i.get("oracle_draws") for i in items]
    same_draws = all(d is not None and d.shape == draws[0].shape for d in draws)
    return PatchBatch(
        clean=torch.stack([i["clean"] for i in items]),
        noisy=torch.stack([i["noisy"] for i in items]),
        cameras=[i["camera"] for i in items],
        isos=torch.tensor([i["iso"] for i in items], dtype=torch.float64),
        oracle=oracle,
        grid=torch.stack([i["grid"] for i in items]) if all("grid" in i for i in items) else None,
        symmetries=torch.tensor([i["symmetry"] for i in items]) if all("symmetry" in i for i in items) else None,
        real=torch.tensor([i["real"] for i in items]) if all("real" in i for i in items) else None,
        oracle_draws=torch.stack(draws) if same_draws else None,
    )


def evenly_spaced(length: int, count: int) -> list[int]:
    """At most ``count`` indices spread evenly over ``range(length)``, the first and the last included."""
    count = min(length, count)
    return torch.linspace(0, length - 1, count).round().long().unique().tolist() if count > 0 else []
