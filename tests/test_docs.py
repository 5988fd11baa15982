"""Every command in README.md and docs/ parses, and runs with tiny sizes; the CLI reference is current."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from nmflowgan.cli import build_parser, cli_reference
from nmflowgan.config import save_config
from nmflowgan.data.io import write_png
from nmflowgan.data.sidd import SiddFolder
from nmflowgan.data.simcam import builtin_cameras
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Tiny sizes in place of the documented ones, so that every documented command runs in seconds.
SHRINK = [(r"--preset paper", "--config $TINY"), (r"--epochs \d+", "--steps 2"), (r"--scenes \d+", "--scenes 2"),
          (r"--size \d+", "--size 64"), (r"--steps \d+", "--steps 2"), (r"--population \d+", "--population 2")]


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every ``nmflowgan`` or ``torchrun ... nmflowgan`` line in a bash block."""
    found = []
    for document in DOCUMENTS:
        for block in _blocks(document, "bash"):
            for line in block.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith(("nmflowgan ", "torchrun ")):
                    found.append((document.name, line))
    return found


def _arguments(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index("nmflowgan") + 1 :] if words[0] == "torchrun" else words[1:]


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference()


def test_every_command_that_computes_defaults_to_device_auto():
    import argparse

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    computing = ("train", "adapt", "evaluate", "synthesize", "train-denoiser", "eval-denoiser", "denoise")
    for name in computing:
        device = next(a for a in commands[name]._actions if a.dest == "device")
        assert device.default == "auto" and "cuda" in device.choices, name


def test_the_library_functions_default_to_device_auto_like_the_command_line():
    import dataclasses
    import inspect

    from nmflowgan import api
    from nmflowgan.evaluation import evaluate

    functions = (api.synthesize, api.denoise_files, api.evaluate_denoiser, api.evaluate_to_report, evaluate)
    for function in functions:
        assert inspect.signature(function).parameters["device"].default == "auto", function.__name__
    for options in (api.NoiseTrainingOptions, api.DenoiserTrainingOptions):
        assert next(f.default for f in dataclasses.fields(options) if f.name == "device") == "auto", options


@pytest.mark.parametrize(("document", "command"), [dc for dc in documented_commands() if dc[1].startswith("torchrun")])
def test_documented_torchrun_lines_launch_a_training_the_command_line_accepts(document, command):
    """The torchrun lines (not run here: they need several GPUs) launch the module's own ``train`` with arguments
    its parser takes, one process per GPU."""
    words = shlex.split(command)
    assert words[words.index("-m") + 1] == "nmflowgan" and "--nproc-per-node" in words
    assert build_parser().parse_args(_arguments(command)).handler.__name__ == "_train"


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Tiny stand-ins for every path the documents name: a SIDD tree with both splits (96 px, cameras S6 and
    N6, ISOs 100 and 3200, noise from simcam cameras), validation blocks, images with EXIF ISOs."""
    root = tmp_path_factory.mktemp("docs")
    sidd = root / "SIDD"
    cameras = {"S6": builtin_cameras()[1], "N6": builtin_cameras()[3]}
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    # (instance, camera, ISO): instances 4, 11, 13, 104 are in SIDD's training split, 54, 55, 154, 155 in its test split
    layout = [(4, "S6", 100), (11, "N6", 3200), (13, "S6", 100), (104, "N6", 3200),
              (54, "S6", 100), (154, "N6", 3200), (55, "S6", 100), (155, "N6", 3200)]
    for scene, (instance, camera, iso) in enumerate(layout, start=1):
        fields = SiddFolder(instance, scene, camera, iso, 100, 5500, "N")
        folder = sidd / "Data" / fields.name
        folder.mkdir(parents=True)
        image = rng.integers(40, 220, (1, 1, 3), dtype=np.uint8).repeat(96, 0).repeat(96, 1)
        clean, noisy = cameras[camera].capture(image, iso, 1, generator)
        for capture in ("010", "011"):
            clean_path, noisy_path = fields.pair_files(folder, capture)
            write_png(clean_path, clean)
            write_png(noisy_path, noisy[0])
    blocks = root / "blocks"
    blocks.mkdir()
    clean = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    scipy.io.savemat(blocks / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(blocks / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})
    images = root / "in"
    images.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x8827] = 400
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / "photo.jpg", exif=exif)
    tiny = root / "tiny.json"
    save_config(tiny_config(), tiny)
    pairs = root / "pairs"  # pairs of a camera the built-in model does not know, for "Add your camera"
    for split, count in (("train", 5), ("test", 2)):  # train: 4 to train on, 1 held out for validation
        (pairs / split).mkdir(parents=True)
        rows = ["clean,noisy,camera,iso"]
        for index in range(count):
            image = rng.integers(40, 220, (1, 1, 3), dtype=np.uint8).repeat(96, 0).repeat(96, 1)
            clean, noisy = builtin_cameras()[0].capture(image, (800, 3200)[index % 2], 1, generator)
            write_png(pairs / split / f"c{index}.png", clean)
            write_png(pairs / split / f"n{index}.png", noisy[0])
            rows.append(f"c{index}.png,n{index}.png,MyCam,{(800, 3200)[index % 2]}")
        (pairs / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    bursts = root / "bursts"  # two tripod bursts of MyCam at ISO 800, camera and ISO in each frame's EXIF
    exif = Image.Exif()
    exif[0x0110] = "MyCam"
    exif.get_ifd(0x8769)[0x8827] = 800
    for scene in ("desk", "shelf"):
        (bursts / scene).mkdir(parents=True)
        image = rng.integers(40, 220, (96, 96, 3), dtype=np.uint8)
        _, frames = builtin_cameras()[0].capture(image, 800, 5, generator)
        for index, frame in enumerate(frames):
            write_png(bursts / scene / f"{index}.png", frame, exif=exif.tobytes())
    variables = {"SIDD": sidd, "SIDD_BLOCKS": blocks, "IN": images, "TINY": tiny, "CONFIG": tiny, "ROOT": root,
                 "PAIRS": pairs, "BURSTS": bursts}
    return {k: str(v) for k, v in variables.items()}


OUTPUTS = ("RUN", "EVAL", "DENOISER", "OUT", "DATA", "EVAL_DATA", "ADAPTED", "BURST_PAIRS", "FROM_BURSTS")


def _outputs(world: dict, document: str) -> dict:
    """The shared inputs plus output folders of this document's own."""
    return world | {name: str(Path(world["ROOT"]) / document / name.lower()) for name in OUTPUTS}


def _run(command: str, variables: dict) -> subprocess.CompletedProcess:
    for pattern, replacement in SHRINK:
        command = re.sub(pattern, replacement, command)
    if command.split()[1] in ("train", "train-denoiser", "adapt") and "--steps" not in command:
        command += " --steps 2"
    arguments = _arguments(command)
    for name in sorted(variables, key=len, reverse=True):  # $SIDD_BLOCKS before $SIDD
        arguments = [a.replace(f"${name}", variables[name]) for a in arguments]
    return subprocess.run([sys.executable, "-m", "nmflowgan", *arguments, "--quiet"], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("document", [d.name for d in DOCUMENTS])
def test_documented_commands_run(document, tiny_world):
    commands = [c for d, c in documented_commands() if d == document and c.startswith("nmflowgan ")]
    variables = _outputs(tiny_world, document)
    for command in commands:
        done = _run(command, variables)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


def test_readme_python_examples_run(tmp_path):
    sampling, pairs = _blocks(ROOT / "README.md", "python")
    from nmflowgan import NoiseModel

    run = NoiseModel.from_preset("small", cameras=("S6", "N6"), isos=(100, 3200)).save(tmp_path / "model")
    namespace: dict = {}
    exec(sampling.replace('"runs/sidd"', repr(str(run))), namespace)  # noqa: S102 - our own README's code
    assert namespace["noisy"].shape == (4, 3, 256, 256)
    adapted = NoiseModel.from_preset("small", cameras=("MyCam",), isos=(400, 3200)).save(tmp_path / "adapted")
    exec(pairs.replace('"runs/my-camera"', repr(str(adapted))), namespace)  # noqa: S102
    batch = namespace["batch"]
    assert batch["noisy"].shape == batch["clean"].shape == (4, 64, 64, 3) and batch["noisy"].dtype == torch.uint8
    assert not torch.equal(batch["noisy"], batch["clean"])
