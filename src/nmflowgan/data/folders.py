"""Any paired folder described by a ``metadata.csv``, and the one function that finds the pairs of a data set.

``metadata.csv`` has exactly the columns ``clean,noisy,camera,iso`` (an optional ``scene`` column keeps
scenes apart); paths are relative to the folder and may not point outside it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from nmflowgan.conditions import check_camera_name
from nmflowgan.data.pairs import PairRecord
from nmflowgan.data.sidd import SPLITS, is_sidd_tree, scan_sidd
from nmflowgan.errors import BadInputError, DataError

METADATA_FILE = "metadata.csv"
REQUIRED_COLUMNS = ("clean", "noisy", "camera", "iso")
OPTIONAL_COLUMNS = ("scene",)
SIMCAM_FILE = "simcam.json"


def read_metadata(path: str | Path) -> list[PairRecord]:
    """Reads a ``metadata.csv``; every error names the file and the line."""
    path = Path(path)
    root = path.parent.resolve()
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which is not a column name
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    records = []
    with handle:
        reader = csv.DictReader(handle)
        try:
            columns = reader.fieldnames or []
            rows = list(enumerate(reader, start=2))
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from None
        except csv.Error as error:
            raise DataError(f"{path}: malformed CSV ({error})") from None
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise DataError(f"{path}: the header names {', '.join(repeated)} more than once")
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if unknown or missing:
            raise DataError(f"{path}: unknown columns {unknown} / missing columns {missing}; expected "
                            f"{','.join(REQUIRED_COLUMNS)} (and optionally {','.join(OPTIONAL_COLUMNS)})")
        for line, row in rows:
            if None in row or any(row[c] is None for c in REQUIRED_COLUMNS):
                raise DataError(f"{path}:{line}: expected {len(columns)} fields, got a different number")
            try:
                iso = float(row["iso"])
            except ValueError:
                raise DataError(f"{path}:{line}: iso {row['iso']!r} is not a number") from None
            if not iso > 0 or iso == float("inf"):
                raise DataError(f"{path}:{line}: iso {row['iso']!r} is not a positive finite number")
            camera = row["camera"].strip()
            if not camera:
                raise DataError(f"{path}:{line}: empty camera code")
            try:
                check_camera_name(camera)
            except BadInputError as error:
                raise DataError(f"{path}:{line}: {error}") from None
            clean, noisy = (_inside(root, row[c], path, line) for c in ("clean", "noisy"))
            records.append(PairRecord(clean, noisy, camera, iso, row.get("scene") or str(clean)))
    if not records:
        raise DataError(f"{path}: no pairs listed")
    return records


def _inside(root: Path, relative: str, path: Path, line: int) -> Path:
    if "\0" in relative:
        raise DataError(f"{path}:{line}: the path {relative!r} contains a NUL byte")
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(root):
        raise DataError(f"{path}:{line}: {relative!r} points outside the data set folder {root}")
    return candidate


DEFAULT_SPLITS = {"metadata": (None, None), "train-test": ("train", "test"), "sidd": (None, None)}


def layout(data: str | Path) -> str:
    """Which kind of data set ``data`` is: ``metadata`` (a metadata.csv folder), ``train-test`` (``train/`` and
    ``test/`` sub-folders, each a SIDD-layout tree as ``nmflowgan simulate`` writes, or each a metadata.csv
    folder) or ``sidd`` (a SIDD sRGB tree)."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (root / METADATA_FILE).is_file():
        return "metadata"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "train-test"
    if is_sidd_tree(root):
        return "sidd"
    raise DataError(f"{root}: not a data set (no metadata.csv, no train/ and test/, no SIDD folders)")


def find_pairs(data: str | Path, split: str | None = None, skip_bad: bool = False) -> list[PairRecord]:
    """The pairs of a data set, whatever its :func:`layout`.

    Args:
        data: a folder with ``metadata.csv``; a folder with ``train/`` and ``test/`` sub-folders, each a tree
            in the SIDD layout (what ``nmflowgan simulate`` writes) or a ``metadata.csv`` folder; or a SIDD
            sRGB tree.
        split: ``train`` / ``test`` for a folder with those sub-folders; ``sidd-train`` / ``sidd-test`` (or
            None for every instance) for a SIDD tree.
        skip_bad: log and skip unusable folders instead of raising.

    Returns:
        The pairs; simcam trees give each pair its oracle (the second independent noisy draw).
    """
    root = Path(data)
    kind = layout(root)
    if kind == "metadata":
        if split is not None:
            raise DataError(f"{root}: a metadata.csv folder has no splits; got --split {split}")
        return read_metadata(root / METADATA_FILE)
    if kind == "train-test":
        if split not in ("train", "test", "val") or (split == "val" and not (root / "val").is_dir()):
            raise DataError(f"{root}: has train/ and test/{' and val/' if (root / 'val').is_dir() else ''}; choose "
                            f"--split train or test, got {split!r}")
        if (root / split / METADATA_FILE).is_file():
            return read_metadata(root / split / METADATA_FILE)
        return scan_sidd(root / split, skip_bad=skip_bad, oracle_capture=(root / SIMCAM_FILE).is_file())
    if split is not None and split not in SPLITS:
        raise DataError(f"{root}: a SIDD tree takes --split {' or '.join(SPLITS)}, got {split!r}")
    return scan_sidd(root, split, skip_bad=skip_bad)


def default_splits(data: str | Path, split: str | None, val_split: str | None) -> tuple[str | None, str | None]:
    """``(training split, validation split)``, each as given or the data set's default: ``train``/``test``
    for a folder with both, none for a metadata.csv folder.

    A tree in SIDD's layout may be any data set (``nmflowgan simulate`` writes one into ``train/`` and
    ``test/``), so SIDD's standard split by instance id is applied only where asked: by default every pair of
    the tree is used; naming one half (``sidd-train`` or ``sidd-test``) makes the other half the default of
    the other split."""
    if layout(data) == "sidd":
        halves = {"sidd-train": "sidd-test", "sidd-test": "sidd-train"}
        return split or halves.get(val_split or ""), val_split or halves.get(split or "")
    default_train, default_val = DEFAULT_SPLITS[layout(data)]
    return split or default_train, val_split or default_val
