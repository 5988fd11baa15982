"""Writes a simcam data set: ``train/``, ``test/`` and (with enough scenes) ``val/`` trees in the SIDD layout plus
``simcam.json``.

Every (scene, camera, ISO) is one SIDD folder. Capture ``010`` is the clean image and one noisy draw;
capture ``011`` is the same clean image with a second, independent draw: the oracle of evaluation.
With ``burst_frames`` N, every ``train`` folder also gets a burst in ``bursts/<folder>/``: N independent noisy
frames of the same scene (frames 0 and 1 are captures 010 and 011), PNG with the camera and ISO in their EXIF, as a
tripod burst would give; the clean image of ``train/`` is then its known truth.
With ``oracle_draws`` K, every ``test`` folder also holds K further independent noisy captures of its clean image
(``SSSS_NOISY_SRGB_012.PNG`` onwards, no clean partner of their own): evaluation builds the decorrelated oracle
from them (:func:`~nmflowgan.noise_sources.decorrelated_oracle_noise`).
Scenes in ``train``, ``val`` and ``test`` are disjoint (a bundled photo only ever lands in one of them).
The whole tree is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nmflowgan import __version__
from nmflowgan.atomic import write_text
from nmflowgan.data.io import EXIF_IFD, EXIF_ISO, EXIF_MODEL, write_png
from nmflowgan.data.sidd import MAX_FURTHER_DRAWS, MIN_FURTHER_DRAWS, SiddFolder, further_capture
from nmflowgan.data.simcam.camera import ISO_RANGE, VirtualCamera, builtin_cameras, camera_population, scene_tensor
from nmflowgan.data.simcam.scenes import available_photos, make_scene
from nmflowgan.errors import BadInputError
from nmflowgan.outputs import check_output_folder
from nmflowgan.progress import progress as progress_bar
from nmflowgan.seeds import checked_seed

log = logging.getLogger(__name__)

FORMAT = "nmflowgan-simcam"
DEFAULT_ISOS = (100, 400, 1600, 3200)
TEST_EVERY = 4  # every 4th procedural scene and every 4th photo goes to the test split
# every 4th procedural scene not in test goes to val, the pairs a training picks its best step on (never test's)
VAL_EVERY = 4
SPLITS = ("train", "val", "test")
BURSTS = "bursts"
MIN_BURST_FRAMES = 2
# The procedural kinds in the order a split receives them: the richest content first, flat patches last (the smooth
# areas of every other kind stand in for them), so that a split of three procedural scenes misses flat patches only.
SPLIT_KIND_ORDER = ("dead_leaves", "texture", "gradients", "flat_patches")


@dataclass(frozen=True)
class SceneSpec:
    """One scene of a simcam data set: ``kind`` drawn with ``seed``, in ``split``."""

    index: int
    kind: str
    seed: int
    split: str


def plan_scenes(count: int, seed: int, photos: Sequence[str]) -> list[SceneSpec]:
    """Alternates bundled photos and procedural scenes. Splits by position, so that no photo is in two splits, then
    cycles the procedural kinds within each split, so that every split holds every kind its number of procedural
    scenes allows (kinds cycled over all positions would fall into the splits by the splits' own period: test/
    once held only flat patches and textures, train/ only dead leaves and gradients)."""
    kinds: list[str | None] = []
    splits: list[str] = []
    for index in range(count):
        if photos and index % 2 == 0:
            photo_index = (index // 2) % len(photos)
            kinds.append(f"photo:{photos[photo_index]}")
            test = photo_index % TEST_EVERY == TEST_EVERY - 1
        else:
            kinds.append(None)  # procedural: its kind is picked below, once its split is known
            test = index % TEST_EVERY == TEST_EVERY - 1
        splits.append("test" if test else "train")
    if count >= 2 and all(split == "train" for split in splits):
        splits[-1] = "test"
    procedural = [i for i in range(count) if splits[i] == "train" and kinds[i] is None]
    for i in procedural[VAL_EVERY - 1 :: VAL_EVERY]:  # photos stay out: one photo may recur among the scenes
        splits[i] = "val"
    in_split = dict.fromkeys(SPLITS, 0)
    for i in range(count):
        if kinds[i] is None:
            kinds[i] = SPLIT_KIND_ORDER[in_split[splits[i]] % len(SPLIT_KIND_ORDER)]
            in_split[splits[i]] += 1
    return [SceneSpec(i, str(kinds[i]), int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), splits[i])
            for i in range(count)]


def camera_by_code(codes: Sequence[str] | None, population: int = 0, seed: int = 0) -> list[VirtualCamera]:
    """The built-in cameras named by ``codes`` (all five when None; none when ``codes`` is empty), followed by
    ``population`` cameras drawn by :func:`~nmflowgan.data.simcam.camera.camera_population` from ``seed``."""
    if population < 0:
        raise BadInputError(f"a camera population cannot be negative, got {population}")
    drawn = list(camera_population(population, seed))
    if codes is not None and not codes and not drawn:
        raise BadInputError("no cameras: name built-in cameras or draw a population")
    return _builtin_by_code(codes) + drawn


def _builtin_by_code(codes: Sequence[str] | None) -> list[VirtualCamera]:
    cameras = {c.code: c for c in builtin_cameras()}
    if codes is None:
        return list(cameras.values())
    unknown = [c for c in codes if c not in cameras]
    if unknown:
        raise BadInputError(f"unknown simcam camera(s) {unknown}; built-in: {', '.join(cameras)}")
    repeated = sorted({c for c in codes if list(codes).count(c) > 1})
    if repeated:
        raise BadInputError(f"simcam camera(s) {repeated} named more than once; name each camera once")
    return [cameras[c] for c in codes]


def noise_seed(seed: int, scene: int, camera: int, iso: float) -> int:
    return int(np.random.SeedSequence([seed, scene, camera, int(round(iso))]).generate_state(1)[0])


def simulate(out: str | Path, cameras: Sequence[str] | None = None, isos: Sequence[float] = DEFAULT_ISOS,
             scenes: int = 20, size_px: int = 512, seed: int = 0, overwrite: bool = False,
             progress: bool = True, population: int = 0, burst_frames: int = 0, oracle_draws: int = 0) -> Path:
    """Generates a simcam data set.

    Args:
        out: the folder to create (refused if it exists, unless ``overwrite``).
        cameras: built-in camera codes (default: all five; ``[]``: none, with a population).
        isos: ISOs in 50-12800.
        scenes: number of scenes; about a quarter go to ``test``, one procedural scene in 4 of the rest to ``val``.
        size_px: side of each square scene (rounded down to even).
        seed: the whole data set is a pure function of its arguments.
        population: this many more cameras, drawn across the simulator's parameter space from ``seed``
            (codes ``A0, A1, ...``; see :func:`~nmflowgan.data.simcam.camera.random_camera`).
        burst_frames: 0, or N >= 2 noisy frames per ``train`` folder written as a burst into ``bursts/``.
        oracle_draws: 0, or K >= 2 further noisy captures in every ``test`` folder (the decorrelated oracle's).

    Returns:
        ``out``.
    """
    out = Path(out)
    seed = checked_seed(seed)
    chosen = camera_by_code(cameras, population, seed)
    isos = sorted({float(i) for i in isos})
    bad = [i for i in isos if not ISO_RANGE[0] <= i <= ISO_RANGE[1]]
    if bad:
        raise BadInputError(f"simcam ISOs must lie in {ISO_RANGE[0]:g}-{ISO_RANGE[1]:g}, got {bad}")
    if scenes < 2:
        raise BadInputError(f"simcam needs at least 2 scenes (one for train, one for test), got {scenes}")
    if size_px < 32:
        raise BadInputError(f"simcam scenes must be at least 32 px, got {size_px}")
    if burst_frames and burst_frames < MIN_BURST_FRAMES:
        raise BadInputError(f"a simcam burst needs at least {MIN_BURST_FRAMES} frames, got {burst_frames}")
    if oracle_draws and not MIN_FURTHER_DRAWS <= oracle_draws <= MAX_FURTHER_DRAWS:
        raise BadInputError(f"the decorrelated oracle needs {MIN_FURTHER_DRAWS} to {MAX_FURTHER_DRAWS} further draws, "
                            f"got {oracle_draws}")
    size_px = size_px // 2 * 2  # the Bayer mosaic wants an even side
    check_output_folder(out, "a simcam data set", is_simcam_set, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write(staging, chosen, isos, scenes, size_px, seed, progress, burst_frames, oracle_draws)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never a staging folder left behind, whatever stopped the work
        raise
    return out


def is_simcam_set(folder: Path) -> bool:
    """Whether ``folder`` is a data set :func:`simulate` wrote: its ``simcam.json`` and split folders, nothing else."""
    try:
        meta = json.loads((folder / "simcam.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(meta, dict) and meta.get("format") == FORMAT
            and {p.name for p in folder.iterdir()} <= {"simcam.json", BURSTS, *SPLITS})


def _write(staging: Path, chosen: list[VirtualCamera], isos: list[float], scenes: int, size_px: int, seed: int,
           progress: bool, burst_frames: int = 0, oracle_draws: int = 0) -> None:
    """Writes the whole data set into ``staging``."""
    specs = plan_scenes(scenes, seed, available_photos())
    for split in SPLITS:
        if split != "val" or any(s.split == "val" for s in specs):
            (staging / split).mkdir(parents=True)

    total = len(specs) * len(chosen) * len(isos)
    instance = 0
    with progress_bar(enabled=progress, total=total, desc="simulate", unit="img") as bar:
        for spec in specs:
            scene = scene_tensor(make_scene(spec.kind, spec.seed, size_px))
            brightness = "L" if scene.float().mean() < 70 else ("H" if scene.float().mean() > 170 else "N")
            for camera_index, camera in enumerate(chosen):
                raw = camera.unprocess(scene)  # shared by every ISO of this camera
                for iso in isos:
                    instance += 1
                    generator = torch.Generator().manual_seed(noise_seed(seed, spec.index, camera_index, iso))
                    bursts = burst_frames if spec.split == "train" else 0
                    further = oracle_draws if spec.split == "test" else 0
                    # the first two draws are the same whatever follows them: bursts and further draws leave the
                    # pair and its oracle as they were
                    clean, noisy = camera.capture_raw(raw, iso, max(2, bursts, 2 + further), generator)
                    fields = SiddFolder(instance, spec.index + 1, camera.code, int(round(iso)),
                                        min(99999, int(round(4e5 / iso))), 5500, brightness)
                    folder = staging / spec.split / fields.name
                    folder.mkdir()
                    for capture, draw in (("010", noisy[0]), ("011", noisy[1])):
                        clean_path, noisy_path = fields.pair_files(folder, capture)
                        write_png(clean_path, clean)
                        write_png(noisy_path, draw)
                    for index in range(further):
                        write_png(fields.pair_files(folder, further_capture(index))[1], noisy[2 + index])
                    if bursts:
                        _write_burst(staging / BURSTS / fields.name, noisy, camera.code, iso)
                    bar.update()
    meta = {
        "format": FORMAT, "version": __version__, "seed": seed, "size_px": size_px,
        "isos": isos, "cameras": [c.to_dict() for c in chosen],
        "scenes": [{"index": s.index, "kind": s.kind, "seed": s.seed, "split": s.split} for s in specs],
        "captures": {"010": "clean + noisy draw 1", "011": "the same clean + independent noisy draw 2"},
        "burst_frames": burst_frames, "oracle_draws": oracle_draws,
    }
    write_text(staging / "simcam.json", json.dumps(meta, indent=2) + "\n")
    log.info("simcam: wrote %d pairs (%d scenes x %d cameras x %d ISOs)", total, len(specs), len(chosen), len(isos))


def _write_burst(folder: Path, frames: np.ndarray, camera: str, iso: float) -> None:
    """Writes ``uint8 (N, H, W, 3)`` frames as ``frame-00.png``... with the camera (EXIF Model) and ISO."""
    folder.mkdir(parents=True)
    exif = Image.Exif()
    exif[EXIF_MODEL] = camera
    exif.get_ifd(EXIF_IFD)[EXIF_ISO] = int(round(iso))
    for index, frame in enumerate(frames):
        write_png(folder / f"frame-{index:02d}.png", frame, exif=exif.tobytes())
