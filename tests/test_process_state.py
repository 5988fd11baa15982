"""The library leaves process-wide state alone: Pillow's limits, matplotlib's backend, torch's global RNG and
signal handlers belong to the application; the project's own pixel limit is checked and named."""

import struct
import subprocess
import sys
import threading
import zlib

import pytest
import torch

from nmflowgan.data.io import MAX_PIXELS, read_rgb, write_png
from nmflowgan.errors import DataError
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, train_denoiser
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from nmflowgan.training.run import StopRequest
from tests.conftest import tiny_config


def test_importing_and_plotting_change_neither_pillow_nor_matplotlib():
    script = (
        "import sys, PIL.Image as I, matplotlib\n"
        "def backend(): return dict.__getitem__(matplotlib.rcParams, 'backend')  # unresolved: get_backend() resolves\n"
        "limit, before = I.MAX_IMAGE_PIXELS, backend()\n"
        "import nmflowgan, nmflowgan.cli, nmflowgan.data.io, nmflowgan.demo, nmflowgan.reporting.report\n"
        "from pathlib import Path; import tempfile\n"
        "from nmflowgan.reporting import plots\n"
        "plots.validation_curve([{'step': 0, 'val_kld': 0.1}, {'step': 1, 'val_kld': 0.05}],"
        " Path(tempfile.mkdtemp()) / 'v.png')\n"
        "assert I.MAX_IMAGE_PIXELS == limit, I.MAX_IMAGE_PIXELS\n"
        "assert backend() == before and 'matplotlib.pyplot' not in sys.modules, backend()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _png_header(path, width, height):
    """A PNG whose header claims ``width x height`` RGB pixels, with almost no pixel data: a bomb's shape."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height"), [(13_000, 12_000), (20_000, 20_000)])
def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, width, height):
    # 156 MP: over the project's limit, under Pillow's hard limit; 400 MP: over both. Neither is decoded.
    path = _png_header(tmp_path / "huge.png", width, height)
    assert width * height > MAX_PIXELS
    with pytest.raises(DataError, match=rf"huge.png: .*limit.* {MAX_PIXELS:,} pixels"):
        read_rgb(path)


def test_the_pixel_limit_is_a_parameter(tmp_path):
    write_png(tmp_path / "small.png", torch.zeros(20, 20, 3, dtype=torch.uint8).numpy())
    assert read_rgb(tmp_path / "small.png", max_pixels=400).shape == (20, 20, 3)
    with pytest.raises(DataError, match="small.png: 20x20 = 400 pixels exceeds the limit of 399"):
        read_rgb(tmp_path / "small.png", max_pixels=399)


def test_training_leaves_the_global_rng_alone(tmp_path, simcam_tree):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    train_noise_model(tiny_config(), NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "noise", steps=2,
                                                          device="cpu", quiet=True))
    train_denoiser(tiny_config(), DenoiserTrainingOptions(data=simcam_tree, out=tmp_path / "den", noise="real",
                                                          steps=2, device="cpu", quiet=True, val_patches=4))
    assert torch.equal(torch.rand(4), expected)


def test_training_runs_outside_the_main_thread_and_stops_on_request(tmp_path, simcam_tree):
    stop, outcome = StopRequest(), {}
    stop.request("caller")  # already set: the loop takes one step, saves and returns

    def work():
        try:
            outcome["result"] = train_noise_model(tiny_config(), NoiseTrainingOptions(
                data=simcam_tree, out=tmp_path / "run", steps=50, device="cpu", quiet=True), stop)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.interrupted == "caller" and result.step == 1
    assert (tmp_path / "run" / "last").resolve().name == "step-00000001"
