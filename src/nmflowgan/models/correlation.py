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

CHANNELS = 3


def lag_products(x: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``sum_p x_c(p) x_c'(p + d)`` for every channel pair and lag ``d`` in ``[-max_lag, max_lag]^2``.

    Args:
        x: ``(N, C, H, W)``; values outside the image count as zero.

    Returns:
        ``(N, C, C, 2 * max_lag + 1, 2 * max_lag + 1)``, indexed ``[n, c, c', max_lag + dy, max_lag + dx]``.
    """
    height, width = x.shape[-2:]
    size = (height + max_lag, width + max_lag)  # zero padding: no lag up to max_lag wraps around
    spectrum = torch.fft.rfft2(x.float(), s=size)
    products = torch.fft.irfft2(spectrum.conj()[:, :, None] * spectrum[:, None, :], s=size)
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


class LatentCorrelation(nn.Module):
    """Correlates white Gaussian latents with a per-sample filter of unit energy (see the module docstring).

    Args:
        kernel_px: side of the filter (odd); the correlation it can express reaches ``kernel_px - 1`` pixels.
        feature_dim: D of the camera/ISO features it is predicted from.
        hidden: width of the small network that predicts it. The filter starts as the identity.
    """

    def __init__(self, kernel_px: int, feature_dim: int, hidden: int = 32) -> None:
        super().__init__()
        if kernel_px < 1 or kernel_px % 2 == 0:
            raise ValueError(f"kernel_px must be odd and positive, got {kernel_px}")
        self.kernel_px = kernel_px
        self.net = nn.Sequential(ConditionInput(feature_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, CHANNELS * CHANNELS * kernel_px**2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        identity = torch.zeros(CHANNELS, CHANNELS, kernel_px, kernel_px)
        identity[range(CHANNELS), range(CHANNELS), kernel_px // 2, kernel_px // 2] = 1.0
        self.register_buffer("identity", identity, persistent=False)

    def kernels(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features -> ``(B, 3, 3, k, k)`` filters, each output channel's taps of unit energy."""
        k = self.kernel_px
        raw = self.identity + self.net(features.to(self.identity.dtype)).view(-1, CHANNELS, CHANNELS, k, k)
        return raw / raw.square().sum(dim=(2, 3, 4), keepdim=True).sqrt().clamp_min(1e-6)

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Correlates ``(B, 3, H, W)`` white latents; every output value is exactly N(0, 1) marginally."""
        batch, _, height, width = z.shape
        weights = self.kernels(features).to(z.dtype).reshape(batch * CHANNELS, CHANNELS, self.kernel_px,
                                                              self.kernel_px)
        pad = self.kernel_px // 2
        flat = z.reshape(1, batch * CHANNELS, height, width)
        out = F.conv2d(flat, weights, padding=pad, groups=batch)
        inside = F.conv2d(torch.ones_like(flat), weights.square(), padding=pad, groups=batch)  # taps' energy in
        return (out / inside.clamp_min(1e-12).sqrt()).view(batch, CHANNELS, height, width)

    def covariance(self, features: torch.Tensor, max_lag: int) -> torch.Tensor:
        """The covariance of the correlated latent away from borders, ``E[z'_c(p) z'_c'(p + d)]``, as
        ``(B, 3, 3, 2 * max_lag + 1, 2 * max_lag + 1)`` (the layout of :func:`lag_products`)."""
        w = self.kernels(features)  # (B, c, c'', k, k)
        # E[z'_c(p) z'_c'(p + d)] = sum_{c'', m} w[c, c''](m) w[c', c''](m - d): lag products over taps, -d.
        per_input = lag_products(w.transpose(1, 2).flatten(0, 1), max_lag)  # (B * c'', c, c', lags)
        summed = per_input.view(w.shape[0], CHANNELS, CHANNELS, CHANNELS, *per_input.shape[-2:]).sum(1)
        return summed.flip(-2, -1)

    def loss(self, real_latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Mean squared difference between the correlation the filters imply and the per-sample empirical
        correlation of ``real_latent`` ``(B, 3, H, W)`` (the flow's map of the real noise), over every
        channel pair and lag up to ``kernel_px - 1``."""
        max_lag = self.kernel_px - 1
        target = lag_correlation(real_latent.detach() - real_latent.detach().mean(dim=(2, 3), keepdim=True),
                                 max_lag)
        return (self.covariance(features, max_lag) - target).square().mean()
