"""Latent correlation: the spatial and cross-channel correlation of camera noise, added where it leaves the
flow's per-pixel distribution exactly as it is.

Every layer of the flow acts on each pixel and channel alone, so any latent whose every value is marginally
standard normal yields noise with exactly the flow's per-pixel, per-channel distribution. A linear filter of
white Gaussian latents is such a latent when the taps of each output channel have unit energy:

    z'_c(p) = sum_{c', k} w[c, c', k] z_{c'}(p + k),   sum_{c', k} w[c, c', k]^2 = 1   =>   z'_c(p) ~ N(0, 1),

while neighbouring pixels and the three channels become correlated as the filter's autocorrelation says (a
Gaussian copula under the flow's marginals). At the image border the taps that fall outside are dropped and
the rest renormalized, so the marginal is exact everywhere.

The filter is predicted per sample from the camera/ISO features and learned without a critic: the covariance
it implies, ``C_w[c, c', d] = E[z'_c(p) z'_{c'}(p + d)]``, is matched to the empirical correlation of the real
noise's latents (the flow's forward map of the real noise) at every lag ``|d| < kernel_px``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nmflowgan.condition_input import ConditionInput
from nmflowgan.conditions import Condition, phase_of

CHANNELS = 3


def lag_products(x: torch.Tensor, max_lag: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_p x_c(p) y_c'(p + d)`` for every channel pair and lag ``d`` in ``[-max_lag, max_lag]^2`` (``y`` defaults
    to ``x``).

    Args:
        x: ``(N, C, H, W)``; y: ``(N, C', H, W)``; values outside the image count as zero.

    Returns:
        ``(N, C, C', 2 * max_lag + 1, 2 * max_lag + 1)``, indexed ``[n, c, c', max_lag + dy, max_lag + dx]``.
    """
    height, width = x.shape[-2:]
    size = (height + max_lag, width + max_lag)  # zero padding: no lag up to max_lag wraps around
    spectrum = torch.fft.rfft2(x.float(), s=size)
    other = spectrum if y is None else torch.fft.rfft2(y.float(), s=size)
    products = torch.fft.irfft2(spectrum.conj()[:, :, None] * other[:, None, :], s=size)
    lags = torch.arange(-max_lag, max_lag + 1, device=x.device)
    return products.index_select(-2, lags % size[0]).index_select(-1, lags % size[1])


def lag_correlation(z: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Per-sample correlation ``E[z_c(p) z_c'(p + d)] / sqrt(E[z_c^2] E[z_c'^2])`` of zero-mean ``z``
    ``(B, 3, H, W)`` (H, W > max_lag), each lag averaged over the pixel pairs it has; shape as
    :func:`lag_products`."""
    height, width = z.shape[-2:]
    lags = torch.arange(-max_lag, max_lag + 1, device=z.device, dtype=torch.float32).abs()
    pairs = (height - lags)[:, None] * (width - lags)[None, :]
    covariance = lag_products(z, max_lag) / pairs
    variance = covariance[:, range(CHANNELS), range(CHANNELS), max_lag, max_lag].clamp_min(1e-12)  # (B, 3)
    return covariance / (variance[:, :, None] * variance[:, None, :]).sqrt()[..., None, None]


def phase_lag_correlation(z: torch.Tensor, phase: torch.Tensor, period: int, max_lag: int) -> torch.Tensor:
    """Per-sample correlation of zero-mean ``z`` ``(B, 3, H, W)`` between a pixel of each grid phase and the pixel
    at lag ``d``: ``E[z_c(p) z_c'(p + d) | phase(p) = f]`` with each value first standardized by the variance of
    its phase and channel, each lag averaged over the pixel pairs it has.

    Args:
        phase: ``(B, H, W)`` :func:`phase_of` each pixel.

    Returns:
        ``(B, period^2, 3, 3, 2 * max_lag + 1, 2 * max_lag + 1)``.
    """
    masks = torch.nn.functional.one_hot(phase, period * period).permute(0, 3, 1, 2).float()  # (B, P2, H, W)
    count = masks.sum(dim=(2, 3)).clamp_min(1)  # (B, P2)
    variance = torch.einsum("bfhw,bchw->bfc", masks, z.float().square()) / count[:, :, None]
    scale = torch.einsum("bfhw,bfc->bchw", masks, variance.clamp_min(1e-12).rsqrt())
    standardized = z.float() * scale
    batch, phases = masks.shape[:2]
    by_phase = (masks[:, :, None] * standardized[:, None]).flatten(1, 2)  # (B, P2 * 3, H, W)
    products = lag_products(by_phase, max_lag, standardized)  # (B, P2 * 3, 3, L, L)
    pairs = lag_products(masks, max_lag, torch.ones_like(masks[:, :1]))  # (B, P2, 1, L, L)
    return products.view(batch, phases, CHANNELS, CHANNELS, *products.shape[-2:]) / pairs.clamp_min(1)[:, :, :, None]


class LatentCorrelation(nn.Module):
    """Correlates white Gaussian latents with a per-sample filter of unit energy (see the module docstring); with
    ``grid_px``, one filter per position in the camera's grid, each pixel filtered by the filter of its position.

    Args:
        kernel_px: side of the filter (odd); the correlation it can express reaches ``kernel_px - 1`` pixels.
        feature_dim: D of the camera/ISO features it is predicted from.
        hidden: width of the small network that predicts it. The filter starts as the identity.
        grid_px: period of the grid (``grid_px^2`` filters; 0: one filter everywhere).
    """

    def __init__(self, kernel_px: int, feature_dim: int, hidden: int = 32, grid_px: int = 0) -> None:
        super().__init__()
        if kernel_px < 1 or kernel_px % 2 == 0:
            raise ValueError(f"kernel_px must be odd and positive, got {kernel_px}")
        self.kernel_px = kernel_px
        self.period = max(grid_px, 1)
        self.phases = self.period**2
        self.net = nn.Sequential(ConditionInput(feature_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, self.phases * CHANNELS * CHANNELS * kernel_px**2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        identity = torch.zeros(CHANNELS, CHANNELS, kernel_px, kernel_px)
        identity[range(CHANNELS), range(CHANNELS), kernel_px // 2, kernel_px // 2] = 1.0
        self.register_buffer("identity", identity, persistent=False)

    def kernels(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features -> ``(B, phases, 3, 3, k, k)`` filters, each output channel's taps of unit energy."""
        k = self.kernel_px
        raw = self.identity + self.net(features.to(self.identity.dtype)).view(-1, self.phases, CHANNELS, CHANNELS, k, k)
        return raw / raw.square().sum(dim=(3, 4, 5), keepdim=True).sqrt().clamp_min(1e-6)

    def forward(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Correlates ``(B, 3, H, W)`` white latents; every output value is exactly N(0, 1) marginally."""
        batch, _, height, width = z.shape
        filters = self.phases * CHANNELS
        weights = self.kernels(cond.features).to(z.dtype).reshape(batch * filters, CHANNELS, self.kernel_px,
                                                                   self.kernel_px)
        pad = self.kernel_px // 2
        flat = z.reshape(1, batch * CHANNELS, height, width)
        out = F.conv2d(flat, weights, padding=pad, groups=batch)
        inside = F.conv2d(torch.ones_like(flat), weights.square(), padding=pad, groups=batch)  # taps' energy in
        out = (out / inside.clamp_min(1e-12).sqrt()).view(batch, self.phases, CHANNELS, height, width)
        if self.phases == 1:
            return out[:, 0]
        phase = phase_of(cond.grid_like(z), self.period)[:, None, None].expand(-1, 1, CHANNELS, -1, -1)
        return out.gather(1, phase)[:, 0]

    def covariance(self, features: torch.Tensor, max_lag: int) -> torch.Tensor:
        """The covariance of the correlated latent away from borders between a pixel of each grid phase ``f`` and the
        pixel at lag ``d``, ``E[z'_c(p) z'_c'(p + d) | phase(p) = f]``, as ``(B, phases, 3, 3, 2 * max_lag + 1,
        2 * max_lag + 1)`` (the layout of :func:`lag_products` for each phase)."""
        w = self.kernels(features)  # (B, f, c, c'', k, k)
        batch, k = w.shape[0], self.kernel_px
        # E[z'_c(p) z'_c'(p + d)] = sum_{c'', m} w_f[c, c''](m) w_g[c', c''](m - d), g the phase of p + d: lag
        # products over taps, at -d, for every pair of phases (f, g).
        taps = w.permute(0, 3, 1, 2, 4, 5).reshape(batch * CHANNELS, self.phases * CHANNELS, k, k)
        per_input = lag_products(taps, max_lag)  # (B * c'', f * c, g * c', L, L)
        size = per_input.shape[-1]
        pairs = per_input.view(batch, CHANNELS, self.phases, CHANNELS, self.phases, CHANNELS, size, size)
        pairs = pairs.sum(1).flip(-2, -1)  # (B, f, c, g, c', L, L)
        lags = torch.arange(-max_lag, max_lag + 1, device=w.device)
        f = torch.arange(self.phases, device=w.device)
        row = (f // self.period)[:, None, None] + lags[None, :, None]
        column = (f % self.period)[:, None, None] + lags[None, None, :]
        g = (row % self.period) * self.period + column % self.period  # (f, L, L): the phase at lag d
        ly, lx = torch.meshgrid(torch.arange(size, device=w.device), torch.arange(size, device=w.device),
                                indexing="ij")
        picked = pairs[:, f[:, None, None], :, g, :, ly, lx]  # (f, L, L, B, c, c')
        return picked.permute(3, 0, 4, 5, 1, 2)

    def loss(self, real_latent: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Mean squared difference between the correlation the filters imply and the per-sample empirical
        correlation of ``real_latent`` ``(B, 3, H, W)`` (the flow's map of the real noise), for each grid phase, over
        every channel pair and lag up to ``kernel_px - 1``."""
        max_lag = self.kernel_px - 1
        centred = real_latent.detach() - real_latent.detach().mean(dim=(2, 3), keepdim=True)
        if self.phases == 1:
            target = lag_correlation(centred, max_lag)[:, None]
        else:
            target = phase_lag_correlation(centred, phase_of(cond.grid_like(centred), self.period), self.period,
                                           max_lag)
        return (self.covariance(cond.features, max_lag) - target).square().mean()
