"""Hostile or careless inputs to synthesize (and the readers it shares): each ends in a clear one-line
error naming the input before any output is written, or, where the input is legitimate, in a correct result."""

import json
import os
import stat
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from nmflowgan.cli import main
from nmflowgan.data.io import read_rgb
from nmflowgan.errors import BadInputError
from nmflowgan.synthesis import synthesize
from nmflowgan.tiling import process_in_tiles
from tests.conftest import exit_code, synthesize_cli, write_image


def _png_header(width, height):
    """A PNG file that declares ``width x height`` RGB pixels in a few bytes (no image data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---- 1 and 8: tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", ["-1", "0"])
def test_a_tile_below_one_pixel_is_refused_before_anything_is_written(small_model_dir, tmp_path, tile, capsys):
    source = write_image(tmp_path / "in.png")
    code = exit_code(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "400",
                       f"--tile={tile}", str(source), str(tmp_path / "out.png")])
    assert code == 2 and "--tile: must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(BadInputError, match="tile side"):
        synthesize(small_model_dir, source, tmp_path / "out.png", ["V1"], [400], tile_px=int(tile), progress=False)
    with pytest.raises(BadInputError, match="at least 1 pixel"):
        process_in_tiles(np.zeros((4, 4, 3), np.uint8), lambda tile, top, left: tile, int(tile))


def test_inputs_that_share_an_output_name_are_numbered_not_overwritten(small_model_dir, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    write_image(source / "a.png", 40)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(source / "a.jpg", quality=100)
    assert synthesize_cli(small_model_dir, source, tmp_path / "out") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.json", "a.png", "a_2.json", "a_2.png"]
    sources = {json.loads((tmp_path / "out" / n).read_text())["source"] for n in ("a.json", "a_2.json")}
    assert sources == {str(source / "a.jpg"), str(source / "a.png")}
    means = sorted(float(read_rgb(tmp_path / "out" / n).mean()) for n in ("a.png", "a_2.png"))
    assert means[0] < 100 < means[1]  # one is the dark input, the other the bright one


def test_an_existing_sidecar_is_not_replaced_without_overwrite(small_model_dir, tmp_path, capsys):
    source = write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").write_text("the user's own notes")
    assert synthesize_cli(small_model_dir, source, out / "a.png") == 2
    assert "a.json: exists" in capsys.readouterr().err
    assert (out / "a.json").read_text() == "the user's own notes" and not (out / "a.png").exists()


def test_outputs_are_never_written_through_a_link_out_of_the_output_folder(small_model_dir, tmp_path, capsys):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    write_image(source / "sub" / "a.png")
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    assert synthesize_cli(small_model_dir, source, out) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("width", "height"), [(13000, 12000), (19000, 19000)])  # 156 MP; 361 MP (over Pillow's)
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(small_model_dir, tmp_path, capsys, width, height):
    source = tmp_path / "bomb.png"
    source.write_bytes(_png_header(width, height))
    start = time.perf_counter()
    assert synthesize_cli(small_model_dir, source, tmp_path / "out.png") == 2
    error = capsys.readouterr().err
    assert "bomb.png" in error and "150,000,000" in error and time.perf_counter() - start < 10
    assert not (tmp_path / "out.png").exists()


def test_max_pixels_lowers_and_raises_the_limit(small_model_dir, tmp_path, capsys):
    source = write_image(tmp_path / "a.png", size=32)
    assert synthesize_cli(small_model_dir, source, tmp_path / "small.png", "--max-pixels", "1000") == 2
    error = capsys.readouterr().err
    assert "1,024 pixels exceeds the limit of 1,000 pixels per image (--max-pixels raises it)" in error
    assert synthesize_cli(small_model_dir, source, tmp_path / "ok.png", "--max-pixels", "1024") == 0


def test_an_empty_camera_is_refused(small_model_dir, tmp_path, capsys):
    code = exit_code(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "", "--iso", "400",
                       str(write_image(tmp_path / "in.png")), str(tmp_path / "out")])
    assert code == 2 and "--camera: expected at least one value" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="no camera given"):
        synthesize(small_model_dir, tmp_path / "in.png", tmp_path / "out", [], [400], progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_exif_iso_stops_the_job_before_the_first_output(small_model_dir, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    exif = Image.Exif()
    exif[0x8827] = 800
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(source / "1.jpg", exif=exif)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(source / "2.jpg")
    code = main(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "exif", "--quiet",
                 str(source), str(tmp_path / "out")])
    assert code == 2 and "2.jpg: no ISO in the image's EXIF" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (source / "2.jpg").unlink()
    assert main(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "exif", "--quiet",
                 str(source), str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "1.json").read_text())["iso"] == 800


def test_written_files_get_the_users_usual_mode(small_model_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        source = write_image(tmp_path / "in.png")
        assert synthesize_cli(small_model_dir, source, tmp_path / "out") == 0
        assert synthesize_cli(small_model_dir, source, tmp_path / "out", "--overwrite") == 0
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
        assert modes == {"in.png": 0o644, "in.json": 0o644}
        os.umask(0o077)
        assert synthesize_cli(small_model_dir, source, tmp_path / "private", "--overwrite") == 0
        assert stat.S_IMODE((tmp_path / "private" / "in.png").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("command", ["synthesize", "train", "evaluate", "denoise"])
def test_a_device_this_torch_lacks_is_a_one_line_error_before_any_output(small_model_dir, simcam_tree, tmp_path,
                                                                          capsys, command):
    out = tmp_path / "out"
    arguments = {
        "synthesize": ["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "400",
                       str(write_image(tmp_path / "in.png")), str(out)],
        "train": ["train", "--data", str(simcam_tree), "--steps", "2", "--out", str(out)],
        "evaluate": ["evaluate", "--checkpoint", str(small_model_dir), "--data", str(simcam_tree), "--out", str(out)],
        "denoise": ["denoise", "--checkpoint", str(small_model_dir), str(write_image(tmp_path / "in.png")), str(out)],
    }[command]
    assert exit_code([*arguments, "--device", "cuda", "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--device cuda: not available" in error[0] and "available: cpu" in error[0], error
    assert not out.exists()


@pytest.mark.parametrize("budget", ["nan", "inf", "-1", "0"])
def test_a_demo_budget_that_is_not_a_positive_finite_number_is_refused_by_the_parser(tmp_path, capsys, budget):
    assert exit_code(["demo", "--out", str(tmp_path / "demo"), "--budget-minutes", budget]) == 2
    assert "--budget-minutes: must be a positive finite number" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("layout", ["same file", "file into its own folder"])
def test_an_output_may_never_replace_an_input_even_with_overwrite(small_model_dir, tmp_path, capsys, layout):
    folder = tmp_path / "dir"
    folder.mkdir()
    source = write_image(folder / "a.png")
    before = source.read_bytes()
    out = source if layout == "same file" else folder
    assert synthesize_cli(small_model_dir, source, out, "--overwrite") == 2
    assert "is an input of this run" in capsys.readouterr().err
    assert exit_code(["denoise", "--checkpoint", str(small_model_dir), "--overwrite", "--quiet", str(source),
                      str(out)]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_a_temperature_that_is_not_a_finite_number_at_least_zero_is_refused(small_model_dir):
    import numpy as np

    from nmflowgan.errors import BadInputError
    from nmflowgan.models.noise_model import NoiseModel
    from nmflowgan.synthesis import synthesize_image

    model = NoiseModel.load(small_model_dir)
    clean = np.full((8, 8, 3), 100, np.uint8)
    for temperature in (float("nan"), float("inf"), -1.0):
        with pytest.raises(BadInputError, match="temperature must be a finite number >= 0"):
            model.sample(clean, "V1", 400, temperature=temperature)
        with pytest.raises(BadInputError, match="temperature must be a finite number >= 0"):
            synthesize_image(model, clean, "V1", 400, temperature=temperature)
    assert model.sample(clean, "V1", 400, temperature=0.0).shape == clean.shape


def test_synthesized_pairs_without_a_camera_or_an_iso_are_refused(small_model_dir):
    import numpy as np

    from nmflowgan.errors import BadInputError
    from nmflowgan.models.noise_model import NoiseModel
    from nmflowgan.synthesis import SynthesizedPairs

    model = NoiseModel.load(small_model_dir)
    images = [np.full((8, 8, 3), 100, np.uint8)]
    for cameras, isos in (([], [400]), (["V1"], [])):
        with pytest.raises(BadInputError, match="at least one camera and one ISO"):
            SynthesizedPairs(images, model, cameras, isos)


def test_simulate_refuses_a_camera_named_twice(tmp_path, capsys):
    assert exit_code(["simulate", "--out", str(tmp_path / "d"), "--cameras", "V1", "V1", "--quiet"]) == 2
    assert "['V1'] named more than once" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_an_input_whose_own_name_is_free_keeps_it_and_only_colliding_names_are_numbered(small_model_dir, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    write_image(source / "a.png", 40)
    write_image(source / "a_2.png", 120)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(source / "a.jpg", quality=100)
    assert synthesize_cli(small_model_dir, source, tmp_path / "out") == 0
    origin = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text())["source"] for n in ("a", "a_2", "a_3")}
    assert origin == {"a": str(source / "a.png"), "a_2": str(source / "a_2.png"), "a_3": str(source / "a.jpg")}


def test_numbered_keeps_own_names_first():
    from pathlib import Path

    from nmflowgan.outputs import numbered

    targets = [Path("o/a.png"), Path("o/a.png"), Path("o/a_2.png")]  # from a.jpg, a.png, a_2.png
    assert numbered(targets, [False, True, True]) == [Path("o/a_3.png"), Path("o/a.png"), Path("o/a_2.png")]
    assert numbered(targets[:2]) == [Path("o/a.png"), Path("o/a_2.png")]  # no own names: in order


def test_an_output_named_like_an_image_is_never_made_a_folder(small_model_dir, tmp_path, capsys):
    source = write_image(tmp_path / "in.png")
    out = tmp_path / "x.png"
    assert exit_code(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "400,1600",
                      "--quiet", str(source), str(out)]) == 2
    assert "x.png: names an image file, but this run writes 4 files into it as a folder" in capsys.readouterr().err
    assert not out.exists()
    assert synthesize_cli(small_model_dir, source, out) == 0 and out.is_file()  # one output: the file itself


def test_an_exif_rotated_jpeg_is_read_and_written_as_viewers_show_it(small_model_dir, tmp_path):
    from nmflowgan.data.io import image_size

    stored = np.zeros((8, 16, 3), np.uint8)  # 16 wide, 8 high as stored; its left half bright
    stored[:, :8] = 220
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to display": 8 wide, 16 high, the bright half on top
    Image.fromarray(stored).save(tmp_path / "in.jpg", quality=100, exif=exif)
    assert image_size(tmp_path / "in.jpg") == (16, 8)
    shown = read_rgb(tmp_path / "in.jpg")
    assert shown.shape == (16, 8, 3) and shown[:8].mean() > 150 > shown[8:].mean()
    assert synthesize_cli(small_model_dir, tmp_path / "in.jpg", tmp_path / "out.png") == 0
    out = read_rgb(tmp_path / "out.png")
    assert out.shape == (16, 8, 3) and out[:8].mean() > 150 > out[8:].mean()


def test_a_sidecar_records_what_reproduces_its_image(small_model_dir, tmp_path):
    from nmflowgan.models.noise_model import NoiseModel
    from nmflowgan.synthesis import synthesize_image

    source = tmp_path / "in"
    source.mkdir()
    write_image(source / "a.png", 90, size=24)
    write_image(source / "b.png", 150, size=24)
    assert synthesize_cli(small_model_dir, source, tmp_path / "out", "--seed", "7") == 0
    sidecar = json.loads((tmp_path / "out" / "b.json").read_text())
    assert sidecar["seed"] == 7 and "reproduce" in sidecar
    # the run's seed on the same input, into another output, draws the same image
    assert synthesize_cli(small_model_dir, source / "b.png", tmp_path / "again.png", "--seed", "7") == 0
    assert np.array_equal(read_rgb(tmp_path / "again.png"), read_rgb(tmp_path / "out" / "b.png"))
    # and the recorded image seed reproduces it in Python
    model = NoiseModel.load(small_model_dir)
    drawn = synthesize_image(model, read_rgb(source / "b.png"), "V1", 400, seed=sidecar["image_seed"])
    assert np.array_equal(drawn, read_rgb(tmp_path / "out" / "b.png"))


def test_wording_names_what_is_wrong(small_model_dir, simcam_tree, tmp_path, capsys, caplog):
    import logging
    import shutil

    # simulate --size 1 says 1, not what it was rounded to
    assert exit_code(["simulate", "--out", str(tmp_path / "sim"), "--size", "1", "--quiet"]) == 2
    assert "at least 32 px, got 1" in capsys.readouterr().err
    # an unusable EXIF ISO names the image
    exif = Image.Exif()
    exif[0x8827] = 1  # ISOSpeedRatings below any camera's
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "low.jpg", exif=exif)
    assert synthesize_cli(small_model_dir, tmp_path / "low.jpg", tmp_path / "o.png", "--iso", "exif") == 2
    assert "low.jpg: its EXIF ISO does not fit this model (ISO 1.0 is outside" in capsys.readouterr().err
    # a run folder's checkpoint choice is logged once per job
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(small_model_dir, run / "checkpoints" / "step-1")
    (run / "last").symlink_to("checkpoints/step-1")
    with caplog.at_level(logging.INFO, logger="nmflowgan.models.files"):
        assert synthesize_cli(run, write_image(tmp_path / "in.png"), tmp_path / "out.png") == 0
    assert caplog.text.count("loading its last checkpoint") == 1
