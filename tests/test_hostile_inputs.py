"""A hostile or careless user's inputs, one test per case: each ends in a clear one-line error naming the input
before any output is written, or, where the input is legitimate, in a correct result."""

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from nmflowgan.cli import main
from nmflowgan.config import SMALL_REFINER, load_config, save_config, to_dict
from nmflowgan.data.folders import read_metadata
from nmflowgan.data.io import read_rgb, write_png
from nmflowgan.errors import BadInputError, CheckpointError, DataError, RunLockedError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.synthesis import synthesize
from nmflowgan.tiling import process_in_tiles
from nmflowgan.training.run import LOCK_FILE, RunOptions, read_metrics, run_lock
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(
        tmp_path_factory.mktemp("model") / "model")


def _image(path, value=90, size=16):
    write_png(path, np.full((size, size, 3), value, np.uint8))
    return path


def _synthesize(model_dir, source, out, *extra):
    return main(["synthesize", "--checkpoint", str(model_dir), "--camera", "V1", "--iso", "400", "--quiet", *extra,
                 str(source), str(out)])


def _exit_code(arguments):
    """``main``'s status, including argparse's refusals (SystemExit 2)."""
    try:
        return main(arguments)
    except SystemExit as exit_:
        return exit_.code


def _png_header(width, height):
    """A PNG file that declares ``width x height`` RGB pixels in a few bytes (no image data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---- 1 and 8: tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", ["-1", "0"])
def test_row1_row8_a_tile_below_one_pixel_is_refused_before_anything_is_written(model_dir, tmp_path, tile, capsys):
    source = _image(tmp_path / "in.png")
    code = _exit_code(["synthesize", "--checkpoint", str(model_dir), "--camera", "V1", "--iso", "400",
                       f"--tile={tile}", str(source), str(tmp_path / "out.png")])
    assert code == 2 and "--tile: must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(BadInputError, match="tile side"):
        synthesize(model_dir, source, tmp_path / "out.png", ["V1"], [400], tile_px=int(tile), progress=False)
    with pytest.raises(BadInputError, match="at least 1 pixel"):
        process_in_tiles(np.zeros((4, 4, 3), np.uint8), lambda tile, top, left: tile, int(tile))


# ---- 2, 3, 4: outputs ----------------------------------------------------------------------------------------


def test_row2_inputs_that_share_an_output_name_are_numbered_not_overwritten(model_dir, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    _image(source / "a.png", 40)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(source / "a.jpg", quality=100)
    assert _synthesize(model_dir, source, tmp_path / "out") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.json", "a.png", "a_2.json", "a_2.png"]
    sources = {json.loads((tmp_path / "out" / n).read_text())["source"] for n in ("a.json", "a_2.json")}
    assert sources == {str(source / "a.jpg"), str(source / "a.png")}
    means = sorted(float(read_rgb(tmp_path / "out" / n).mean()) for n in ("a.png", "a_2.png"))
    assert means[0] < 100 < means[1]  # one is the dark input, the other the bright one


def test_row3_an_existing_sidecar_is_not_replaced_without_overwrite(model_dir, tmp_path, capsys):
    source = _image(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").write_text("the user's own notes")
    assert _synthesize(model_dir, source, out / "a.png") == 2
    assert "a.json: exists" in capsys.readouterr().err
    assert (out / "a.json").read_text() == "the user's own notes" and not (out / "a.png").exists()


def test_row4_outputs_are_never_written_through_a_link_out_of_the_output_folder(model_dir, tmp_path, capsys):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    _image(source / "sub" / "a.png")
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    assert _synthesize(model_dir, source, out) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


# ---- 5: pixel limit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(13000, 12000), (19000, 19000)])  # 156 MP; 361 MP (over Pillow's)
def test_row5_an_image_over_the_pixel_limit_is_refused_from_its_header(model_dir, tmp_path, capsys, width, height):
    source = tmp_path / "bomb.png"
    source.write_bytes(_png_header(width, height))
    start = time.perf_counter()
    assert _synthesize(model_dir, source, tmp_path / "out.png") == 2
    error = capsys.readouterr().err
    assert "bomb.png" in error and "150,000,000" in error and time.perf_counter() - start < 10
    assert not (tmp_path / "out.png").exists()


def test_row5_max_pixels_lowers_and_raises_the_limit(model_dir, tmp_path, capsys):
    source = _image(tmp_path / "a.png", size=32)
    assert _synthesize(model_dir, source, tmp_path / "small.png", "--max-pixels", "1000") == 2
    error = capsys.readouterr().err
    assert "1,024 pixels exceeds the limit of 1,000 pixels per image (--max-pixels raises it)" in error
    assert _synthesize(model_dir, source, tmp_path / "ok.png", "--max-pixels", "1024") == 0


# ---- 6 and 7: model files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("width", 200000, "parameters, more than the limit"), ("depth", 2.5, "depth must be an int, got 2.5"),
    ("width", "64", "width must be an int"), ("sees_clean", 1, "sees_clean must be a bool"),
    ("noise_scale", float("nan"), "noise_scale must be a finite number")])
def test_row6_a_model_description_is_validated_before_any_network_is_built(model_dir, tmp_path, key, value, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    meta = json.loads((model_dir / "model.json").read_text())
    meta["config"]["refiner"] = {**to_dict(SMALL_REFINER), key: value}
    (folder / "model.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"model.json: invalid model description.*{message}"):
        NoiseModel.load(folder)
    assert time.perf_counter() - start < 5


def test_row6_deeply_nested_json_is_refused_in_one_line(model_dir, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="model.json: unreadable checkpoint description .nested too deeply"):
        NoiseModel.load(folder)
    (tmp_path / "config.json").write_text("{\"a\": " * 100000 + "1" + "}" * 100000)
    with pytest.raises(BadInputError, match="config.json: cannot read config JSON .nested too deeply"):
        load_config(tmp_path / "config.json")


def test_row6_a_training_config_over_the_parameter_budget_is_refused(tmp_path, simcam_tree, capsys):
    config = to_dict(tiny_config())
    config["critic"]["width"] = 100000
    (tmp_path / "huge.json").write_text(json.dumps(config))
    code = main(["train", "--data", str(simcam_tree), "--config", str(tmp_path / "huge.json"), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert code == 2 and "config 'tiny': describes a network of" in capsys.readouterr().err


def test_row7_non_finite_weights_are_refused_naming_the_file(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text((model_dir / "model.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    tensors = {name: torch.full_like(t, float("nan")) if t.is_floating_point() else t for name, t in tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    assert _synthesize(folder, _image(tmp_path / "in.png"), tmp_path / "out.png") == 2
    assert "model.safetensors: " in capsys.readouterr().err and not (tmp_path / "out.png").exists()
    with pytest.raises(CheckpointError, match="holds non-finite values"):
        NoiseModel.load(folder)


def test_row7_a_model_that_draws_non_finite_noise_writes_nothing(model_dir, tmp_path):
    model = NoiseModel.load(model_dir)
    with torch.no_grad():  # finite weights whose product overflows
        for parameter in model.flow.parameters():
            parameter.fill_(1e38)
    folder = tmp_path / "overflowing"
    model.save(folder)
    with pytest.raises(CheckpointError, match="non-finite noise"):
        synthesize(folder, _image(tmp_path / "in.png"), tmp_path / "out.png", ["V1"], [400], progress=False)
    assert not (tmp_path / "out.png").exists()


# ---- 9, 10, 18: metadata.csv --------------------------------------------------------------------------------


def _metadata(tmp_path, content: bytes):
    (tmp_path / "metadata.csv").write_bytes(content)
    return tmp_path / "metadata.csv"


def test_row9_a_nul_byte_or_a_latin1_byte_is_a_clear_error(tmp_path):
    path = _metadata(tmp_path, b"clean,noisy,camera,iso\nc\x00.png,n.png,S6,100\n")
    with pytest.raises(DataError, match=r"metadata.csv(:2: the path .* contains a NUL byte|: malformed CSV)"):
        read_metadata(path)
    path = _metadata(tmp_path, b"clean,noisy,camera,iso\nc\xe9.png,n.png,S6,100\n")
    with pytest.raises(DataError, match="metadata.csv: not UTF-8 text"):
        read_metadata(path)
    path = _metadata(tmp_path, b"clean,noisy,camera,is\xf6\n")
    with pytest.raises(DataError, match="metadata.csv: not UTF-8 text"):
        read_metadata(path)


def test_row10_a_repeated_column_is_refused(tmp_path):
    path = _metadata(tmp_path, b"clean,noisy,camera,iso,iso\nc.png,n.png,S6,100,3200\n")
    with pytest.raises(DataError, match="metadata.csv: the header names iso more than once"):
        read_metadata(path)


def test_row18_a_spreadsheets_utf8_csv_with_a_byte_order_mark_reads(tmp_path):
    path = _metadata(tmp_path, "\ufeffclean,noisy,camera,iso\nc.png,n.png,S6,100\n".encode())
    [record] = read_metadata(path)
    assert record.clean == (tmp_path / "c.png").resolve() and record.iso == 100


# ---- 11: one writer per run ---------------------------------------------------------------------------------


def _train_arguments(simcam_tree, config, run, steps=2):
    return ["train", "--data", str(simcam_tree), "--config", str(config), "--steps", str(steps), "--out", str(run),
            "--device", "cpu", "--quiet"]


def test_row11_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    with run_lock(run):
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert main(_train_arguments(simcam_tree, config, run)) == 2
        assert f"in use by PID {os.getpid()} on {socket.gethostname()}" in capsys.readouterr().err
        assert not (run / "metrics.jsonl").exists()
        with pytest.raises(RunLockedError):
            with run_lock(run):
                pass
    assert not (run / LOCK_FILE).exists()
    assert main(_train_arguments(simcam_tree, config, run)) == 0


def test_row11_a_stale_lock_is_reported_and_taken_over(tmp_path, simcam_tree, caplog):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    run.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "since": "earlier"}))
    assert main(_train_arguments(simcam_tree, config, run)) == 0
    assert f"stale lock left by PID {dead_pid}" in caplog.text
    assert not (run / LOCK_FILE).exists() and (run / "last").exists()


def test_row11_a_lock_from_another_host_is_refused(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "since": "earlier"}))
    assert main(_train_arguments(simcam_tree, config, run)) == 2
    assert "in use by PID 1 on another-host" in capsys.readouterr().err


# ---- 12: disk full during a checkpoint ----------------------------------------------------------------------


def test_row12_a_failed_checkpoint_write_keeps_the_last_good_one_and_leaves_no_partial_folder(
        tmp_path, simcam_tree, monkeypatch, capsys):
    from safetensors import SafetensorError

    import nmflowgan.training.checkpoint as checkpoint

    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    real_save, calls = checkpoint.save_file, []

    def fills_the_disk(tensors, path):
        calls.append(path)
        if len(calls) > 1:
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", fills_the_disk)
    code = main(_train_arguments(simcam_tree, config, run, steps=8) + ["--checkpoint-every", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "No space left on device" in error and f"the last good checkpoint is {run / 'last'}" in error
    assert (run / "last").resolve().name == "step-00000002"
    assert not list((run / "checkpoints").glob(".*")) and not (run / LOCK_FILE).exists()
    monkeypatch.undo()  # space again
    assert main(_train_arguments(simcam_tree, config, run, steps=8) + ["--resume"]) == 0  # resumable


# ---- 13, 14, 15: options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [["--steps", "0"], ["--epochs", "0"], ["--steps", "-1"], ["--steps", "2.5"]])
def test_row13_a_training_length_below_one_is_refused(tmp_path, simcam_tree, length, capsys):
    code = _exit_code(["train", "--data", str(simcam_tree), "--out", str(tmp_path / "run"), *length, "--quiet"])
    assert code == 2 and "must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(BadInputError, match="must be a positive whole number"):
        RunOptions(data=simcam_tree, out=tmp_path / "run", steps=0)


def test_row14_an_empty_camera_is_refused(model_dir, tmp_path, capsys):
    code = _exit_code(["synthesize", "--checkpoint", str(model_dir), "--camera", "", "--iso", "400",
                       str(_image(tmp_path / "in.png")), str(tmp_path / "out")])
    assert code == 2 and "--camera: expected at least one value" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="no camera given"):
        synthesize(model_dir, tmp_path / "in.png", tmp_path / "out", [], [400], progress=False)
    assert not (tmp_path / "out").exists()


def test_row15_a_run_within_the_flow_warm_up_does_not_claim_a_best_checkpoint(tmp_path, simcam_tree, capsys):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)  # flow warm-up of 2 steps, then the adversarial game
    assert main(_train_arguments(simcam_tree, config, tmp_path / "run", steps=2)) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "run" / "best").exists()
    assert "no 'best'" in out and f"{tmp_path / 'run' / 'best'}" not in out


# ---- 16: EXIF -------------------------------------------------------------------------------------------------


def test_row16_a_missing_exif_iso_stops_the_job_before_the_first_output(model_dir, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    exif = Image.Exif()
    exif[0x8827] = 800
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(source / "1.jpg", exif=exif)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(source / "2.jpg")
    code = main(["synthesize", "--checkpoint", str(model_dir), "--camera", "V1", "--iso", "exif", "--quiet",
                 str(source), str(tmp_path / "out")])
    assert code == 2 and "2.jpg: no ISO in the image's EXIF" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (source / "2.jpg").unlink()
    assert main(["synthesize", "--checkpoint", str(model_dir), "--camera", "V1", "--iso", "exif", "--quiet",
                 str(source), str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "1.json").read_text())["iso"] == 800


# ---- 17: file modes and signals ----------------------------------------------------------------------------


def test_row17_written_files_get_the_users_usual_mode(model_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        source = _image(tmp_path / "in.png")
        assert _synthesize(model_dir, source, tmp_path / "out") == 0
        assert _synthesize(model_dir, source, tmp_path / "out", "--overwrite") == 0
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
        assert modes == {"in.png": 0o644, "in.json": 0o644}
        os.umask(0o077)
        assert _synthesize(model_dir, source, tmp_path / "private", "--overwrite") == 0
        assert stat.S_IMODE((tmp_path / "private" / "in.png").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_row17_sigterm_saves_then_exits_with_status_143(tmp_path, simcam_tree):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "nmflowgan", *_train_arguments(simcam_tree, config, run, 100000)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(read_metrics(run)) < 3:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in out and (run / "last").exists() and not (run / LOCK_FILE).exists()
