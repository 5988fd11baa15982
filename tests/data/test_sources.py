"""SIDD trees and .mat blocks, paired folders, patches, and a clear error for each kind of bad data."""

import shutil

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from nmflowgan.data.folders import default_splits, find_pairs, layout, read_metadata
from nmflowgan.data.io import read_rgb, write_png
from nmflowgan.data.patches import PatchDataset, collate
from nmflowgan.data.sidd import SiddFolder, load_sidd_blocks, read_mat_array, scan_sidd
from nmflowgan.errors import DataError

folder_fields = st.builds(
    SiddFolder, st.integers(0, 10**6), st.integers(0, 10**4), st.text("ABCGINPS0123456789", min_size=2, max_size=2),
    st.integers(1, 10**6), st.integers(0, 99999), st.integers(0, 9999), st.sampled_from("LNH"),
)


@given(folder_fields)
def test_folder_names_round_trip(fields):
    assert SiddFolder.parse(fields.name) == fields


def test_folder_names_grow_past_their_sidd_width():
    """A simulator set of more than 9,999 pairs names its instances 10000 on: the reader takes them."""
    assert SiddFolder.parse("10361_057_V1_00050_08000_5500_N") == SiddFolder(10361, 57, "V1", 50, 8000, 5500, "N")
    with pytest.raises(DataError, match="not a SIDD folder name"):
        SiddFolder.parse("00361_057_V1_00050_08000_5500_N")  # a fifth digit only where the number needs it


@given(st.text(max_size=40))
def test_random_folder_names_parse_or_raise_data_error(name):
    try:
        fields = SiddFolder.parse(name)
    except DataError as error:
        assert repr(name) in str(error)
    else:
        assert fields.name == name


def test_a_sidd_folder_name_parses_into_its_fields():
    fields = SiddFolder.parse("0054_003_S6_00800_00350_3200_N")
    assert (fields.instance, fields.scene, fields.camera, fields.iso, fields.brightness) == (54, 3, "S6", 800, "N")


def _sidd_tree(tmp_path, instances=(4, 54, 11)):
    """A tiny SIDD-named tree with both captures."""
    root = tmp_path / "SIDD_Medium_Srgb" / "Data"
    rng = np.random.default_rng(0)
    for n, instance in enumerate(instances):
        fields = SiddFolder(instance, n + 1, "S6", 800, 350, 3200, "N")
        folder = root / fields.name
        folder.mkdir(parents=True)
        for capture in ("010", "011"):
            clean, noisy = fields.pair_files(folder, capture)
            write_png(clean, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
            write_png(noisy, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return root.parent


def test_sidd_tree_both_captures_and_standard_split(tmp_path):
    root = _sidd_tree(tmp_path)
    every = find_pairs(root)
    assert len(every) == 6 and {r.noisy.name[-7:-4] for r in every} == {"010", "011"}
    assert {r.clean.parent.name[:4] for r in find_pairs(root, "sidd-train")} == {"0004", "0011"}
    assert {r.clean.parent.name[:4] for r in find_pairs(root, "sidd-test")} == {"0054"}
    with pytest.raises(DataError, match="sidd-train"):
        find_pairs(root, "validation")


def test_sidd_bad_folder_name_and_skip_bad(tmp_path, caplog):
    root = _sidd_tree(tmp_path)
    (root / "Data" / "not_a_sidd_folder").mkdir()
    with pytest.raises(DataError, match="not_a_sidd_folder.*SSSS_NNN"):
        scan_sidd(root)
    assert len(scan_sidd(root, skip_bad=True)) == 6
    assert "not_a_sidd_folder" in caplog.text


def _blocks(rng):
    return rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)


def test_mat_blocks_v5_and_v73(tmp_path):
    rng = np.random.default_rng(1)
    noisy, clean = _blocks(rng), _blocks(rng)
    scipy.io.savemat(tmp_path / "noisy.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(tmp_path / "gt.mat", {"ValidationGtBlocksSrgb": clean})
    with h5py.File(tmp_path / "noisy73.mat", "w") as handle:  # MATLAB v7.3 stores axes reversed
        handle["ValidationNoisyBlocksSrgb"] = noisy.transpose()
    (tmp_path / "meta.csv").write_text("image,camera,iso\n0,S6,800\n1,GP,100\n")
    blocks = load_sidd_blocks(tmp_path / "noisy.mat", tmp_path / "gt.mat", tmp_path / "meta.csv")
    assert np.array_equal(blocks.noisy, noisy) and np.array_equal(blocks.clean, clean)
    assert blocks.cameras == ("S6", "GP") and blocks.isos == (800.0, 100.0)
    assert np.array_equal(read_mat_array(tmp_path / "noisy73.mat"), noisy)
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage")
    with pytest.raises(DataError, match="bad.mat"):
        read_mat_array(tmp_path / "bad.mat")
    with pytest.raises(DataError, match="does not match"):
        scipy.io.savemat(tmp_path / "small.mat", {"x": clean[:1]})
        load_sidd_blocks(tmp_path / "noisy.mat", tmp_path / "small.mat")


def _folder_set(tmp_path, rows, header="clean,noisy,camera,iso"):
    rng = np.random.default_rng(2)
    for name in ("a_clean.png", "a_noisy.png"):
        write_png(tmp_path / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "metadata.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_a_metadata_csv_row_becomes_a_pair_with_its_camera_iso_and_paths(tmp_path):
    root = _folder_set(tmp_path, ["a_clean.png,a_noisy.png,S6,1600"])
    (record,) = find_pairs(root)
    assert record.camera == "S6" and record.iso == 1600 and record.clean == (root / "a_clean.png").resolve()


def test_paired_folders_as_train_and_test_splits(tmp_path):
    for split, camera in (("train", "S6"), ("test", "N6")):
        (tmp_path / split).mkdir()
        _folder_set(tmp_path / split, [f"a_clean.png,a_noisy.png,{camera},800"])
    assert layout(tmp_path) == "train-test" and default_splits(tmp_path, None, None) == ("train", "test")
    assert [r.camera for r in find_pairs(tmp_path, "train")] == ["S6"]
    (test,) = find_pairs(tmp_path, "test")
    assert test.camera == "N6" and test.clean == (tmp_path / "test" / "a_clean.png").resolve()


@pytest.mark.parametrize(("rows", "header", "message"), [
    (["a_clean.png,a_noisy.png,S6,1600,x"], "clean,noisy,camera,iso,exposure", r"unknown columns \['exposure'\]"),
    (["a_clean.png,a_noisy.png,S6"], "clean,noisy,camera", r"missing columns \['iso'\]"),
    (["a_clean.png,a_noisy.png,S6,fast"], None, r"metadata.csv:2: iso 'fast'"),
    (["a_clean.png,a_noisy.png,S6,-3"], None, "positive"),
    (["../outside.png,a_noisy.png,S6,100"], None, "outside the data set"),
    (["/etc/passwd,a_noisy.png,S6,100"], None, "outside the data set"),
    (["a_clean.png,a_noisy.png,S6,100,extra"], None, "fields"),
])
def test_metadata_errors_name_file_and_problem(tmp_path, rows, header, message):
    root = _folder_set(tmp_path, rows, header or "clean,noisy,camera,iso")
    with pytest.raises(DataError, match=message):
        read_metadata(root / "metadata.csv")


def _copy_tree(simcam_tree, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(simcam_tree, copy)
    return copy


def test_bad_pairs_each_give_one_clear_error(tmp_path, simcam_tree):
    root = _copy_tree(simcam_tree, tmp_path)
    records = find_pairs(root, "train")
    records[0].noisy.unlink()
    write_png(records[1].noisy, np.zeros((32, 64, 3), np.uint8))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(records[2].noisy, format="PNG")
    records[3].noisy.write_bytes(records[3].noisy.read_bytes()[:200])
    expected = [(records[0], "missing file"), (records[1], "does not match"), (records[2], "mode L is not RGB"),
                (records[3], "unreadable or truncated")]
    for record, message in expected:
        # Indexing reads headers only; a file truncated after its header fails when its patch is read.
        with pytest.raises(DataError, match=message) as caught:
            PatchDataset([record], patch_px=32, stride_px=32)[0]
        assert str(record.noisy) in str(caught.value)
    dataset = PatchDataset(records, patch_px=32, stride_px=32, skip_bad=True)
    assert len(dataset.records) == len(records) - 3


def test_patches_grid_augmentation_and_workers(simcam_tree):
    records = find_pairs(simcam_tree, "train")
    dataset = PatchDataset(records, patch_px=32, stride_px=16, augment=True, seed=7, with_oracle=True)
    assert len(dataset) == len(records) * 9
    record, y, x = dataset.locate(10)
    item = dataset[10]
    assert item["clean"].shape == (3, 32, 32) and item["clean"].dtype == torch.uint8
    assert item["camera"] == record.camera and item["iso"] == record.iso and "oracle" in item
    assert torch.equal(dataset[10]["noisy"], item["noisy"])
    # The augmentation is one of the 8 symmetries of the unaugmented window.
    plain = PatchDataset(records, patch_px=32, stride_px=16)[10]["clean"]
    variants = [torch.rot90(v, k, dims=(1, 2)) for v in (plain, plain.flip(2)) for k in range(4)]
    assert any(torch.equal(item["clean"], v) for v in variants)
    dataset.set_epoch(1)
    changed = sum(not torch.equal(dataset[i]["clean"], PatchDataset(records, 32, 16, True, 7)[i]["clean"])
                  for i in range(40))
    assert changed > 10
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate)
    serial = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=0, collate_fn=collate)
    for a, b in zip(loader, serial):
        assert torch.equal(a.noisy, b.noisy) and a.cameras == b.cameras


def test_patch_larger_than_image_is_refused(simcam_tree):
    with pytest.raises(DataError, match="smaller than the 96px patch"):
        PatchDataset(find_pairs(simcam_tree, "train"), patch_px=96)


def test_16bit_and_jpeg_images_read_as_8bit(tmp_path):
    import tifffile

    values = np.random.default_rng(0).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", values, photometric="rgb")
    assert np.array_equal(read_rgb(tmp_path / "x.tif"), (values >> 8).astype(np.uint8))
    Image.fromarray((values >> 8).astype(np.uint8)).save(tmp_path / "x.jpg", quality=95)
    assert read_rgb(tmp_path / "x.jpg").shape == (5, 7, 3)
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    with pytest.raises(DataError, match="a.png.*RGBA"):
        read_rgb(tmp_path / "a.png")


@given(st.binary(max_size=300))
def test_random_bytes_are_refused_cleanly(data):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.png"
        path.write_bytes(data)
        with pytest.raises(DataError, match="x.png"):
            read_rgb(path)


def test_a_folder_in_sidds_layout_that_is_not_sidd_trains_on_every_pair(simcam_tree, tmp_path, caplog, monkeypatch):
    """The simulator's train/ is a tree in SIDD's layout: nothing of it may be dropped by SIDD's instance split
    unless that split is asked for, and a run says how many pairs and which conditions it trains on."""
    import logging

    import nmflowgan.data.training_data as module
    from nmflowgan.data.folders import default_splits
    from nmflowgan.data.training_data import training_data

    monkeypatch.setattr(module, "MIN_SCENES_PER_CAMERA", 1)  # enough scenes to hold whole ones out

    tree = simcam_tree / "train"
    folders = [p for p in tree.iterdir() if p.is_dir()]
    assert default_splits(tree, None, None) == (None, None)
    pairs = find_pairs(tree, None)
    assert {r.clean.parent for r in pairs} == set(folders)
    assert default_splits(tree, "sidd-train", None) == ("sidd-train", "sidd-test")
    assert default_splits(tree, None, "sidd-test") == ("sidd-train", "sidd-test")
    with caplog.at_level(logging.INFO, logger="nmflowgan.data.training_data"):
        data = training_data(tree, None, None, 32, 32, 1)
    dataset = data.patches
    # nothing is dropped: whole scenes are held out for validation, every other pair is trained on
    assert {r.clean.parent for r in [*dataset.records, *data.validation]} == set(folders)
    assert not {r.scene for r in dataset.records} & {r.scene for r in data.validation}
    conditions = sorted({(r.camera, r.iso) for r in dataset.records})
    assert (f"training on {len(dataset.records)} pairs (every pair of the data set less 1 scene(s) held out for "
            f"validation), {len(conditions)} camera/ISO") in caplog.text


def test_pairs_whose_noise_no_camera_makes_are_named_before_training(simcam_tree, tmp_path, caplog):
    import logging

    from nmflowgan.data.plausibility import implausible_pairs
    from nmflowgan.data.training_data import training_data

    records = find_pairs(simcam_tree, "train")[:6]
    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = ["clean,noisy,camera,iso"]
    for k, record in enumerate(records):
        clean, noisy = read_rgb(record.clean), read_rgb(record.noisy)
        if k == 1:
            noisy = clean  # no noise
        elif k == 2:
            clean, noisy = noisy, clean  # swapped
        elif k == 3:
            noisy = np.full_like(noisy, 255)  # saturated
        elif k == 4:
            other = next(r for r in find_pairs(simcam_tree, "train") if r.scene != record.scene)
            noisy = read_rgb(other.noisy)  # the noisy image of another scene
        write_png(folder / f"c{k}.png", clean)
        write_png(folder / f"n{k}.png", noisy)
        rows.append(f"c{k}.png,n{k}.png,{record.camera},{record.iso:g}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    found, checked = implausible_pairs(PatchDataset(read_metadata(folder / "metadata.csv"), 32, 32))
    assert checked == 6
    assert [(r.noisy.name, why.split(":")[0].split(" (")[0]) for r, why in found] == [
        ("n1.png", "no noise"), ("n2.png", "the clean image is rougher than the noisy one"),
        ("n3.png", "the noisy image is one flat value"), ("n4.png", "noisy - clean is image structure, not noise")]
    with caplog.at_level(logging.WARNING, logger="nmflowgan.data.training_data"):
        training_data(folder, None, None, 32, 32, 4)
    assert "4 of 6 pairs checked hold noise no camera makes" in caplog.text and "n2.png" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nmflowgan.data.training_data"):
        training_data(simcam_tree, None, None, 32, 32, 4)
    assert "no camera makes" not in caplog.text  # real simulated pairs raise nothing
