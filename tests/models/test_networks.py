import dataclasses

import numpy as np
import pytest
import torch

from nmflowgan import NoiseModel
from nmflowgan.config import SMALL_REFINER, CriticConfig, DenoiserConfig, RefinerConfig, paper, small
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.models.critic import Critic
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.models.unet import UNetRefiner


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (16, 16), (5, 90)])
@pytest.mark.parametrize("sees_clean", [False, True])
def test_refiner_keeps_any_size(size, sees_clean):
    refiner = UNetRefiner(RefinerConfig(depth=4, width=4, sees_clean=sees_clean))
    noise = torch.randn(2, 3, *size)
    assert refiner(noise, torch.rand(2, 3, *size)).shape == noise.shape


def test_untrained_refiner_is_identity_and_trained_one_mixes_neighbours():
    refiner = UNetRefiner(RefinerConfig(depth=3, width=4))
    noise = torch.randn(1, 3, 16, 16)
    assert torch.equal(refiner(noise, noise), noise)
    torch.nn.init.normal_(refiner.last.weight, std=0.1)
    delta = torch.zeros(1, 3, 16, 16, requires_grad=True)
    refiner(delta, delta.detach())[0, 0, 8, 8].backward()
    assert (delta.grad[0, :, 7:10, 7:10].abs() > 0).sum() > 1  # spatial (and cross-channel) mixing


@pytest.mark.parametrize("patch", [32, 96, 128, 48])
def test_any_critic_takes_patches_from_32(patch):
    critic = Critic(CriticConfig(variant="any", width=8))
    assert critic(torch.randn(3, 3, patch, patch), torch.rand(3, 3, patch, patch)).shape == (3,)


def test_critic_refuses_small_patches_and_paper_critic_needs_96():
    with pytest.raises(BadInputError, match="at least 32x32"):
        Critic(CriticConfig(variant="any", width=8))(torch.randn(1, 3, 31, 40), torch.rand(1, 3, 31, 40))
    paper_critic = Critic(paper().gan.critic)
    assert paper_critic(torch.randn(2, 3, 96, 96), torch.rand(2, 3, 96, 96)).shape == (2,)
    with pytest.raises(BadInputError, match="96x96"):
        paper_critic(torch.randn(1, 3, 128, 128), torch.rand(1, 3, 128, 128))


def test_dncnn_is_residual_and_keeps_size():
    """The body predicts the noise and the network subtracts it: a body that outputs a constant c everywhere
    gives ``noisy - c`` (``noisy + c`` or the body's output alone would fail)."""
    net = DnCNN(DenoiserConfig(depth=5, width=8)).eval()
    x = torch.rand(2, 3, 37, 53)
    assert net(x).shape == x.shape
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    torch.testing.assert_close(net(x), x - torch.tensor([0.1, -0.2, 0.3])[:, None, None])


def test_paper_dncnn_has_18_convolutions_of_64():
    net = DnCNN(paper().denoiser)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 18 and all(c.out_channels == 64 for c in convs[:-1])


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_noise_model_sample_odd_sizes_keeps_shape_and_dtype(preset):
    model = NoiseModel.from_preset(preset)
    clean = torch.rand(2, 3, 37, 53)
    out = model.sample(clean, "S6", 800, generator=torch.Generator().manual_seed(0))
    assert out.shape == clean.shape and out.dtype == clean.dtype
    assert 0 <= out.min() and out.max() <= 1
    u8 = (clean * 255).to(torch.uint8)
    out8 = model.sample(u8[0], "S6", 800)
    assert out8.shape == u8[0].shape and out8.dtype == torch.uint8
    array = u8[0].permute(1, 2, 0).numpy()
    out_np = model.sample(array, ["IP"], [100])
    assert isinstance(out_np, np.ndarray) and out_np.shape == array.shape and out_np.dtype == np.uint8


def _model_with_a_working_refiner():
    """The small preset with a refiner whose last layer is not zero: its noise is not integer-valued."""
    model = NoiseModel(dataclasses.replace(small().model, refiner=SMALL_REFINER), ["S6"], [100, 800])
    torch.nn.init.normal_(model.refiner.last.weight, std=0.05)
    return model


def test_uint8_sample_is_the_rounded_float_sample():
    model = _model_with_a_working_refiner()
    u8 = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    out8 = model.sample(u8, "S6", 800, generator=torch.Generator().manual_seed(5))
    out_float = model.sample(u8.float() / 255, "S6", 800, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out8, (out_float * 255).round().to(torch.uint8))


def test_uint8_sample_rounds_a_sum_that_misses_the_integer(monkeypatch):
    # On another device or model, clean * 255 + recorded noise may land just below the integer it stands for.
    model = _model_with_a_working_refiner()
    u8 = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    target = (u8.float() + 3).clamp(0, 255)

    def slightly_low(clean, *args, **kwargs):
        return target - clean * 255.0 - 1e-3

    monkeypatch.setattr(model, "draw", slightly_low)
    assert torch.equal(model.sample(u8, "S6", 800), target.to(torch.uint8))


def test_noise_model_defaults_to_sidd_vocabulary():
    model = NoiseModel.from_preset("small")
    assert model.cameras == ("IP", "GP", "S6", "N6", "G4")
    assert model.isos == (100, 400, 800, 1600, 3200)


def test_noise_model_bad_inputs():
    model = NoiseModel.from_preset("paper")
    clean = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown camera 'ZZ'"):
        model.sample(clean, "ZZ", 800)
    with pytest.raises(ValueError, match="ISO 640 is not one of"):
        model.sample(clean, "S6", 640)
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        model.sample(clean * 255, "S6", 800)
    with pytest.raises(BadInputError, match="RGB"):
        model.sample(torch.rand(1, 4, 8, 8), "S6", 800)
    with pytest.raises(BadInputError, match="uint8"):
        model.sample(np.zeros((8, 8, 3), dtype=np.float32), "S6", 800)


def test_save_load_round_trip_is_bitwise(tmp_path):
    model = NoiseModel.from_preset("small", cameras=("AA", "BB"), isos=(100, 1600))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save(tmp_path / "m")
    loaded = NoiseModel.load(tmp_path / "m")
    clean = torch.rand(1, 3, 20, 20)
    a = model.eval().sample(clean, "BB", 400, generator=torch.Generator().manual_seed(5))
    b = loaded.sample(clean, "BB", 400, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert loaded.cameras == ("AA", "BB")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        NoiseModel.load(tmp_path / "missing")
    model = NoiseModel.from_preset("small")
    model.save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        NoiseModel.load(tmp_path / "m")
    NoiseModel.from_preset("paper").save(tmp_path / "p")
    (tmp_path / "m" / "model.safetensors").write_bytes((tmp_path / "p" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="another preset"):
        NoiseModel.load(tmp_path / "m")


def test_conditional_refiner_and_critic_use_the_condition():
    refiner = UNetRefiner(RefinerConfig(depth=3, width=4, sees_condition=True), condition_dim=3)
    with torch.no_grad():
        refiner.last.weight.normal_()
    noise, clean = torch.randn(2, 3, 16, 16) * 5, torch.rand(2, 3, 16, 16)
    first, second = torch.tensor([[1.0, 0, -1], [1.0, 0, -1]]), torch.tensor([[0.0, 1, 1], [0.0, 1, 1]])
    assert not torch.allclose(refiner(noise, clean, first), refiner(noise, clean, second))
    with pytest.raises(ValueError, match="condition"):
        refiner(noise, clean)
    critic = Critic(CriticConfig(variant="any", width=4, sees_condition=True), condition_dim=3)
    noise, clean = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert not torch.allclose(critic(noise, clean, first), critic(noise, clean, second))
