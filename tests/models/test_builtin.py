"""The model that ships in the package loads offline and draws the noise of the cameras it was trained on."""

import json

import numpy as np
import pytest
import torch

from nmflowgan.cli import main
from nmflowgan.data.io import read_rgb, write_png
from nmflowgan.data.simcam import builtin_cameras
from nmflowgan.data.simcam.camera import camera_population
from nmflowgan.models.noise_model import BUILTIN_DIR, NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.synthesis import synthesize_image

# What the model card (docs/models.md) says the built-in model was trained on.
POPULATION, POPULATION_SEED = 32, 0


@pytest.fixture(scope="module")
def builtin():
    return NoiseModel.load("builtin")


def test_the_builtin_model_is_small_and_knows_the_simulated_population_across_iso_50_to_12800(builtin):
    size = sum(path.stat().st_size for path in BUILTIN_DIR.iterdir())
    assert size <= 5 * 2**20
    expected = tuple(c.code for c in camera_population(POPULATION, POPULATION_SEED)) + tuple(
        c.code for c in builtin_cameras())
    assert builtin.cameras == tuple(sorted(expected))
    assert builtin.space.iso_range == (50.0, 12800.0) and builtin.space.iso.interpolates


@pytest.mark.parametrize(("code", "iso"), [("V2", 1600), ("V4", 200), ("A3", 12800), ("A7", 800)])
def test_the_builtin_model_draws_noise_within_30_percent_of_the_simulated_cameras_level(builtin, code, iso):
    cameras = {c.code: c for c in (*builtin_cameras(), *camera_population(POPULATION, POPULATION_SEED))}
    grey = np.full((96, 96, 3), 120, np.uint8)
    clean, noisy = cameras[code].capture(grey, iso, 1, torch.Generator().manual_seed(0))
    real_std = (noisy[0].astype(float) - clean).std(axis=(0, 1))
    drawn = builtin.sample(clean, camera=code, iso=iso, generator=torch.Generator().manual_seed(0))
    model_std = (drawn.astype(float) - clean).std(axis=(0, 1))
    assert np.all(np.abs(model_std / real_std - 1) < 0.3), (model_std, real_std)


def test_synthesize_with_the_builtin_model_needs_no_training_and_its_sidecar_reproduces_the_image(builtin, tmp_path):
    clean = np.full((40, 56, 3), 128, np.uint8)
    write_png(tmp_path / "in.png", clean)
    assert main(["synthesize", "--checkpoint", "builtin", "--camera", "V3", "--iso", "3200", "--quiet",
                 str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 0
    noisy, recipe = read_rgb(tmp_path / "out.png"), json.loads((tmp_path / "out.json").read_text())
    assert (recipe["camera"], recipe["iso"], recipe["checkpoint"]) == ("V3", 3200, "builtin")
    again = synthesize_image(builtin, clean, "V3", 3200, seed=recipe["image_seed"],
                             options=SamplingOptions.named("auto"))  # the command's default path
    assert np.array_equal(noisy, again) and (noisy.astype(float) - 128).std() > 1
