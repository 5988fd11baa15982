"""The camera's grid: every pixel keeps its place in the 2x2 colour-filter and 8x8 JPEG grids through cropping,
flips and rotations; a model that reads the grid draws by it, and synthesis counts it from the frame's origin."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from nmflowgan.conditions import grid_positions
from nmflowgan.config import ADDED_LATER, FlowConfig, ModelConfig, from_dict, preset, to_dict
from nmflowgan.data.patches import PatchDataset, collate
from nmflowgan.errors import BadInputError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.synthesis import synthesize_image
from tests.conftest import exit_code, synthesize_cli, write_image


@pytest.mark.parametrize("augment", ["none", "flips", "all"])
def test_each_patch_pixel_keeps_its_grid_position_through_crops_flips_and_turns(coordinate_pair, augment):
    dataset = PatchDataset([coordinate_pair], patch_px=16, stride_px=4, augment=augment, seed=5)
    orientations = set()
    for epoch in range(6):
        for index in range(len(dataset)):
            item = dataset[(index, epoch)]
            assert torch.equal(item["grid"], item["noisy"][:2]), (augment, epoch, index)
            orientations.add((int(item["grid"][0, 0, 0]), int(item["grid"][1, 0, 0]), int(item["grid"][0, 0, 1])))
    batch = collate([dataset[0], dataset[1]])
    assert batch.grid.shape == (2, 2, 16, 16) and torch.equal(batch.grid[:, :2], batch.noisy[:, :2])


def test_flips_keep_rows_as_rows(coordinate_pair):
    dataset = PatchDataset([coordinate_pair], patch_px=16, stride_px=8, augment="flips", seed=1)
    for epoch in range(8):
        for index in range(len(dataset)):
            grid = dataset[(index, epoch)]["grid"]
            assert (grid[0] == grid[0, :, :1]).all(), "a row of the patch is a row of the frame"
            assert (grid[1] == grid[1, :1, :]).all(), "a column of the patch is a column of the frame"


def test_grid_positions_count_from_the_frame_origin():
    grid = grid_positions(2, 3, 10, top=7, left=5)
    assert grid.shape == (2, 2, 3, 10)
    assert grid[0, 0, :, 0].tolist() == [7, 0, 1]
    assert grid[1, 1, 0].tolist() == [5, 6, 7, 0, 1, 2, 3, 4, 5, 6]


def _grid_model():
    """A ``small`` model that reads the 8x8 grid and has one latent filter per 2x2 phase, its grid values busy."""
    config = preset("small").model
    config = dataclasses.replace(config, flow=dataclasses.replace(config.flow, grid_px=8), correlation_grid_px=2)
    model = NoiseModel(config, cameras=("V1",), isos=(100, 1600))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("grid.table") or name == "correlation.net.2.bias":
                parameter.normal_(0, 2.0)
    return model


def test_a_grid_model_draws_by_the_pixels_place_in_the_grid():
    model = _grid_model()
    clean = torch.full((1, 3, 16, 16), 0.5)
    latent = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = model.encode("V1", 400, 1)

    def noise(top, left):
        grid = grid_positions(1, 16, 16, top, left)
        return model.draw(clean, cond.with_grid(grid), latent=latent, options=SamplingOptions.plain(), rounded=False)

    assert torch.equal(noise(0, 0), model.draw(clean, cond, latent=latent, options=SamplingOptions.plain(),
                                               rounded=False)), "no grid given: the frame's origin"
    assert torch.allclose(noise(8, 16), noise(0, 0)), "one whole grid period later: the same noise"
    assert not torch.allclose(noise(1, 0), noise(0, 0), atol=1e-3)
    assert not torch.allclose(noise(0, 2), noise(0, 0), atol=1e-3), "the 8x8 grid, not only the 2x2"
    # the per-phase std differs on a flat image (the colour-filter pattern)
    many = model.draw(torch.full((64, 3, 16, 16), 0.5), model.encode("V1", 400, 64),
                      generator=torch.Generator().manual_seed(1), options=SamplingOptions.plain(), rounded=False)
    by_phase = torch.stack([many[:, :, a::2, b::2].std() for a in (0, 1) for b in (0, 1)])
    assert (by_phase.max() / by_phase.min()) > 1.05


@pytest.mark.parametrize("offset", [(8, 16), (16, 8)])
def test_a_crop_drawn_at_its_offset_gets_the_whole_images_noise_away_from_its_border(offset):
    model = _grid_model()
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, (48, 64, 3), dtype=np.uint8)
    top, left = offset
    crop = np.ascontiguousarray(image[top : top + 32, left : left + 40])
    options = SamplingOptions.plain()
    whole = synthesize_image(model, image, "V1", 400, seed=4, tile_px=24, options=options)
    part = synthesize_image(model, crop, "V1", 400, seed=4, tile_px=24, options=options, origin=offset)
    margin = 8  # SAL sees 4 px on each side, the latent filter 2
    inner = np.s_[margin:-margin, margin:-margin]
    difference = np.abs(part[inner].astype(int) - whole[top : top + 32, left : left + 40][inner].astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99
    unaligned = synthesize_image(model, crop, "V1", 400, seed=4, tile_px=24, options=options)
    assert (unaligned[inner] != part[inner]).mean() > 0.5, "without its offset, the crop is another place"


def test_synthesis_refuses_a_bad_origin():
    model = _grid_model()
    with pytest.raises(BadInputError, match="origin"):
        synthesize_image(model, np.zeros((8, 8, 3), np.uint8), "V1", 400, origin=(-1, 0))


def test_configs_from_before_the_grid_load_as_the_model_they_were():
    saved = to_dict(preset("small").model)
    del saved["correlation_grid_px"], saved["flow"]["grid_px"]
    loaded = from_dict(ModelConfig, saved)
    assert loaded.correlation_grid_px == 0 and loaded.flow.grid_px == 0
    assert ("FlowConfig", "grid_px") in ADDED_LATER
    incomplete = to_dict(FlowConfig())
    del incomplete["conv_features"]
    with pytest.raises(BadInputError, match="conv_features"):
        from_dict(FlowConfig, incomplete)
    with pytest.raises(BadInputError, match="grid_px"):
        FlowConfig(grid_px=3)


def test_synthesize_takes_the_origin_of_a_crop_and_records_it(small_model_dir, tmp_path):
    source = write_image(tmp_path / "crop.png")
    assert synthesize_cli(small_model_dir, source, tmp_path / "out.png", "--origin", "8", "16") == 0
    assert json.loads((tmp_path / "out.json").read_text())["origin"] == [8, 16]
    assert exit_code(["synthesize", "--checkpoint", str(small_model_dir), "--camera", "V1", "--iso", "400",
                      "--origin", "-2", "0", str(source), str(tmp_path / "bad.png")]) == 2
