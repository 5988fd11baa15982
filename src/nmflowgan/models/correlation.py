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

A filter may also be one per grid phase and per content class of the clean image (:func:`content_classes`: flat,
or which way its gradient runs): each pixel takes the output of its own filter, still exactly N(0, 1). A pixel's
neighbour at lag ``d`` then took its own filter, so the covariance a pixel of label ``f`` sees at ``d`` is the
filters' cross-covariance ``C_fg(d)`` averaged over the labels ``g`` its neighbours have in that image (their
counts are known from the clean image): that average is what is matched to the real latents' correlation among
the pixels of label ``f``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nmflowgan.condition_input import ConditionInput
from nmflowgan.conditions import Condition, phase_of

CHANNELS = 3
CONTENT_CLASSES = ("flat", "gradient along rows", "gradient along columns")
FLAT_BELOW = 2.0  # 8-bit levels: a pixel whose clean gradient is below this in both directions is flat


def content_classes(clean: torch.Tensor) -> torch.Tensor:
    """The content class of every pixel of ``clean (B, 3, H, W)`` in [0, 1], as ``(B, H, W)`` indices into
    :data:`CONTENT_CLASSES`: ``flat`` where the channel mean's central differences (8-bit levels) are below
    :data:`FLAT_BELOW` both ways, else whichever of the horizontal (along rows, index 1) and vertical (along
    columns, 2) differences is larger. Borders repeat the edge pixel."""
    level = F.pad(clean.float().mean(dim=1, keepdim=True) * 255.0, (1, 1, 1, 1), mode="replicate")[:, 0]
    across_columns = (level[:, 1:-1, 2:] - level[:, 1:-1, :-2]).abs() / 2  # a change from left to right
    across_rows = (level[:, 2:, 1:-1] - level[:, :-2, 1:-1]).abs() / 2
    kind = torch.where(across_columns >= across_rows, 1, 2)
    return torch.where(torch.maximum(across_columns, across_rows) < FLAT_BELOW, 0, kind)


def lag_products(x: torch.Tensor, max_lag: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_p x_c(p) y_c'(p + d)`` for every channel pair and lag ``d`` in ``[-max_lag, max_lag]^2`` (``y`` defaults
    to ``x``).

    Args:
        x: ``(N, C, H, W)``; y: ``(N, C', H, W)``; values outside the image count as zero.

    Returns:
        ``(N, C, C', 2 * max_lag + 1, 2 * max_lag + 1)``, indexed ``[n, c, c', max_lag + dy, max_lag + dx]``.
    """
    height, width = x.shape[-2:]
    rows, cols = height + max_lag, width + max_lag  # zero padding: no lag up to max_lag wraps around
    spectrum = torch.fft.rfft2(x.float(), s=(rows, cols))
    other = spectrum if y is None else torch.fft.rfft2(y.float(), s=(rows, cols))
    products = spectrum.conj()[:, :, None] * other[:, None, :]  # (N, C, C', rows, cols // 2 + 1)
    # The inverse transform at the 2 * max_lag + 1 lags alone, as two matrix products (a complex one down the rows,
    # a real one along them, whose half spectrum counts twice but for its first and Nyquist terms): a fifth of the
    # time of the full inverse for 48 px patches and 4 lags.
    f64 = {"dtype": torch.float64, "device": x.device}
    lags = torch.arange(-max_lag, max_lag + 1, **f64)
    down = torch.polar(torch.full((lags.numel(), rows), 1.0 / rows, **f64),
                       2 * math.pi * lags[:, None] * torch.arange(rows, **f64)[None] / rows).to(products.dtype)
    half = products.shape[-1]
    weight = torch.full((half, 1), 2.0 / cols, **f64)
    weight[0] = 1.0 / cols
    if cols % 2 == 0:
        weight[-1] = 1.0 / cols
    angle = 2 * math.pi * torch.arange(half, **f64)[:, None] * lags[None] / cols
    partial = down @ products  # (N, C, C', L, half)
    return partial.real @ (weight * angle.cos()).float() - partial.imag @ (weight * angle.sin()).float()


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


def label_pairs(label: torch.Tensor, labels: int, max_lag: int) -> torch.Tensor:
    """How many pixels ``p`` of each image have ``label(p) = f`` and ``label(p + d) = g``, for every lag ``d`` in
    ``[-max_lag, max_lag]^2``: ``(B, labels, labels, L, L)`` for ``label`` ``(B, H, W)`` in ``[0, labels)``, indexed as
    :func:`lag_products` (a joint histogram per lag: a few milliseconds where FFT products of one-hot maps took
    tens)."""
    batch, height, width = label.shape
    size = 2 * max_lag + 1
    offset = torch.arange(batch, device=label.device)[:, None, None] * labels * labels
    counts = torch.zeros(size, size, batch * labels * labels, device=label.device)
    for dy in range(-max_lag, max_lag + 1):
        for dx in range(-max_lag, max_lag + 1):
            here = label[:, max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
            there = label[:, max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
            pair = (offset + here * labels + there).flatten()
            counts[max_lag + dy, max_lag + dx] = torch.bincount(pair, minlength=counts.shape[-1]).float()
    return counts.view(size, size, batch, labels, labels).permute(2, 3, 4, 0, 1)


def phase_lag_correlation(z: torch.Tensor, phase: torch.Tensor, labels: int, max_lag: int,
                          pairs: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample correlation of zero-mean ``z`` ``(B, 3, H, W)`` between a pixel of each label (a grid phase, a
    content class or both) and the pixel at lag ``d``: ``E[z_c(p) z_c'(p + d) | phase(p) = f]`` with each value
    first standardized by the variance of its label and channel, each lag averaged over the pixel pairs it has.

    Args:
        phase: ``(B, H, W)`` the label of each pixel (:func:`phase_of` for grid phases), in ``[0, labels)``.
        pairs: ``(B, labels, L, L)`` the pixel pairs of each label at each lag, when the caller has counted them
            (``label_pairs(phase, labels, max_lag).sum(2)``); else counted here.

    Returns:
        ``(B, labels, 3, 3, 2 * max_lag + 1, 2 * max_lag + 1)``.
    """
    masks = torch.nn.functional.one_hot(phase, labels).permute(0, 3, 1, 2).float()  # (B, P2, H, W)
    count = masks.sum(dim=(2, 3)).clamp_min(1)  # (B, P2)
    variance = torch.einsum("bfhw,bchw->bfc", masks, z.float().square()) / count[:, :, None]
    scale = torch.einsum("bfhw,bfc->bchw", masks, variance.clamp_min(1e-12).rsqrt())
    standardized = z.float() * scale
    batch, phases = masks.shape[:2]
    by_phase = (masks[:, :, None] * standardized[:, None]).flatten(1, 2)  # (B, P2 * 3, H, W)
    products = lag_products(by_phase, max_lag, standardized)  # (B, P2 * 3, 3, L, L)
    if pairs is None:
        pairs = lag_products(masks, max_lag, torch.ones_like(masks[:, :1]))[:, :, 0]  # (B, P2, L, L)
    return (products.view(batch, phases, CHANNELS, CHANNELS, *products.shape[-2:])
            / pairs.clamp_min(1)[:, :, None, None])


class LatentCorrelation(nn.Module):
    """Correlates white Gaussian latents with a per-sample filter of unit energy (see the module docstring); with
    ``grid_px``, one filter per position in the camera's grid, and with ``content``, one per content class of the
    clean image as well; each pixel filtered by the filter of its label.

    Args:
        kernel_px: side of the filter (odd); the correlation it can express reaches ``kernel_px - 1`` pixels.
        feature_dim: D of the camera/ISO features it is predicted from.
        hidden: width of the small network that predicts it. The filter starts as the identity.
        grid_px: period of the grid (``grid_px^2`` filters; 0: one filter everywhere).
        content: one filter per :data:`CONTENT_CLASSES` too (times the grid's).
    """

    def __init__(self, kernel_px: int, feature_dim: int, hidden: int = 32, grid_px: int = 0,
                 content: bool = False) -> None:
        super().__init__()
        if kernel_px < 1 or kernel_px % 2 == 0:
            raise ValueError(f"kernel_px must be odd and positive, got {kernel_px}")
        self.kernel_px = kernel_px
        self.period = max(grid_px, 1)
        self.content = content
        self.classes = len(CONTENT_CLASSES) if content else 1
        self.phases = self.period**2 * self.classes  # filters per sample: one per (grid phase, content class)
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

    def labels(self, cond: Condition, clean: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` the filter of each pixel of ``like``: its grid phase times the content classes plus the
        content class of ``clean`` there (needed with ``content``)."""
        phase = phase_of(cond.grid_like(like), self.period) if self.period > 1 else torch.zeros(
            like.shape[0], *like.shape[-2:], dtype=torch.long, device=like.device)
        if not self.content:
            return phase
        if clean is None:
            raise ValueError("a content-aware latent filter needs the clean image")
        return phase * self.classes + content_classes(clean)

    def forward(self, z: torch.Tensor, cond: Condition, clean: torch.Tensor | None = None) -> torch.Tensor:
        """Correlates ``(B, 3, H, W)`` white latents for ``clean`` (the same shape, in [0, 1]; read only with
        ``content``); every output value is exactly N(0, 1) marginally."""
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
        label = self.labels(cond, clean, z)[:, None, None].expand(-1, 1, CHANNELS, -1, -1)
        return out.gather(1, label)[:, 0]

    def cross_covariance(self, features: torch.Tensor, max_lag: int) -> torch.Tensor:
        """``C_fg(d) = E[z'_c(p) z'_c'(p + d)]`` away from borders when ``p`` takes filter ``f`` and ``p + d`` filter
        ``g``: ``(B, f, 3, g, 3, 2 * max_lag + 1, 2 * max_lag + 1)``."""
        w = self.kernels(features)  # (B, f, c, c'', k, k)
        batch, filters, k = w.shape[0], self.phases * CHANNELS, self.kernel_px
        # C_fg(d) = sum_{c'', m} w_f[c, c''](m) w_g[c', c''](m - d): every filter (f, c) slid over every padded filter
        # (g, c') of the same sample, one convolution grouped by sample (a fifth of the time of FFT products here)
        slid = F.pad(w.reshape(batch, filters, CHANNELS, k, k).transpose(0, 1).reshape(filters, batch * CHANNELS, k, k),
                     (max_lag,) * 4)
        out = F.conv2d(slid, w.reshape(batch * filters, CHANNELS, k, k), groups=batch)  # (g c', B f c, L, L) at -d
        size = out.shape[-1]
        out = out.view(self.phases, CHANNELS, batch, self.phases, CHANNELS, size, size)
        return out.permute(2, 3, 4, 0, 1, 5, 6).flip(-2, -1)

    def covariance(self, features: torch.Tensor, max_lag: int) -> torch.Tensor:
        """The covariance of the correlated latent away from borders between a pixel of each grid phase ``f`` and the
        pixel at lag ``d``, ``E[z'_c(p) z'_c'(p + d) | phase(p) = f]``, as ``(B, phases, 3, 3, 2 * max_lag + 1,
        2 * max_lag + 1)`` (the layout of :func:`lag_products` for each phase). For a filter per grid phase only: with
        content classes the neighbour's filter depends on the image (:meth:`loss`)."""
        if self.content:
            raise ValueError("a content-aware filter's covariance depends on the image's content classes")
        pairs = self.cross_covariance(features, max_lag)
        size = pairs.shape[-1]
        lags = torch.arange(-max_lag, max_lag + 1, device=pairs.device)
        f = torch.arange(self.phases, device=pairs.device)
        row = (f // self.period)[:, None, None] + lags[None, :, None]
        column = (f % self.period)[:, None, None] + lags[None, None, :]
        g = (row % self.period) * self.period + column % self.period  # (f, L, L): the phase at lag d
        ly, lx = torch.meshgrid(torch.arange(size, device=pairs.device), torch.arange(size, device=pairs.device),
                                indexing="ij")
        picked = pairs[:, f[:, None, None], :, g, :, ly, lx]  # (f, L, L, B, c, c')
        return picked.permute(3, 0, 4, 5, 1, 2)

    def loss(self, real_latent: torch.Tensor, cond: Condition, clean: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared difference between the correlation the filters imply and the per-sample empirical
        correlation of ``real_latent`` ``(B, 3, H, W)`` (the flow's map of the real noise), for each grid phase, over
        every channel pair and lag up to ``kernel_px - 1``. With content classes (``clean`` as the latent is laid
        out), for each label, what the filters imply given the labels of that pixel's neighbours in the image, each
        label weighted by its share of the sample's pixels."""
        max_lag = self.kernel_px - 1
        centred = real_latent.detach() - real_latent.detach().mean(dim=(2, 3), keepdim=True)
        if self.content:
            return self._content_loss(centred, cond, clean, max_lag)
        if self.phases == 1:
            target = lag_correlation(centred, max_lag)[:, None]
        else:
            target = phase_lag_correlation(centred, self.labels(cond, None, centred), self.phases, max_lag)
        return (self.covariance(cond.features, max_lag) - target).square().mean()

    def implied_covariance(self, features: torch.Tensor, label: torch.Tensor, max_lag: int,
                           neighbours: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the filters imply away from borders for an image whose pixels take the filters ``label`` ``(B, H, W)``:
        ``E[z'_c(p) z'_c'(p + d) | label(p) = f]``, the cross-covariance ``C_fg(d)`` averaged over the labels ``g``
        of those pixels' neighbours at ``d``, as ``(B, phases, 3, 3, L, L)``; and each label's share of the pixels,
        ``(B, phases)``. ``neighbours``: :func:`label_pairs` of ``label`` when the caller has counted them."""
        if neighbours is None:
            neighbours = label_pairs(label, self.phases, max_lag)  # (B, f, g, L, L)
        implied = torch.einsum("bfcgeyx,bfgyx->bfceyx", self.cross_covariance(features, max_lag), neighbours)
        share = neighbours[..., max_lag, max_lag].sum(2) / label[0].numel()
        return implied / neighbours.sum(2).clamp_min(1)[:, :, None, None], share

    def _content_loss(self, centred: torch.Tensor, cond: Condition, clean: torch.Tensor | None,
                      max_lag: int) -> torch.Tensor:
        label = self.labels(cond, clean, centred)
        neighbours = label_pairs(label, self.phases, max_lag)  # counted once, for the target and the implied
        target = phase_lag_correlation(centred, label, self.phases, max_lag, neighbours.sum(2))  # (B, f, c, c', L, L)
        implied, share = self.implied_covariance(cond.features, label, max_lag, neighbours)
        return (share * (implied - target).square().mean(dim=(2, 3, 4, 5))).sum(1).mean()
