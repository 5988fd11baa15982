"""What a command may replace and what a resume must match: --overwrite replaces only the project's own outputs,
never an input, a folder of other files, the current folder or its parents; an image and its sidecar land
together; every input is decoded before the first output; a resume refuses other data, base or options."""

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nmflowgan import api
from nmflowgan.data.io import image_size, read_rgb, write_png
from nmflowgan.errors import BadInputError, DataError, TrainingError
from nmflowgan.models.noise_model import BUILTIN_DIR, NoiseModel
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from tests.conftest import exit_code, synthesize_cli, tiny_config, write_image


def _user_files(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": b"years of work", "photo.png": b"not ours"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _unchanged(folder: Path, files: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files


SIMULATE = ["simulate", "--cameras", "V1", "--isos", "100", "--scenes", "2", "--size", "32", "--quiet"]


def test_simulate_never_replaces_the_current_folder_or_a_folder_of_other_files(tmp_path, monkeypatch, capsys):
    files = _user_files(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    for out in (".", "..", str(tmp_path)):
        assert exit_code([*SIMULATE, "--out", out, "--overwrite"]) == 2
        assert "current folder or one of its parents" in capsys.readouterr().err
    assert _unchanged(tmp_path / "work", files)
    others = _user_files(tmp_path / "elsewhere")
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "elsewhere"), "--overwrite"]) == 2
    assert "not a simcam data set written by nmflowgan" in capsys.readouterr().err
    assert _unchanged(tmp_path / "elsewhere", others)
    # its own data set it does replace
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "data")]) == 0
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "data")]) == 2
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "data"), "--overwrite", "--seed", "1"]) == 0


def test_simulate_refuses_a_file_or_a_link_before_any_work_and_leaves_no_staging_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "file"), "--overwrite"]) == 2
    assert "file: is a file, not a folder" in capsys.readouterr().err
    assert exit_code([*SIMULATE, "--out", str(tmp_path / "link"), "--overwrite"]) == 2
    assert f"{tmp_path / 'link'}: is a symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link", "target"]
    assert (tmp_path / "file").read_text() == "mine"


def test_a_failed_simulation_leaves_no_staging_folder(tmp_path, monkeypatch):
    from nmflowgan.data.simcam import generate

    monkeypatch.setattr(generate, "write_png", lambda *args: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        generate.simulate(tmp_path / "data", cameras=["V1"], isos=[100], scenes=2, size_px=32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_demo_does_not_replace_a_data_folder_of_other_files(tmp_path, capsys):
    files = _user_files(tmp_path / "demo" / "data")
    assert exit_code(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    assert "not a simcam data set written by nmflowgan" in capsys.readouterr().err
    assert _unchanged(tmp_path / "demo" / "data", files)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, simcam_tree):
    run = tmp_path_factory.mktemp("run") / "run"
    train_noise_model(tiny_config(), NoiseTrainingOptions(data=simcam_tree, out=run, steps=2, device="cpu",
                                                          quiet=True))
    return run


def test_evaluate_checks_every_file_it_writes_before_it_starts(tmp_path, tiny_run, simcam_tree, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    (out / "samples.png").write_bytes(b"my figure")
    for extra in ([], ["--overwrite"]):
        code = exit_code(["evaluate", "--checkpoint", str(tiny_run), "--data", str(simcam_tree), "--out", str(out),
                          "--patch-px", "32", "--max-patches", "8", "--quiet", *extra])
        assert code == 2 and "not an evaluation written by nmflowgan" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "my notes" and (out / "samples.png").read_bytes() == b"my figure"


def test_an_image_whose_sidecar_cannot_be_written_is_not_replaced_either(tmp_path, small_model_dir, capsys):
    source = write_image(tmp_path / "in.png")
    (tmp_path / "p2.png").write_bytes(b"the old output")
    (tmp_path / "p2.json").mkdir()
    assert synthesize_cli(small_model_dir, source, tmp_path / "p2.png", "--overwrite") == 2
    assert f"{tmp_path / 'p2.json'}: is a folder" in capsys.readouterr().err
    assert (tmp_path / "p2.png").read_bytes() == b"the old output"


def test_a_bad_input_in_a_folder_stops_the_job_before_the_first_output(tmp_path, small_model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png")
    data = write_image(tmp_path / "whole.png", size=64).read_bytes()
    (folder / "z.png").write_bytes(data[: len(data) // 2])  # a truncated file: its header reads fine
    assert synthesize_cli(small_model_dir, folder, tmp_path / "out") == 2
    assert "z.png: unreadable or truncated" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_adapt_never_writes_into_its_base(tmp_path, tiny_run, capsys):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rows = ["clean,noisy,camera,iso"]
    for i in range(3):
        write_image(pairs / f"c{i}.png", 100, 48)
        write_png(pairs / f"n{i}.png", np.clip(100 + np.random.default_rng(i).normal(0, 5, (48, 48, 3)), 0, 255)
                  .astype(np.uint8))
        rows.append(f"c{i}.png,n{i}.png,NEW,400")
    (pairs / "metadata.csv").write_text("\n".join(rows) + "\n")
    before = sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*"))
    model = NoiseModel.load(tiny_run).save(tmp_path / "model")
    for base, out in ((tiny_run, tiny_run), (model, model), (tiny_run, tiny_run / "inside")):
        assert exit_code(["adapt", "--base", str(base), "--out", str(out), "--data", str(pairs), "--overwrite",
                          "--quiet"]) == 2
        assert "an output may never be an input" in capsys.readouterr().err
    assert sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*")) == before


def test_a_resumed_training_refuses_other_data(tmp_path, simcam_tree):
    other = tmp_path / "other"
    api.simulate(other, cameras=["V1", "V2"], isos=[100, 1600], scenes=6, size_px=64, seed=9, progress=False)
    options = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=2, device="cpu", quiet=True)
    train_noise_model(tiny_config(), options)
    moved = NoiseTrainingOptions(data=other, out=tmp_path / "run", steps=4, device="cpu", quiet=True, resume=True)
    with pytest.raises(TrainingError, match=r"cannot resume, the checkpoint's data differs in data.digest"):
        train_noise_model(tiny_config(), moved)
    same = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=4, device="cpu", quiet=True,
                                resume=True)
    assert train_noise_model(tiny_config(), same).step == 4


def test_a_path_that_exists_is_that_path_and_the_bare_word_builtin_is_the_packaged_model(tmp_path, tiny_run,
                                                                                          monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run, tmp_path / "builtin", symlinks=True)
    local = NoiseModel.load(tiny_run).cameras
    assert NoiseModel.load(Path("builtin")).cameras == local
    assert NoiseModel.load("./builtin").cameras == local and NoiseModel.load("builtin/").cameras == local
    packaged = NoiseModel.load("builtin")
    assert packaged.cameras != local and "the folder ./builtin here is not used" in caplog.text
    write_image(tmp_path / "in.png")
    assert exit_code(["synthesize", "--checkpoint", "./builtin", "--camera", local[0], "--iso", "400", "--quiet",
                      str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["checkpoint"] == "./builtin"
    assert BUILTIN_DIR.is_dir()


def _png_with_exif_after_the_pixels(path: Path, array: np.ndarray, exif: bytes) -> None:
    """A PNG whose eXIf chunk follows the image data (allowed by the PNG specification)."""
    write_png(path, array)
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    path.write_bytes(data[:end] + chunk + data[end:])


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_png_is_read_turned_as_its_exif_orientation_says(tmp_path, where):
    array = np.zeros((4, 6, 3), np.uint8)
    array[0, 0] = 255  # a marked top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    exif.get_ifd(0x8769)[0x8827] = 800
    path = tmp_path / "turned.png"
    if where == "before":
        Image.fromarray(array).save(path, exif=exif)
    else:
        _png_with_exif_after_the_pixels(path, array, exif.tobytes())
    shown = read_rgb(path)
    assert shown.shape == (6, 4, 3) and image_size(path) == (6, 4)
    assert shown[0, -1].tolist() == [255, 255, 255]  # the top-left corner is now top-right


def test_a_multi_frame_tiff_is_refused(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="two.tif: holds 2 images"):
        read_rgb(tmp_path / "two.tif")
    assert os.path.getsize(tmp_path / "two.tif") > 0


@pytest.mark.parametrize("seed", ["-5", "-1", "99999999999999999999999", "1.5"])
def test_one_seed_rule_in_every_command(tmp_path, simcam_tree, seed, capsys):
    commands = [[*SIMULATE, "--out", str(tmp_path / "sim")],
                [*SIMULATE, "--out", str(tmp_path / "pop"), "--population", "1"],
                ["train", "--data", str(simcam_tree), "--out", str(tmp_path / "run")],
                ["adapt", "--base", "builtin", "--data", str(simcam_tree), "--out", str(tmp_path / "ad")],
                ["train-denoiser", "--noise", "gaussian", "--data", str(simcam_tree), "--out", str(tmp_path / "dn")],
                ["demo", "--out", str(tmp_path / "demo")]]
    for command in commands:
        assert exit_code([*command, "--seed", seed]) == 2, command
        assert "a whole number from 0 to 9223372036854775807" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder
    with pytest.raises(BadInputError, match="seed -1 is not a whole number from 0"):
        NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", seed=-1)
    with pytest.raises(BadInputError, match="seed -1"):
        api.simulate(tmp_path / "sim", seed=-1, progress=False)


def test_synthesized_pairs_take_one_camera_as_a_word_and_refuse_an_empty_image(small_model_dir):
    from nmflowgan.synthesis import SynthesizedPairs

    model = NoiseModel.load(small_model_dir)
    pairs = SynthesizedPairs([torch.rand(3, 8, 8)], model, "V1", 400)
    assert pairs.conditions == [("V1", 400.0)] and pairs[0]["camera"] == "V1"
    with pytest.raises(BadInputError, match="0x0 pixels has no pixel"):
        SynthesizedPairs([np.zeros((0, 0, 3), np.uint8)], model, ["V1"], [400])[0]
    with pytest.raises(BadInputError, match=r"3 camera\(s\) and 1 ISO\(s\) for a batch of 2"):
        model.encode(["V1", "V1", "V1"], [400], 2)
    with pytest.raises(BadInputError, match="map_location must be a device"):
        NoiseModel.load(small_model_dir, map_location={"cuda:0": "cpu"})


@pytest.mark.parametrize("name", ["V2\u200b", "V\uff12"])
def test_camera_names_that_only_look_alike_are_refused(tmp_path, name):
    from nmflowgan.conditions import ConditionSpace
    from nmflowgan.data.folders import read_metadata

    with pytest.raises(BadInputError, match="is not printable as itself"):
        ConditionSpace(("V1", name), (100, 800))
    (tmp_path / "metadata.csv").write_text(f'clean,noisy,camera,iso\na.png,b.png,"{name}",400\n')
    with pytest.raises(DataError, match="metadata.csv:2: camera name"):
        read_metadata(tmp_path / "metadata.csv")


def test_messages_say_the_real_reason(tmp_path, small_model_dir, simcam_tree, capsys):
    source = write_image(tmp_path / "in.png")
    for name in ("out.jpg", "out.tif"):
        assert synthesize_cli(small_model_dir, source, tmp_path / name) == 2
        assert "outputs are written as PNG images" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(simcam_tree / "train", empty / "train")
    (empty / "test").mkdir()  # a split in SIDD's layout with no pair folders
    assert exit_code(["evaluate", "--checkpoint", str(small_model_dir), "--data", str(empty), "--out",
                      str(tmp_path / "eval"), "--quiet"]) == 2
    assert "the test split 'test' holds no image pairs" in capsys.readouterr().err


def test_a_run_without_validation_says_so_and_non_finite_base_scores_are_refused(tmp_path, simcam_tree, capsys):
    from nmflowgan.config import save_config
    from nmflowgan.data.folders import find_pairs
    from nmflowgan.models.adaptation import nearest_cameras

    save_config(tiny_config(), tmp_path / "tiny.json")
    folder = tmp_path / "pairs"  # one metadata.csv folder: no splits, so no validation
    folder.mkdir()
    rows = ["clean,noisy,camera,iso"]
    for i, record in enumerate(find_pairs(simcam_tree, "train")[:6]):
        shutil.copy(record.clean, folder / f"c{i}.png")
        shutil.copy(record.noisy, folder / f"n{i}.png")
        rows.append(f"c{i}.png,n{i}.png,{record.camera},{record.iso}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    assert exit_code(["train", "--data", str(folder), "--config", str(tmp_path / "tiny.json"),
                      "--steps", "2", "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"]) == 0
    assert "no 'best': the data set has no validation split" in capsys.readouterr().out
    with pytest.raises(BadInputError, match="no base camera gives the pairs of NEW a finite likelihood"):
        nearest_cameras(lambda new, base, screen: float("nan"), ["A0", "A1"], ["NEW"])
    assert nearest_cameras(lambda new, base, screen: {"A0": float("nan"), "A1": 3.0}[base], ["A0", "A1"],
                           ["NEW"]) == {"NEW": "A1"}
