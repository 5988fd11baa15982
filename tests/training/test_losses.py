"""The training objectives against hand-computed values and autograd: WGAN-GP, straight-through quantization,
variance preservation, the flow's data initialization."""

import torch
from torch import nn
from torch.func import functional_call

from nmflowgan.conditions import ConditionSpace
from nmflowgan.config import FlowConfig, RefinerConfig
from nmflowgan.flows import FlowContext, NoiseFlow
from nmflowgan.models.noise_model import quantize
from nmflowgan.models.unet import UNetRefiner, local_second_moment
from nmflowgan.training.losses import critic_loss, generator_adversarial_loss, gradient_penalty


class LinearCritic(nn.Module):
    """``D(noise, clean) = sum(w * noise / scale) + sum(clean)``: its gradient in the units it reads is ``w``."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.weight, self.scale = nn.Parameter(weight), scale

    def forward(self, noise, clean, condition=None):
        return (self.weight * noise / self.scale).flatten(1).sum(1) + clean.flatten(1).sum(1)


def test_critic_loss_matches_the_hand_computed_wgan_gp_value():
    torch.manual_seed(0)
    weight, scale, lam = torch.randn(3, 4, 4, dtype=torch.float64), 16.0, 10.0
    critic = LinearCritic(weight, scale)
    real, fake = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 20, torch.randn(2, 3, 4, 4, dtype=torch.float64) * 20
    clean, alpha = torch.rand(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 1, 1, 1, dtype=torch.float64)
    loss, distance, penalty = critic_loss(critic, real, fake, clean, alpha, lam, input_scale=scale)
    score = lambda noise: (weight * noise / scale).flatten(1).sum(1) + clean.flatten(1).sum(1)  # noqa: E731
    expected_distance = score(real).mean() - score(fake).mean()
    expected_penalty = (weight.norm() - 1) ** 2  # the gradient in the critic's units is w, whatever alpha
    torch.testing.assert_close(distance, expected_distance.detach())
    torch.testing.assert_close(penalty, expected_penalty.detach())
    torch.testing.assert_close(loss, -expected_distance + lam * expected_penalty)
    torch.testing.assert_close(generator_adversarial_loss(critic, fake, clean), -score(fake).mean())


def test_gradient_penalty_has_a_correct_double_backward_on_a_tiny_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Softplus(), nn.Conv2d(2, 1, 3), nn.Flatten(), nn.Softplus()).double()
    inputs = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    names = [name for name, _ in critic.named_parameters()]

    def penalty(*parameters):
        mixed = inputs.clone().requires_grad_(True)
        scores = functional_call(critic, dict(zip(names, parameters)), (mixed,)).sum(1)
        return gradient_penalty(scores, mixed, input_scale=4.0)

    parameters = tuple(p.detach().clone().requires_grad_(True) for p in critic.parameters())
    assert torch.autograd.gradcheck(penalty, parameters)


def test_critic_step_gradients_reach_the_critic_only_and_generator_step_the_generator_only():
    torch.manual_seed(0)
    generator = nn.Conv2d(3, 3, 3, padding=1)
    critic = LinearCritic(torch.randn(3, 8, 8), 16.0)
    latent, clean, real = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        fake = generator(latent)
    loss, _, _ = critic_loss(critic, real, fake, clean, torch.rand(2, 1, 1, 1), 10.0, 16.0)
    loss.backward()
    assert critic.weight.grad is not None and all(p.grad is None for p in generator.parameters())
    critic.zero_grad(set_to_none=True)
    critic.requires_grad_(False)
    generator_adversarial_loss(critic, generator(latent), clean).backward()
    assert critic.weight.grad is None and all(p.grad is not None for p in generator.parameters())


def test_quantize_records_an_8bit_camera_value_and_passes_the_gradient_straight_through():
    clean = torch.tensor([[[[0.0, 0.5, 1.0, 0.2]]]]).expand(1, 3, 1, 4)
    noise = torch.tensor([[[[-3.0, 0.4, 7.0, 0.6]]]]).expand(1, 3, 1, 4).clone().requires_grad_(True)
    recorded = quantize(clean, noise)
    noisy = clean * 255 + recorded
    assert torch.allclose(noisy, noisy.round(), atol=1e-4) and noisy.min() >= 0 and noisy.max() <= 255
    expected = (clean * 255 + noise).round().clamp(0, 255) - clean * 255
    torch.testing.assert_close(recorded, expected.detach())
    recorded.sum().backward()
    assert torch.equal(noise.grad, torch.ones_like(noise))  # also where the value was clipped


def test_preserve_variance_keeps_the_flows_local_second_moment():
    torch.manual_seed(0)
    refiner = UNetRefiner(RefinerConfig(depth=2, width=4, preserve_variance=True, noise_scale=16.0), 0)
    noise = torch.randn(2, 3, 32, 32) * 10
    residual = torch.randn(2, 3, 32, 32) * 0.5  # would raise the local second moment by about 1.7x
    raw = noise + 16.0 * residual
    ratio_raw = (local_second_moment(raw) / local_second_moment(noise)).mean()
    ratio = (local_second_moment(refiner.combine(noise, residual)) / local_second_moment(noise)).mean()
    assert ratio_raw > 1.5 and abs(ratio - 1) < 0.05
    torch.testing.assert_close(refiner.combine(noise, noise / 16.0), noise)  # doubling is undone exactly


def test_the_flows_data_initialization_gives_latents_of_unit_variance():
    torch.manual_seed(0)
    space = ConditionSpace(("S6",), (100, 1600), "continuous")
    flow = NoiseFlow(FlowConfig(spec="UD|NE|SAL|SDL|CL2|SAL|SDL|CL2"), space)
    clean = torch.rand(8, 3, 16, 16)
    noise = torch.randn(8, 3, 16, 16) * torch.tensor([30.0, 8.0, 15.0])[:, None, None] + 5.0
    cond = space.encode("S6", 800, 8)
    generator = torch.Generator().manual_seed(0)
    flow.initialize(noise, clean, cond, generator=generator)
    with torch.no_grad():
        z, _ = flow.transform(clean * 255 + noise, FlowContext(clean, cond, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), atol=0.05, rtol=0)
