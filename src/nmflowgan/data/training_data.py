"""What a training reads from its data set: augmented training patches and the validation pairs, both found in one
pass over the data set's splits, with the checks a training needs before its first step.

Validation never reads the test split, which is ``evaluate``'s alone: a training validates on the ``--val-split``
it is given, else on a ``val/`` folder beside ``train/``, else on pairs held out of its training split
(:func:`held_out`). Those are whole scenes (:data:`HELD_OUT_SHARE` of them, chosen by a hash of the scene's name, so
the same on every run) where the split has at least :data:`MIN_SCENES_PER_CAMERA` scenes per camera, and otherwise
the bottom band of every pair that is at least four patches high (:func:`held_out_strips`; whole scenes again when
none is): with 5 pairs per camera, the tenth of the scenes held out of polyu was 2 pairs that represented its
cameras so badly that the step picked on them was the untrained start (test KLD 0.138, against 0.077 for the step
picked on strips and 0.071 for the last step; docs/adapt.md). A single ``metadata.csv`` folder, which has no
splits, trains on every pair and validates on none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from nmflowgan.data.folders import default_splits, find_pairs, layout
from nmflowgan.data.io import MAX_PIXELS, image_size
from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.patches import PatchBatch, PatchDataset, collate
from nmflowgan.data.plausibility import implausible_pairs
from nmflowgan.errors import DataError

log = logging.getLogger(__name__)
HELD_OUT = "held-out"  # the validation split of scenes held out of the training split
HELD_OUT_SHARE = 0.1
# Scenes per camera below which whole scenes are not held out (strips are): polyu's 5-pair subsets (5 per camera)
# validated on held-out scenes picked the untrained start; its whole training split (15 per camera) did not.
MIN_SCENES_PER_CAMERA = 10
STRIP_SHARE = 1 / 8  # the bottom eighth of each pair's rows (at least a patch), 8-aligned


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
                band = "" if record.rows is None else f"|rows {record.rows[0]}-{record.rows[1]}"
                digest.update(f"{record.camera}|{float(record.iso)!r}{band}\n".encode())
        return {"pairs": len(self.patches.records), "validation_pairs": len(self.validation),
                "digest": digest.hexdigest()[:16]}


def training_data(data: Path, split: str | None, val_split: str | None, patch_px: int, stride_px: int,
                  batch_size: int, seed: int = 0, skip_bad: bool = False, max_pixels: int = MAX_PIXELS,
                  augment: str = "all") -> TrainingData:
    """The training patches and validation pairs of data set ``data`` (splits as given, else its defaults), the
    patches augmented by ``augment`` (:class:`~nmflowgan.data.patches.PatchDataset`).

    A data set with fewer patches than one ``batch_size`` is refused, with both numbers; pairs whose noise no
    camera makes are named in a warning (:mod:`nmflowgan.data.plausibility`) and trained on as they are.
    """
    split, _ = default_splits(data, split, None)  # the training half; validation is chosen below
    val_split = validation_split(data, split, val_split)
    records = find_pairs(data, split, skip_bad)
    validation: list[PairRecord] = []
    source = f"split {split}" if split else "every pair of the data set"
    if val_split == HELD_OUT:
        records, validation, held = held_out(records, patch_px, max_pixels)
        source += f" less {held}" if validation else ""
    elif val_split is not None:
        validation = find_pairs(data, val_split, skip_bad)
    conditions = sorted({(r.camera, float(r.iso)) for r in records})
    log.info("training on %d pairs (%s), %d camera/ISO conditions: %s", len(records), source, len(conditions),
             describe_conditions(conditions))
    patches = PatchDataset(records, patch_px, stride_px, augment=augment, seed=seed, skip_bad=skip_bad,
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
    return TrainingData(patches, validation, Path(data).resolve())


def validation_split(data: Path, split: str | None, val_split: str | None) -> str | None:
    """The split a training on ``split`` validates on: ``val_split`` when named, else ``val`` where the data set has
    a ``val/`` folder, else :data:`HELD_OUT` scenes of the training split (a data set with a test split or in SIDD's
    layout), else None (a single metadata.csv folder)."""
    if val_split is not None:
        return val_split
    kind = layout(data)
    if kind == "train-test" and (Path(data) / "val").is_dir():
        return "val"
    return HELD_OUT if kind in ("train-test", "sidd") else None


def held_out_scenes(records: list[PairRecord], share: float = HELD_OUT_SHARE
                    ) -> tuple[list[PairRecord], list[PairRecord]]:
    """``(training pairs, validation pairs)``: every pair of ``share`` of the scenes (at least one, never all) goes to
    validation, the scenes chosen by a hash of their names; with one scene there is no validation."""
    scenes = sorted({r.scene for r in records}, key=lambda scene: hashlib.sha256(scene.encode()).hexdigest())
    if len(scenes) < 2:
        log.warning("one scene only: no scene can be held out of training for validation; validation is skipped")
        return records, []
    held = set(scenes[: min(len(scenes) - 1, max(1, round(share * len(scenes))))])
    return [r for r in records if r.scene not in held], [r for r in records if r.scene in held]


def held_out(records: list[PairRecord], patch_px: int, max_pixels: int = MAX_PIXELS
             ) -> tuple[list[PairRecord], list[PairRecord], str]:
    """``(training pairs, validation pairs, what was held out)``: :func:`held_out_strips` below
    :data:`MIN_SCENES_PER_CAMERA` scenes per camera where any pair has rows to give, else :func:`held_out_scenes`."""
    scenes_per_camera = scenes_by_camera(records)
    if scenes_per_camera < MIN_SCENES_PER_CAMERA:
        training, validation = held_out_strips(records, patch_px, max_pixels)
        if validation:  # pairs under four patches high give no rows: whole scenes are held out then
            log.info("validating on the bottom rows of %d training pairs (%.1f scenes per camera are too few to hold "
                     "whole scenes out)", len(validation), scenes_per_camera)
            return training, validation, "the bottom rows of each pair, held out for validation"
    training, validation = held_out_scenes(records)
    scenes = len({r.scene for r in validation})
    log.info("validating on %d pairs of %d scene(s) held out of the training split", len(validation), scenes)
    return training, validation, f"{scenes} scene(s) held out for validation"


def scenes_by_camera(records: list[PairRecord]) -> float:
    """The number of distinct scenes each camera of ``records`` has, averaged over the cameras (0 for none)."""
    scenes: dict[str, set[str]] = {}
    for record in records:
        scenes.setdefault(record.camera, set()).add(record.scene)
    return sum(map(len, scenes.values())) / max(1, len(scenes))


def held_out_strips(records: list[PairRecord], patch_px: int, max_pixels: int = MAX_PIXELS
                    ) -> tuple[list[PairRecord], list[PairRecord]]:
    """``(training pairs, validation pairs)``: each pair split into its top rows, to train on, and its bottom rows
    (:data:`STRIP_SHARE` of them, at least ``patch_px``), to validate on, cut on a row that is a multiple of 8 so
    that both keep their pixels' places in the camera's grids. Every camera and ISO is validated on, and no pixel
    is in both. A pair whose band would take more than a quarter of its rows (one under four patches high) is
    trained on whole: it has too little to give."""
    training, validation = [], []
    for record in records:
        height = image_size(record.clean, max_pixels)[0]
        band = max(patch_px, round(height * STRIP_SHARE))
        if band > height // 4:
            training.append(record)
            continue
        cut = (height - band) // 8 * 8
        training.append(dataclasses.replace(record, rows=(0, cut)))
        validation.append(dataclasses.replace(record, rows=(cut, height)))
    return training, validation


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
