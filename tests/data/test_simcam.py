"""The simulator shows what real camera noise shows, reproducibly, and writes a usable SIDD tree."""

import hashlib
import json

import numpy as np
import pytest
import torch

from nmflowgan.data.folders import find_pairs
from nmflowgan.data.simcam import builtin_cameras, simulate
from nmflowgan.data.simcam.camera import scene_tensor
from nmflowgan.data.simcam.scenes import flat_patches, make_scene
from nmflowgan.errors import BadInputError, OutputExistsError

SIDD_CODES = {"IP", "GP", "S6", "N6", "G4"}


def _noise(camera, scene, iso, seed=0, draws=1):
    clean, noisy = camera.capture(scene, iso, draws, torch.Generator().manual_seed(seed))
    return clean, noisy.astype(np.float64) - clean


def _corr(noise, distance):
    """Mean over channels of the horizontal correlation of a (H, W, 3) noise map at ``distance``."""
    return np.mean([np.corrcoef(noise[:, :-distance, c].ravel(), noise[:, distance:, c].ravel())[0, 1]
                    for c in range(3)])


@pytest.fixture(scope="module")
def grey():
    return np.full((128, 128, 3), 110, np.uint8)


def test_five_cameras_with_distinct_codes_that_are_not_siddcodes():
    codes = [c.code for c in builtin_cameras()]
    assert len(codes) >= 5 and len(set(codes)) == len(codes) and not SIDD_CODES & set(codes)
    assert len({c.bayer for c in builtin_cameras()}) >= 3
    assert len({c.demosaic for c in builtin_cameras()}) == 3


@pytest.mark.parametrize("camera", builtin_cameras(), ids=lambda c: c.code)
def test_noise_std_grows_with_iso(camera, grey):
    stds = [_noise(camera, grey, iso)[1].std() for iso in (100, 400, 1600, 6400)]
    assert all(b > a * 1.3 for a, b in zip(stds, stds[1:])), stds


@pytest.mark.parametrize("camera", builtin_cameras(), ids=lambda c: c.code)
def test_noise_depends_on_intensity_and_channel(camera):
    levels = (15, 60, 110, 170, 230)
    stds = [_noise(camera, np.full((96, 96, 3), v, np.uint8), 1600)[1].std() for v in levels]
    assert max(stds) / min(stds) > 1.2, stds
    per_channel = _noise(camera, np.full((96, 96, 3), 110, np.uint8), 1600)[1].std(axis=(0, 1))
    assert per_channel.max() / per_channel.min() > 1.1, per_channel


@pytest.mark.parametrize("camera", builtin_cameras(), ids=lambda c: c.code)
def test_neighbour_correlation_positive_and_decaying(camera, grey):
    noise = _noise(camera, grey, 1600)[1]
    c1, c2, c4 = _corr(noise, 1), _corr(noise, 2), _corr(noise, 4)
    assert c1 > 0.3, c1
    assert c1 > c2 > c4 - 0.02 and abs(c4) < 0.1, (c1, c2, c4)


def test_cameras_differ_at_equal_iso(grey):
    stats = [(n.std(axis=(0, 1)), _corr(n, 1)) for n in (_noise(c, grey, 800)[1] for c in builtin_cameras())]
    for i in range(len(stats)):
        for j in range(i + 1, len(stats)):
            std_gap = np.abs(stats[i][0] - stats[j][0]).max()
            assert std_gap > 0.5 or abs(stats[i][1] - stats[j][1]) > 0.03, (i, j, stats[i], stats[j])


def test_raw_noise_is_zero_mean_and_follows_shot_read_model():
    camera = builtin_cameras()[0]
    raw = torch.full((1, 1, 256, 256), 0.3, dtype=torch.float64)
    noisy = camera.add_noise(raw, 1600, torch.Generator().manual_seed(0))
    shot, read = camera.noise_variance(1600)
    residual = (noisy - raw).flatten()
    n = residual.numel()
    expected = shot * 0.3 + read
    assert abs(residual.mean().item()) < 4 * (expected / n) ** 0.5
    assert abs(residual.var().item() / expected - 1) < 4 * (2 / n) ** 0.5


def test_independent_draws_of_one_clean_image():
    camera = builtin_cameras()[1]
    scene = make_scene("dead_leaves", 1, 64)
    clean, noisy = camera.capture(scene, 1600, 3, torch.Generator().manual_seed(0))
    assert noisy.shape == (3, 64, 64, 3) and clean.shape == (64, 64, 3)
    first, second = noisy[0].astype(float) - clean, noisy[1].astype(float) - clean
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.05


def test_scene_and_capture_reject_bad_input():
    with pytest.raises(BadInputError, match="uint8"):
        scene_tensor(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(BadInputError, match="ISO 20000"):
        builtin_cameras()[0].noise_variance(20000)
    flat = flat_patches(64, np.random.default_rng(0))
    assert flat.dtype == np.uint8 and len(np.unique(flat.reshape(-1, 3), axis=0)) > 20


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


def test_same_seed_gives_identical_files_and_a_sidd_tree(tmp_path, simcam_tree):
    again = simulate(tmp_path / "again", cameras=["V1", "V2"], isos=[100, 1600], scenes=6, size_px=64, seed=3,
                     progress=False)
    assert _digest(again) == _digest(simcam_tree)
    other = simulate(tmp_path / "other", cameras=["V1", "V2"], isos=[100, 1600], scenes=6, size_px=64, seed=4,
                     progress=False)
    assert _digest(other) != _digest(simcam_tree)


def test_tree_layout_splits_and_metadata(simcam_tree):
    meta = json.loads((simcam_tree / "simcam.json").read_text())
    assert meta["seed"] == 3 and [c["code"] for c in meta["cameras"]] == ["V1", "V2"]
    assert {"shot_at_100", "read_at_100", "bayer", "wb_gains", "rgb_from_cam", "demosaic"} <= set(meta["cameras"][0])
    train, test = find_pairs(simcam_tree, "train"), find_pairs(simcam_tree, "test")
    assert train and test and all(r.oracle is not None and r.oracle.exists() for r in train + test)
    assert not {r.scene for r in train} & {r.scene for r in test}
    assert {(r.camera, r.iso) for r in train} == {(c, i) for c in ("V1", "V2") for i in (100, 1600)}
    scenes = {s["index"]: s for s in meta["scenes"]}
    photos = {}
    for spec in scenes.values():
        if spec["kind"].startswith("photo:"):
            photos.setdefault(spec["kind"], set()).add(spec["split"])
    assert all(len(splits) == 1 for splits in photos.values())


def test_enough_scenes_give_a_val_split_of_its_own_that_training_validates_on():
    from nmflowgan.data.simcam.generate import plan_scenes

    specs = plan_scenes(16, 0, ["a.png", "b.png", "c.png", "d.png"])  # the demo's 16 scenes
    splits = [s.split for s in specs]
    assert splits.count("val") == 1 and splits.count("test") == 6 and splits.count("train") == 9
    assert not any(s.kind.startswith("photo:") for s in specs if s.split == "val")
    assert "val" not in [s.split for s in plan_scenes(6, 3, ["a.png"])], "too few: training holds scenes out itself"


@pytest.mark.parametrize("photos", [["a.png", "b.png", "c.png", "d.png"], []])
@pytest.mark.parametrize("count", [16, 32])
def test_every_split_holds_every_procedural_kind_its_size_allows(count, photos):
    from nmflowgan.data.simcam.generate import plan_scenes
    from nmflowgan.data.simcam.scenes import PROCEDURAL

    specs = plan_scenes(count, 0, photos)
    assert {s.kind for s in specs if not s.kind.startswith("photo:")} == set(PROCEDURAL)
    for split in ("train", "val", "test"):
        kinds = [s.kind for s in specs if s.split == split and not s.kind.startswith("photo:")]
        assert len(set(kinds)) == min(len(kinds), len(PROCEDURAL)), (split, kinds)
        assert max(map(kinds.count, set(kinds)), default=0) - min(map(kinds.count, set(kinds)), default=0) <= 1


def test_the_simulator_writes_val_and_training_picks_it(tmp_path):
    from nmflowgan.data.training_data import validation_split

    root = simulate(tmp_path / "sim", cameras=["V1"], isos=[100], scenes=16, size_px=32, seed=0, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["simcam.json", "test", "train", "val"]
    assert validation_split(root, "train", None) == "val"
    scenes = {split: {r.scene for r in find_pairs(root, split)} for split in ("train", "val", "test")}
    assert scenes["val"] and not scenes["val"] & (scenes["train"] | scenes["test"])
    assert simulate(root, cameras=["V1"], isos=[100], scenes=2, size_px=32, progress=False, overwrite=True) == root


def test_refuses_to_overwrite_and_validates(tmp_path, simcam_tree):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        simulate(simcam_tree, scenes=2, size_px=32, progress=False)
    with pytest.raises(BadInputError, match="S6"):
        simulate(tmp_path / "x", cameras=["S6"], progress=False)
    with pytest.raises(BadInputError, match="50-12800"):
        simulate(tmp_path / "x", isos=[20000], progress=False)
    assert not (tmp_path / "x").exists()


def test_a_drawn_population_spans_the_parameter_space_and_is_a_function_of_its_seed():
    from nmflowgan.data.simcam.camera import camera_population

    cameras = camera_population(48, seed=0)
    codes = [c.code for c in cameras]
    assert len(set(codes)) == 48 and not (SIDD_CODES | {c.code for c in builtin_cameras()}) & set(codes)
    assert camera_population(5, seed=0) == cameras[:5]  # camera i does not depend on the count
    assert camera_population(5, seed=1) != cameras[:5]
    assert {c.bayer for c in cameras} == {"RGGB", "BGGR", "GRBG", "GBRG"}
    assert {c.demosaic for c in cameras} == {"gradient", "bilinear", "chroma"}  # no caricature of a real demosaic
    assert any(c.jpeg_quality is None for c in cameras) and any(c.jpeg_quality for c in cameras)
    assert any(c.jpeg_requality for c in cameras) and all(c.jpeg_quality for c in cameras if c.jpeg_requality)
    shots = [c.shot_at_100 for c in cameras]
    assert max(shots) / min(shots) > 10  # small and large sensors
    for camera in cameras:
        assert np.allclose(np.sum(camera.rgb_from_cam, axis=1), 1.0, atol=1e-3)


def test_a_jpeg_camera_compresses_the_noise_and_correlates_it_like_a_camera_jpeg():
    import dataclasses

    scene = make_scene("dead_leaves", 3, 128)
    png = builtin_cameras()[2]  # nearest demosaic, no in-camera denoising: the least correlated camera
    jpeg = dataclasses.replace(png, jpeg_quality=70)
    _, png_noise = _noise(png, scene, 3200)
    _, jpeg_noise = _noise(jpeg, scene, 3200)
    assert jpeg_noise[0].std() < png_noise[0].std()  # quantized DCT coefficients drop fine noise
    assert _corr(jpeg_noise[0], 1) > _corr(png_noise[0], 1) + 0.05


def test_the_iso_range_reaches_12800_and_the_population_writes_a_usable_tree(tmp_path):
    out = simulate(tmp_path / "pop", cameras=[], isos=[50, 12800], scenes=2, size_px=64, population=3,
                   progress=False)
    pairs = find_pairs(out, "train") + find_pairs(out, "test")
    assert sorted({p.camera for p in pairs}) == ["A0", "A1", "A2"] and {p.iso for p in pairs} == {50, 12800}
    meta = json.loads((out / "simcam.json").read_text())
    assert [c["code"] for c in meta["cameras"]] == ["A0", "A1", "A2"]
    with pytest.raises(BadInputError, match="no cameras"):
        simulate(tmp_path / "none", cameras=[], scenes=2, size_px=64, progress=False)


@pytest.mark.parametrize("bayer", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_the_gradient_demosaic_keeps_flat_colours_and_ramps_and_every_sample_it_has(bayer):
    import dataclasses

    camera = dataclasses.replace(builtin_cameras()[0], bayer=bayer, demosaic="gradient")
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    for rgb in (torch.tensor([0.3, 0.5, 0.7]).view(1, 3, 1, 1).expand(1, 3, 16, 16),
                torch.stack([0.1 + 0.01 * columns, 0.2 + 0.02 * rows, 0.3 + 0.01 * (rows + columns)])[None]):
        masks = camera._masks(rgb)
        raw = (rgb * masks).sum(1, keepdim=True)
        rgb_out = camera._demosaic(raw)
        # a linear ramp is reproduced away from the reflected border, a flat colour everywhere
        assert torch.allclose(rgb_out[..., 2:-2, 2:-2], rgb[..., 2:-2, 2:-2], atol=1e-6)
        assert torch.equal(rgb_out * masks, rgb * masks)  # the sampled colour of each pixel is kept as it is
    # the missing samples follow the other channels' detail: a green edge moves red where red was not sampled
    green_edge = torch.where(columns >= 8, 0.8, 0.2)
    raw = (torch.stack([torch.full_like(rows, 0.5), green_edge, torch.full_like(rows, 0.5)])[None] * masks).sum(1, True)
    red = camera._demosaic(raw)[0, 0]
    assert red[4:12, 9].mean() > red[4:12, 6].mean() + 0.01
    bilinear = dataclasses.replace(camera, demosaic="bilinear")._demosaic(raw)[0, 0]
    assert torch.allclose(bilinear, torch.full_like(bilinear, 0.5))  # where bilinear sees the red samples alone


def test_a_second_jpeg_pass_changes_the_image_keeps_the_8x8_grid_and_needs_a_first():
    import dataclasses

    from nmflowgan.metrics.grid_stats import GridStatsAccumulator

    scene = make_scene("dead_leaves", 5, 128)
    once = dataclasses.replace(builtin_cameras()[0], jpeg_quality=75)
    twice = dataclasses.replace(once, jpeg_requality=80)
    clean, noisy = twice.capture(scene, 800, 1, torch.Generator().manual_seed(0))
    once_clean, once_noisy = once.capture(scene, 800, 1, torch.Generator().manual_seed(0))
    assert not np.array_equal(noisy, once_noisy)  # the second pass changed what the first left
    cvs = []
    for c, n in ((once_clean, once_noisy), (clean, noisy)):
        accumulator = GridStatsAccumulator()
        accumulator.update(torch.from_numpy(n[0].astype(np.float64) - c).permute(2, 0, 1)[None])
        cvs.append(float(accumulator.result().block_cv.mean()))
    assert cvs[1] > 0.01 and cvs[0] > 0.01  # both follow the 8x8 grid: the second pass is on the first's grid
    with pytest.raises(BadInputError, match="second JPEG"):
        dataclasses.replace(builtin_cameras()[0], jpeg_requality=80)
