"""Faults, bad input and untrusted files: each case ends in a result or a clear error, and loses nothing."""

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from nmflowgan.cli import main
from nmflowgan.config import save_config
from nmflowgan.data.folders import read_metadata
from nmflowgan.data.io import read_rgb, write_png
from nmflowgan.errors import BadInputError, CheckpointError, DataError
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.training.run import read_metrics
from tests.conftest import tiny_config


def _cli(*args):
    return [sys.executable, "-m", "nmflowgan", *map(str, args)]


def _weights(run, name):
    folder = (run / "last").resolve()
    return load_file(str(folder / name)) | load_file(str(folder / "training.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "train-denoiser"])
def test_kill_9_at_a_random_moment_then_resume_equals_uninterrupted(tmp_path, simcam_tree, command):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    extra = ["--noise", "real", "--val-every", 5] if command == "train-denoiser" else ["--checkpoint-every", 1]
    arguments = [command, "--data", simcam_tree, "--config", config, "--steps", 24, "--device", "cpu", "--quiet",
                 *extra]
    weights = "denoiser.safetensors" if command == "train-denoiser" else "model.safetensors"
    straight = subprocess.run(_cli(*arguments, "--out", tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "killed"
    process = subprocess.Popen(_cli(*arguments, "--out", run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = random.Random().randint(3, 18)
    deadline = time.time() + 120
    while len([m for m in read_metrics(run) if "lr" in m]) < target and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(_cli(*arguments, "--out", run, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "straight", weights), _weights(run, weights)
    assert all(torch.equal(a[k], b[k]) for k in a), f"killed after {target} steps"


def test_checkpoints_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = NoiseModel.from_preset("small").save(tmp_path / "model")
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt or truncated"):
        NoiseModel.load(folder)
    torch.save({"weights": Payload()}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        NoiseModel.load(folder)
    assert not marker.exists()


def test_wrong_kind_truncated_and_other_preset_checkpoints(tmp_path):
    small = NoiseModel.from_preset("small").save(tmp_path / "small")
    DnCNN(tiny_config().denoiser).save(tmp_path / "denoiser")
    (tmp_path / "denoiser" / "model.json").write_text((tmp_path / "denoiser" / "denoiser.json").read_text())
    with pytest.raises(CheckpointError, match="expected a nmflowgan-noise-model checkpoint, found .nmflowgan-denoiser"):
        NoiseModel.load(tmp_path / "denoiser")
    other = shutil.copytree(small, tmp_path / "other")
    NoiseModel(tiny_config().model).save(tmp_path / "tiny")
    shutil.copy(tmp_path / "tiny" / "model.safetensors", other / "model.safetensors")
    with pytest.raises(CheckpointError, match="another preset"):
        NoiseModel.load(other)
    (small / "model.json").write_text((small / "model.json").read_text()[:40])
    with pytest.raises(CheckpointError, match="model.json: unreadable"):
        NoiseModel.load(small)


def test_full_disk_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "model")
    write_png(tmp_path / "in.png", np.full((16, 16, 3), 90, np.uint8))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out.png"))

    monkeypatch.setattr(Image.Image, "save", full)
    code = main(["synthesize", "--checkpoint", str(model), "--camera", "V1", "--iso", "400", "--quiet",
                 str(tmp_path / "in.png"), str(tmp_path / "out.png")])
    assert code == 2 and "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "model"]


def test_unwritable_output_fails_before_work_starts(tmp_path, simcam_tree, capsys):
    (tmp_path / "file").write_text("not a folder")
    code = main(["train", "--data", str(simcam_tree), "--out", str(tmp_path / "file" / "run"), "--steps", "2",
                 "--quiet"])
    assert code == 2 and "file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_concurrent_synthesis_into_one_folder(tmp_path):
    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "model")
    source = tmp_path / "in"
    source.mkdir()
    for k in range(6):
        write_png(source / f"{k}.png", np.random.default_rng(k).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    commands = [_cli("synthesize", "--checkpoint", model, "--camera", "V1", "--iso", 800, "--seed", seed, "--quiet",
                     "--overwrite", source, tmp_path / "out") for seed in (1, 2)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two processes on a 2-core machine
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in commands]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == 12 and not [p for p in outputs if p.name.startswith(".")]
    for path in outputs:
        if path.suffix == ".png":
            assert read_rgb(path).shape == (64, 64, 3)
        else:
            assert json.loads(path.read_text())["image_seed"] in range(2**32)


model_for_fuzz = NoiseModel.from_preset("small", cameras=("V1", "V2"), isos=(100, 1600)).eval()
DTYPES = [torch.uint8, torch.float32, torch.float64, torch.float16, torch.int32]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(1, 33), st.integers(1, 33), st.sampled_from(DTYPES), st.floats(-2, 3),
       st.floats(0, 2), st.text(max_size=3), st.floats(allow_nan=True, allow_infinity=True))
def test_fuzzed_sampling_gives_a_valid_image_or_a_clear_error(batch, height, width, dtype, low, spread, camera, iso):
    if dtype == torch.uint8:
        clean = torch.randint(0, 256, (batch, 3, height, width), dtype=dtype)
    else:
        clean = (low + spread * torch.rand(batch, 3, height, width)).to(dtype)
    try:
        noisy = model_for_fuzz.sample(clean, camera=camera or "V1", iso=iso, generator=torch.Generator().manual_seed(0))
    except BadInputError:
        return
    assert noisy.shape == clean.shape and noisy.dtype == clean.dtype
    values = noisy.double()
    assert bool(torch.isfinite(values).all())
    assert values.min() >= 0 and values.max() <= (255 if dtype == torch.uint8 else 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(alphabet="abc./\\,0-9 \"'S6\n", max_size=12), min_size=1, max_size=6),
                min_size=1, max_size=4))
def test_fuzzed_metadata_rows_parse_or_raise_and_never_leave_the_folder(rows):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        lines = ["clean,noisy,camera,iso"] + [",".join(row) for row in rows]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
        try:
            records = read_metadata(root / "metadata.csv")
        except DataError:
            return
        for record in records:
            assert record.clean.is_relative_to(root.resolve()) and record.noisy.is_relative_to(root.resolve())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=6), st.text(max_size=8), st.integers(-3, 3))
def test_fuzzed_cli_arguments_exit_cleanly(tmp_path_factory, camera, iso, seed):
    folder = tmp_path_factory.mktemp("cli")
    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(folder / "model")
    write_png(folder / "in.png", np.full((8, 8, 3), 90, np.uint8))
    arguments = ["synthesize", "--checkpoint", str(model), "--camera", camera or "V1", "--iso", iso or "400",
                 "--seed", str(seed), "--quiet", str(folder / "in.png"), str(folder / "out")]
    try:
        code = main(arguments)
    except SystemExit as exit_:  # argparse refuses malformed arguments with exit status 2
        code = exit_.code
    assert code in (0, 2)
    written = list((folder / "out").glob("*")) if (folder / "out").exists() else []
    assert all(p.suffix in (".png", ".json") for p in written)


def test_an_output_that_appears_during_a_run_is_not_replaced_and_the_run_says_so(tmp_path, monkeypatch):
    import nmflowgan.synthesis as synthesis_module
    from nmflowgan.errors import OutputExistsError
    from nmflowgan.synthesis import synthesize

    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "model")
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a", "b"):
        write_png(source / f"{name}.png", np.full((16, 16, 3), 100, np.uint8))
    out = tmp_path / "out"
    drawn = synthesis_module.synthesize_image

    def another_program_writes_b(*args, **kwargs):
        result = drawn(*args, **kwargs)
        out.mkdir(exist_ok=True)
        if not (out / "a.png").exists():  # while a.png is being drawn, b.png appears
            (out / "b.png").write_bytes(b"someone else's")
        return result

    monkeypatch.setattr(synthesis_module, "synthesize_image", another_program_writes_b)
    with pytest.raises(OutputExistsError, match=r"b.png: appeared while this run was working"):
        synthesize(model, source, out, ["V1"], [400], progress=False)
    assert (out / "b.png").read_bytes() == b"someone else's" and not (out / "b.json").exists()
    assert (out / "a.png").is_file() and (out / "a.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_image_and_sidecar_land_together_or_not_at_all(tmp_path, monkeypatch, capsys):
    import errno

    import nmflowgan.atomic as atomic_module

    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "model")
    write_png(tmp_path / "a.png", np.full((16, 16, 3), 100, np.uint8))
    calls = []
    fsync = os.fsync

    def full_disk_on_the_sidecar(descriptor):
        calls.append(descriptor)
        if len(calls) == 2:  # the image's temporary file is written; the sidecar's is not
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(descriptor)

    monkeypatch.setattr(atomic_module.os, "fsync", full_disk_on_the_sidecar)
    out = tmp_path / "out"
    assert main(["synthesize", "--checkpoint", str(model), "--camera", "V1", "--iso", "400", "--quiet",
                 str(tmp_path / "a.png"), str(out)]) == 2
    assert "out/a.json" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())  # neither the image nor a temporary file
    monkeypatch.setattr(atomic_module.os, "fsync", fsync)
    assert main(["synthesize", "--checkpoint", str(model), "--camera", "V1", "--iso", "400", "--quiet",
                 str(tmp_path / "a.png"), str(out)]) == 0  # a rerun is not refused: nothing "exists"
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png"]
