"""The flow learns a known distribution: heteroscedastic Gaussian noise whose variance grows with the
clean intensity and differs by camera."""

import math

import torch

from nmflowgan.conditions import ConditionSpace
from nmflowgan.config import FlowConfig
from nmflowgan.flows import NoiseFlow

GAINS = {"IP": (0.05, 1.0), "S6": (0.3, 4.0)}  # variance = a * clean_255 + b, per camera


def _draw(space: ConditionSpace, batch: int, generator: torch.Generator):
    cameras = [("IP", "S6")[i % 2] for i in range(batch)]
    cond = space.encode(cameras, 800)
    clean = torch.rand(batch, 3, 16, 16, generator=generator)
    a = torch.tensor([GAINS[c][0] for c in cameras])[:, None, None, None]
    b = torch.tensor([GAINS[c][1] for c in cameras])[:, None, None, None]
    std = torch.sqrt(a * clean * 255 + b)
    noise = torch.randn(clean.shape, generator=generator) * std
    true_nll = (0.5 * (noise / std) ** 2 + torch.log(std) + 0.5 * math.log(2 * math.pi)).mean()
    return noise, clean, cond, true_nll


def _nll_per_value(flow, noise, clean, cond):
    """The training loss: the flow's NLL in nats per value."""
    return -flow.latent_and_log_prob(noise, clean, cond)[1].mean() / noise[0].numel()


def test_flow_fits_heteroscedastic_gaussian_within_2_percent():
    torch.manual_seed(0)
    space = ConditionSpace(("IP", "S6"), (800,), "continuous")
    flow = NoiseFlow(FlowConfig(spec="NE|SAL|SDL|CL2|SAL|SDL|CL2", meta_hidden=16, meta_blocks=1), space)
    generator = torch.Generator().manual_seed(0)
    flow.initialize(*_draw(space, 32, generator)[:3])
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(400):
        noise, clean, cond, _ = _draw(space, 16, generator)
        loss = _nll_per_value(flow, noise, clean, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        noise, clean, cond, true_nll = _draw(space, 256, torch.Generator().manual_seed(99))
        model_nll = _nll_per_value(flow, noise, clean, cond)
    assert abs(model_nll.item() - true_nll.item()) / true_nll.item() < 0.02, (model_nll, true_nll)
