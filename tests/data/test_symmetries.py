"""The symmetries given to training patches: each is undone exactly, and what fits the noise's spatial correlation
reads every patch turned back, so that no symmetry averages a pixel's left neighbour with its right one."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflowgan.config import preset
from nmflowgan.data.patches import PatchDataset, collate
from nmflowgan.data.symmetries import ROW_KEEPING, oriented, upright
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.training.noise_trainer import GeneratorObjective


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 7), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_upright_undoes_every_symmetry(code, size, channels, seed):
    image = np.random.default_rng(seed).integers(0, 255, (size, size, channels), dtype=np.uint8)
    turned = torch.from_numpy(oriented(image, code).copy()).permute(2, 0, 1)
    back = upright(turned[None], torch.tensor([code]))[0]
    assert torch.equal(back, torch.from_numpy(image).permute(2, 0, 1))


def test_the_row_keeping_symmetries_are_the_flips():
    image = np.arange(12).reshape(3, 4)
    assert np.array_equal(oriented(image, ROW_KEEPING[1]), image[:, ::-1])
    assert np.array_equal(oriented(image, ROW_KEEPING[2]), image[::-1])
    assert np.array_equal(oriented(image, ROW_KEEPING[3]), image[::-1, ::-1])
    assert len({oriented(np.arange(16).reshape(4, 4), k).tobytes() for k in range(8)}) == 8


@pytest.mark.parametrize("augment", ["flips", "all"])
def test_a_patch_turned_back_is_the_patch_as_cut(coordinate_pair, augment):
    plain = PatchDataset([coordinate_pair], patch_px=16, stride_px=8, augment="none")
    turned = PatchDataset([coordinate_pair], patch_px=16, stride_px=8, augment=augment, seed=3)
    codes = set()
    for epoch in range(4):
        batch = collate([turned[(index, epoch)] for index in range(len(turned))])
        cut = collate([plain[(index, epoch)] for index in range(len(plain))])
        codes |= set(batch.symmetries.tolist())
        for name in ("clean", "noisy", "grid"):
            assert torch.equal(upright(getattr(batch, name), batch.symmetries), getattr(cut, name)), name
    assert codes == (set(ROW_KEEPING) if augment == "flips" else set(range(8)))


def test_the_correlation_is_fitted_to_the_noise_as_the_camera_laid_it(monkeypatch):
    """With a flow that passes the noise through as its latent and filters fitted to the patches as cut, mirrored
    patches that say they are mirrored score as the patches as cut, and far worse when they do not say so: the
    latents are correlated with the right neighbour at even columns only, which a mirror moves to the left."""
    config = preset("small").model
    config = type(config)(**{**config.__dict__, "correlation_grid_px": 2})
    model = NoiseModel(config, ["V1"], [100.0])
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(8, 3, 32, 33, generator=generator)
    noise = white[..., :32].clone()
    noise[..., 0::2] += 0.9 * white[..., 1:33:2]  # even column x shares x + 1's draw, odd column x its x - 1's...
    noise[..., 1::2] = white[..., 1:33:2]
    monkeypatch.setattr(model.flow, "latent_and_log_prob",
                        lambda real, clean, cond, uniform=None, censored=False: (real, torch.zeros(real.shape[0])))
    objective = GeneratorObjective(model)
    clean = torch.full_like(noise, 0.5)
    uniform = torch.zeros_like(noise)
    cond = model.encode(["V1"] * 8, [100.0] * 8, 8)
    optimizer = torch.optim.Adam(model.correlation.parameters(), lr=3e-2)
    for _ in range(150):  # fit the per-phase filters to the patches as cut
        optimizer.zero_grad()
        objective(noise, clean, cond, uniform, None)[1].backward()
        optimizer.step()
    _, as_cut, _ = objective(noise, clean, cond, uniform, None)
    mirrored = noise.flip(-1)
    codes = torch.full((8,), ROW_KEEPING[1])
    mirrored_cond = cond.with_grid(cond.grid_like(noise).flip(-1))
    _, told, _ = objective(mirrored, clean, mirrored_cond, uniform, None, codes)
    _, untold, _ = objective(mirrored, clean, mirrored_cond, uniform, None)
    assert torch.allclose(told, as_cut, rtol=1e-5, atol=1e-7)
    assert untold > 1.5 * as_cut  # the fitted part of the loss (its floor is the sampling noise of every lag)
