"""Pairs from bursts: the arithmetic that gives back the camera's noise, the refusals, the simulator's bursts."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from nmflowgan.cli import main
from nmflowgan.data.bursts import burst_pairs, check_still, find_bursts, frame_shift, write_burst_pairs
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.io import EXIF_IFD, EXIF_ISO, EXIF_MODEL, exif_camera, exif_iso, read_rgb, write_png
from nmflowgan.data.simcam import simulate
from nmflowgan.errors import BadInputError, DataError, OutputExistsError


def texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random scene, ``float (size, size)`` around 128 (std 25) with edges of every direction."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 3.0)
    return 128 + 25 * field / field.std()


def burst_of(scene: np.ndarray, frames: int, sigma: float, seed: int = 1, correlated: bool = False) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` frames: the scene plus independent noise of std ``sigma`` (spatially correlated along
    rows when ``correlated``), rounded like a camera's output."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(frames, *scene.shape, 3))
    if correlated:  # lag-1 correlation 0.5 along rows, unit variance: (n[x] + n[x+1]) / sqrt(2)
        noise = (noise + np.roll(noise, 1, axis=2)) / np.sqrt(2)
    return np.clip(np.round(scene[None, :, :, None] + sigma * noise), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("frames", [4, 8, 16])
def test_the_pairs_noise_has_the_cameras_level_not_the_one_inflated_by_the_mean(frames):
    scene, sigma = texture(96), 6.0
    burst = burst_of(scene, frames, sigma, correlated=True)
    clean, noisy = burst_pairs(burst)
    noise = noisy.astype(float) - clean
    true = burst.astype(float) - scene[None, :, :, None]
    assert abs(noise.std() / true.std() - 1) < 0.02
    left_over = burst.astype(float) - (burst.astype(float).sum(0) - burst) / (frames - 1)
    assert left_over.std() / true.std() - 1 > 0.5 * (np.sqrt(frames / (frames - 1)) - 1)  # what the scaling removes

    def lag1(values):
        return np.mean(values[:, :, 1:] * values[:, :, :-1]) / np.mean(values ** 2)

    assert abs(lag1(noise) - lag1(true)) < 0.03  # the spatial correlation is kept
    assert abs(clean.astype(float) - scene[None, :, :, None]).std() < sigma / np.sqrt(frames - 1) + 0.3


def test_values_the_camera_clipped_stay_clipped():
    burst = burst_of(np.full((32, 32), 3.0), 6, 5.0)
    clean, noisy = burst_pairs(burst)
    assert (burst == 0).any()
    assert np.array_equal(noisy[burst == 0], burst[burst == 0])


def test_a_still_burst_passes_and_a_moved_frame_is_named():
    scene = texture(128)
    burst = burst_of(scene, 6, 4.0)
    names = [f"frame-{i}.png" for i in range(6)]
    assert max(np.hypot(*s) for s in check_still(burst, names)) < 0.05
    flat = burst_of(np.full((128, 128), 100.0), 6, 4.0)  # nothing to align: never refused for motion
    assert max(np.hypot(*s) for s in check_still(flat, names)) < 0.05
    moved = burst.copy()
    moved[3] = burst_of(np.roll(scene, 2, axis=1), 1, 4.0, seed=9)[0]
    with pytest.raises(DataError, match=r"frame-3.png: moved by \(\+0.00, -2.00\) px"):
        check_still(moved, names)
    half = burst.copy()
    half[2] = burst_of(ndimage.shift(scene, (0.5, 0.0), order=3, mode="nearest"), 1, 4.0, seed=9)[0]
    with pytest.raises(DataError, match="frame-2.png: moved by"):
        check_still(half, names)


@pytest.mark.parametrize("shift", [(0.3, 0.0), (0.0, -0.4), (0.2, 0.2)])
def test_a_fraction_of_a_pixel_is_measured(shift):
    scene = texture(128, seed=3)
    moved = ndimage.shift(scene, (-shift[0], -shift[1]), order=3, mode="nearest")  # moved(p) = scene(p + shift)
    dy, dx = frame_shift(moved, scene)
    assert abs(dy - shift[0]) < 0.05 and abs(dx - shift[1]) < 0.05


def test_a_change_of_exposure_is_refused():
    burst = burst_of(texture(64), 5, 3.0)
    burst[4] = np.clip(burst[4].astype(float) * 1.1, 0, 255).astype(np.uint8)
    with pytest.raises(DataError, match="f4: its mean level .* exposure or the light changed"):
        check_still(burst, [f"f{i}" for i in range(5)])


def save_burst(folder, frames, camera="Phone X", iso=800):
    folder.mkdir(parents=True)
    exif = Image.Exif()
    if camera:
        exif[EXIF_MODEL] = camera
    if iso:
        exif.get_ifd(EXIF_IFD)[EXIF_ISO] = iso
    for index, frame in enumerate(frames):
        write_png(folder / f"{index:03d}.png", frame, exif=exif.tobytes())


def test_bursts_become_a_data_set_every_command_reads(tmp_path):
    scene = texture(64)
    save_burst(tmp_path / "in" / "desk", burst_of(scene, 5, 4.0, seed=1))
    save_burst(tmp_path / "in" / "shelf", burst_of(scene[::-1], 6, 4.0, seed=2), iso=1600)
    out = write_burst_pairs(tmp_path / "in", tmp_path / "pairs", progress=False)
    records = find_pairs(out)
    assert len(records) == 11 and {r.camera for r in records} == {"Phone X"}
    assert {(r.scene, r.iso) for r in records} == {("desk", 800.0), ("shelf", 1600.0)}
    summary = json.loads((out / "bursts.json").read_text())["bursts"]
    assert [b["scene"] for b in summary] == ["desk", "shelf"] and summary[0]["noise_scale"] == pytest.approx(0.8 ** 0.5)
    first = read_rgb(records[0].noisy)
    assert first.shape == (64, 64, 3)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        write_burst_pairs(tmp_path / "in", tmp_path / "pairs", progress=False)
    with pytest.raises(BadInputError, match="holds the input"):
        write_burst_pairs(tmp_path / "in" / "desk", tmp_path / "in", progress=False, overwrite=True)


def test_bad_bursts_are_refused_naming_the_file(tmp_path):
    scene = texture(32)
    save_burst(tmp_path / "short", burst_of(scene, 3, 4.0))
    with pytest.raises(DataError, match="short: a burst of 3 frame.s. is too short; at least 4"):
        find_bursts(tmp_path / "short")
    save_burst(tmp_path / "mixed" / "a", burst_of(scene, 4, 4.0))
    Image.fromarray(burst_of(scene, 1, 4.0)[0]).save(tmp_path / "mixed" / "a" / "004.png")
    with pytest.raises(DataError, match="004.png: no camera model in the image's EXIF"):
        find_bursts(tmp_path / "mixed")
    assert find_bursts(tmp_path / "mixed", camera="Phone X", iso=800)[0].camera == "Phone X"
    save_burst(tmp_path / "sizes" / "a", [*burst_of(scene, 4, 4.0), burst_of(texture(40), 1, 4.0)[0]])
    with pytest.raises(DataError, match="004.png: size 40x40 differs from 000.png's 32x32"):
        write_burst_pairs(tmp_path / "sizes", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    save_burst(tmp_path / "iso" / "a", burst_of(scene, 4, 4.0))
    save_burst(tmp_path / "iso" / "b", burst_of(scene, 1, 4.0), iso=200)
    (tmp_path / "iso" / "b" / "000.png").rename(tmp_path / "iso" / "a" / "009.png")
    with pytest.raises(DataError, match="009.png: its EXIF ISO 200.0 differs from 000.png's 800.0"):
        find_bursts(tmp_path / "iso")


def test_the_simulator_writes_bursts_whose_first_frames_are_its_captures(tmp_path):
    data = simulate(tmp_path / "sim", cameras=["V2"], isos=[800], scenes=3, size_px=48, burst_frames=5,
                    progress=False)
    plain = simulate(tmp_path / "plain", cameras=["V2"], isos=[800], scenes=3, size_px=48, progress=False)
    burst = sorted((data / "bursts").iterdir())[0]
    frames = sorted(burst.glob("*.png"))
    assert len(frames) == 5 and exif_camera(frames[0]) == "V2" and exif_iso(frames[4]) == 800
    folder = data / "train" / burst.name
    for capture, frame in (("010", frames[0]), ("011", frames[1])):
        (noisy,) = folder.glob(f"*_NOISY_SRGB_{capture}.PNG")
        assert np.array_equal(read_rgb(noisy), read_rgb(frame))
        assert np.array_equal(read_rgb(noisy), read_rgb(plain / "train" / burst.name / noisy.name))
    assert main(["burst-pairs", str(data / "bursts"), "--out", str(tmp_path / "pairs"), "--quiet"]) == 0
    assert len(find_pairs(tmp_path / "pairs")) == 5 * len(list((data / "bursts").iterdir()))
