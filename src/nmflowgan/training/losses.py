"""The WGAN-GP losses (Gulrajani et al. 2017) on (noise, clean) pairs."""

from __future__ import annotations

from collections.abc import Callable

import torch

Critic = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def critic_loss(critic: Critic, real_255: torch.Tensor, fake_255: torch.Tensor, clean: torch.Tensor,
                alpha: torch.Tensor, gp_lambda: float, input_scale: float = 1.0,
                condition: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``E[D(fake)] - E[D(real)] + lambda * E[(||grad D(x_hat)|| - 1)^2]``, one critic call for all three.

    Args:
        critic: maps ``(noise_255, clean, condition)`` to ``(B,)`` scores.
        real_255, fake_255: ``(B, 3, H, W)`` noise in 8-bit units (``fake_255`` detached).
        clean: ``(B, 3, H, W)`` in [0, 1], the condition the critic sees with either noise.
        alpha: ``(B, 1, 1, 1)`` interpolation weights in [0, 1]: ``x_hat = alpha real + (1 - alpha) fake``.
        input_scale: the critic reads ``noise / input_scale``; the penalty is measured in those units.
        condition: ``(B, D)`` camera/ISO features for a conditional critic, else None.

    Returns:
        ``(loss, wasserstein_estimate, gradient_penalty)``; the estimate is ``E[D(real)] - E[D(fake)]``.
    """
    batch = real_255.shape[0]
    mixed = (alpha * real_255 + (1 - alpha) * fake_255).detach().requires_grad_(True)
    conditions = None if condition is None else torch.cat([condition] * 3)
    scores = critic(torch.cat([real_255, fake_255, mixed]), torch.cat([clean] * 3), conditions)  # one pass
    real_score, fake_score, mixed_score = scores[:batch], scores[batch : 2 * batch], scores[2 * batch :]
    penalty = gradient_penalty(mixed_score, mixed, input_scale)
    distance = real_score.mean() - fake_score.mean()
    return -distance + gp_lambda * penalty, distance.detach(), penalty.detach()


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor, input_scale: float = 1.0) -> torch.Tensor:
    """``mean((||d scores / d (inputs / input_scale)||_2 - 1)^2)``, differentiable (double backward).

    The norm is taken in the units the critic reads (noise / scale): measured in 8-bit units, the
    1-Lipschitz target would ask for a critic ``scale`` times steeper in its own units.
    """
    (gradient,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) * input_scale - 1).square().mean()


def generator_adversarial_loss(critic: Critic, fake_255: torch.Tensor, clean: torch.Tensor,
                               condition: torch.Tensor | None = None) -> torch.Tensor:
    """``-E[D(fake)]``: the generator's WGAN loss."""
    return -critic(fake_255, clean, condition).mean()
