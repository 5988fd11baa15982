"""What a noise-model training reads from its data set: augmented training patches and the validation pairs,
both found in one pass over the data set's splits, with the checks a training needs before its first step."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from nmflowgan.data.folders import default_splits, find_pairs
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.data.plausibility import implausible_pairs
from nmflowgan.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """A training's data.

    Attributes:
        patches: the training split's augmented patches (their pairs are ``patches.records``).
        validation: the validation split's pairs (empty: the data set has no validation split).
        source: the data set folder, for messages.
    """

    patches: PatchDataset
    validation: list[PairRecord]
    source: Path

    @property
    def cameras(self) -> list[str]:
        """The training pairs' cameras, sorted."""
        return sorted({r.camera for r in self.patches.records})

    @property
    def isos(self) -> list[float]:
        """The training pairs' ISOs, ascending."""
        return sorted({float(r.iso) for r in self.patches.records})

    def fingerprint(self) -> dict:
        """What identifies this data, for a resumed run to check that it trains on what it started with: the number
        of training and validation pairs and a digest of each pair's files (names relative to the data set, so a
        moved data set still matches, and sizes), camera and ISO."""
        digest = hashlib.sha256()
        for split, pairs in (("train", self.patches.records), ("validation", self.validation)):
            for record in pairs:
                for path in (record.clean.resolve(), record.noisy.resolve()):
                    name = path.relative_to(self.source) if path.is_relative_to(self.source) else path
                    digest.update(f"{split}|{name}|{path.stat().st_size}|".encode())
                digest.update(f"{record.camera}|{float(record.iso)!r}\n".encode())
        return {"pairs": len(self.patches.records), "validation_pairs": len(self.validation),
                "digest": digest.hexdigest()[:16]}


def training_data(data: Path, split: str | None, val_split: str | None, patch_px: int, stride_px: int,
                  batch_size: int, seed: int = 0, skip_bad: bool = False, max_pixels: int = MAX_PIXELS
                  ) -> TrainingData:
    """The training patches and validation pairs of data set ``data`` (splits as given, else its defaults).

    A data set with fewer patches than one ``batch_size`` is refused, with both numbers; pairs whose noise no
    camera makes are named in a warning (:mod:`nmflowgan.data.plausibility`) and trained on as they are.
    """
    split, val_split = default_splits(data, split, val_split)
    records = find_pairs(data, split, skip_bad)
    conditions = sorted({(r.camera, float(r.iso)) for r in records})
    log.info("training on %d pairs%s, %d camera/ISO conditions: %s", len(records),
             f" (split {split})" if split else " (every pair of the data set)", len(conditions),
             describe_conditions(conditions))
    patches = PatchDataset(records, patch_px, stride_px, augment=True, seed=seed, skip_bad=skip_bad,
                           max_pixels=max_pixels)
    if len(patches) < batch_size:
        raise DataError(f"{data}: {len(patches)} training patches of {patch_px}x{patch_px} in {len(records)} pairs, "
                        f"fewer than one batch of {batch_size}; use more or larger images (train also takes a --config "
                        "with a smaller batch_size or patch_px)")
    implausible, checked = implausible_pairs(patches)
    if implausible:
        named = "; ".join(f"{record.noisy}: {why}" for record, why in implausible[:5])
        log.warning("%d of %d pairs checked hold noise no camera makes, and are trained on as they are: %s%s",
                    len(implausible), checked, named, " ..." if len(implausible) > 5 else "")
    validation = find_pairs(data, val_split, skip_bad) if val_split is not None else []
    return TrainingData(patches, validation, Path(data).resolve())


def validation_patches(pairs: list[PairRecord], patch_px: int, count: int, skip_bad: bool = False,
                       max_pixels: int = MAX_PIXELS) -> PatchBatch | None:
    """``count`` patches of ``patch_px`` spread evenly over ``pairs`` (not augmented); None for no pairs."""
    if not pairs:
        return None
    dataset = PatchDataset(pairs, patch_px, patch_px, skip_bad=skip_bad, max_pixels=max_pixels)
    return collate([dataset[i] for i in dataset.evenly_spaced(count)])


def describe_conditions(conditions: list[tuple[str, float]], most: int = 20) -> str:
    """``conditions`` (sorted ``(camera, ISO)``) in words: each one when there are at most ``most``, else the
    ISOs of each camera, and at most ``most`` cameras named."""
    if len(conditions) <= most:
        return ", ".join(f"{camera} ISO {iso:g}" for camera, iso in conditions)
    by_camera: dict[str, list[float]] = {}
    for camera, iso in conditions:
        by_camera.setdefault(camera, []).append(iso)
    described = [f"{camera} ISO {'/'.join(f'{iso:g}' for iso in isos)}" for camera, isos in by_camera.items()]
    more = len(described) - most
    return "; ".join(described[:most]) + (f"; and {more} more cameras" if more > 0 else "")
