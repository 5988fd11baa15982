"""Synthesis on any image: tiles without seams, seeds, sidecars, EXIF, combinations and bad input."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nmflowgan.cli import main
from nmflowgan.conditions import ConditionSpace
from nmflowgan.config import SMALL_REFINER, small
from nmflowgan.data.io import exif_iso, read_rgb, write_png
from nmflowgan.errors import BadInputError, DataError, OutputExistsError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.synthesis import latent_window, synthesize, synthesize_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model with its refiner moved off the identity, so that tiles could show seams."""
    torch.manual_seed(0)
    model = NoiseModel(dataclasses.replace(small().model, refiner=SMALL_REFINER), ("V1", "V2"), (100, 1600))
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.save(tmp_path_factory.mktemp("model") / "model")


def _neighbour_corr(noise, axis):
    a = np.take(noise, range(noise.shape[axis] - 1), axis=axis).ravel()
    b = np.take(noise, range(1, noise.shape[axis]), axis=axis).ravel()
    return np.corrcoef(a, b)[0, 1]


def test_latent_windows_agree_where_they_overlap():
    whole = latent_window(3, 0, 0, 300, 300)
    part = latent_window(3, 100, 150, 90, 120)
    assert torch.equal(whole[..., 100:190, 150:270], part)


def test_tiles_leave_no_seam(model_dir):
    model = NoiseModel.load(model_dir)
    clean = np.full((256, 256, 3), 120, np.uint8)
    tiled = synthesize_image(model, clean, "V2", 1600, seed=1, tile_px=64, margin_px=24)
    whole = synthesize_image(model, clean, "V2", 1600, seed=1, tile_px=1024)
    assert np.abs(tiled.astype(int) - whole).mean() < 0.05
    noise = tiled.astype(float) - clean
    seam_columns = np.concatenate([noise[:, c - 1 : c + 1] for c in (64, 128, 192)], axis=1)
    away_columns = np.concatenate([noise[:, c - 1 : c + 1] for c in (32, 96, 160)], axis=1)
    assert abs(seam_columns.std() - away_columns.std()) / away_columns.std() < 0.1
    across = np.corrcoef(noise[:, 63].ravel(), noise[:, 64].ravel())[0, 1]
    within = np.mean([np.corrcoef(noise[:, c].ravel(), noise[:, c + 1].ravel())[0, 1] for c in (31, 95, 159)])
    assert abs(across - within) < 0.1


def test_same_seed_same_output_and_any_size(model_dir):
    model = NoiseModel.load(model_dir)
    clean = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    first = synthesize_image(model, clean, "V1", 400, seed=5)
    assert first.shape == clean.shape and first.dtype == np.uint8
    assert np.array_equal(first, synthesize_image(model, clean, "V1", 400, seed=5))
    assert not np.array_equal(first, synthesize_image(model, clean, "V1", 400, seed=6))


def test_synthesize_folder_with_sidecars_and_combinations(tmp_path, model_dir):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_png(source / "a.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(source / "sub" / "b.jpg")
    written = synthesize(model_dir, source, tmp_path / "out", ["V1", "V2"], [100, 800], seed=2, progress=False)
    assert len(written) == 8
    assert (tmp_path / "out" / "sub" / "b_V2_iso800.png").is_file()
    sidecar = json.loads((tmp_path / "out" / "a_V1_iso100.json").read_text())
    assert sidecar["camera"] == "V1" and sidecar["iso"] == 100 and len(sidecar["checkpoint_sha256"]) == 16
    assert sidecar["source"].endswith("a.png")
    assert sidecar["sampling"] in ("float32", "bfloat16")
    before = read_rgb(tmp_path / "out" / "a_V1_iso100.png")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        synthesize(model_dir, source, tmp_path / "out", ["V1", "V2"], [100, 800], seed=3, progress=False)
    assert np.array_equal(before, read_rgb(tmp_path / "out" / "a_V1_iso100.png"))
    synthesize(model_dir, source, tmp_path / "out", ["V1", "V2"], [100, 800], seed=2, overwrite=True, progress=False)
    assert np.array_equal(before, read_rgb(tmp_path / "out" / "a_V1_iso100.png"))


def test_exif_iso_is_read_from_the_image_and_recorded_in_the_sidecar(tmp_path, model_dir):
    image = Image.fromarray(np.full((16, 16, 3), 100, np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x8827] = 800
    image.save(tmp_path / "with.jpg", exif=exif)
    image.save(tmp_path / "without.jpg")
    assert exif_iso(tmp_path / "with.jpg") == 800
    with pytest.raises(DataError, match="without.jpg: no ISO"):
        exif_iso(tmp_path / "without.jpg")
    (written,) = synthesize(model_dir, tmp_path / "with.jpg", tmp_path / "o.png", ["V1"], ["exif"], progress=False)
    assert json.loads(written.with_suffix(".json").read_text())["iso"] == 800


def test_bad_input_gives_clear_errors_and_writes_nothing(tmp_path, model_dir, capsys):
    source = tmp_path / "in"
    source.mkdir()
    write_png(source / "a.png", np.zeros((8, 8, 3), np.uint8))
    (source / "broken.png").write_bytes(b"not an image")
    cases = [
        (["--camera", "S6", "--iso", "800"], "unknown camera 'S6'"),
        (["--camera", "V1", "--iso", "20000"], "outside the trained range 100-1600"),
        (["--camera", "V1", "--iso", "400", str(source), str(source / "out")], "inside the input folder"),
    ]
    for extra, message in cases:
        paths = [] if any(str(source) in e for e in extra) else [str(source), str(tmp_path / "o")]
        code = main(["synthesize", "--checkpoint", str(model_dir), "--quiet", *extra, *paths])
        assert code == 2 and message in capsys.readouterr().err
    code = main(["synthesize", "--checkpoint", str(model_dir), "--quiet", "--camera", "V1", "--iso", "400",
                 str(source / "broken.png"), str(tmp_path / "b.png")])
    assert code == 2 and "broken.png: unreadable" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "b.png").exists()
    assert main(["synthesize", "--checkpoint", str(model_dir), "--quiet", "--camera", "V1", "--iso", "20000",
                 "--extrapolate", str(source / "a.png"), str(tmp_path / "x.png")]) == 0


def test_interpolated_iso_lies_between_its_neighbours():
    space = ConditionSpace(("V1",), (100, 1600), "continuous")
    feature = space.iso.feature
    assert feature(100) == -1 and feature(1600) == 1 and -1 < feature(400) < 1
    with pytest.raises(BadInputError):
        feature(50)


def test_synthesized_pairs_are_reproducible_per_index_and_batch_in_a_dataloader(model_dir):
    from nmflowgan.synthesis import SynthesizedPairs

    model = NoiseModel.load(model_dir)
    clean = [torch.rand(3, 20, 24), torch.rand(3, 20, 24)]
    pairs = SynthesizedPairs(clean, model, ["V1", "V2"], [100, 800], seed=4)
    assert len(pairs) == 8
    item = pairs[5]
    assert item["camera"] == "V1" and item["iso"] == 800 and item["clean"] is clean[1]
    assert item["noisy"].shape == (3, 20, 24) and item["noisy"].dtype == torch.float32
    assert torch.equal(pairs[5]["noisy"], item["noisy"]) and not torch.equal(pairs[4]["noisy"], item["noisy"])
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["noisy"].shape == (4, 3, 20, 24) and torch.equal(batch["noisy"][1], pairs[1]["noisy"])
    with pytest.raises(BadInputError, match="unknown camera"):
        SynthesizedPairs(clean, model, ["S6"], [100])
