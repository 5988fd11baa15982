"""``nlf``: heteroscedastic Gaussian noise, variance ``a * x + b`` in the clean intensity ``x`` (8-bit units),
one ``(a, b)`` per camera, ISO and channel: the noise level function of the Poisson-Gaussian model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nmflowgan.baselines.gaussian import across_iso, condition_key

BINS = 32
MIN_VARIANCE = 0.25  # a floor in 8-bit units squared: quantization alone gives 1/12


class HeteroscedasticNoise:
    """Fitted by weighted least squares of the per-intensity-bin noise variance against intensity."""

    name = "nlf"

    def __init__(self) -> None:
        self._stats: dict[tuple[str, float], torch.Tensor] = {}  # (3, BINS, 3): count, sum, sum of squares
        self._fits: dict[tuple[str, float], torch.Tensor] = {}

    def update(self, clean: torch.Tensor, noise_255: torch.Tensor, cameras: Sequence[str], isos: Sequence[float]
               ) -> None:
        """Adds training pairs: ``clean`` ``(B, 3, H, W)`` in [0, 1], noise in 8-bit units."""
        self._fits.clear()
        for b, key in enumerate(condition_key(c, i) for c, i in zip(cameras, isos)):
            stats = self._stats.setdefault(key, torch.zeros(3, BINS, 3, dtype=torch.float64))
            index = (clean[b].double() * BINS).long().clamp(0, BINS - 1).flatten(1)  # (3, H*W)
            values = noise_255[b].double().flatten(1)
            for slot, data in enumerate((torch.ones_like(values), values, values.square())):
                stats[:, :, slot].scatter_add_(1, index, data)

    def coefficients(self, camera: str, iso: float) -> torch.Tensor:
        """``(3, 2)``: ``(a, b)`` per channel, variance ``a * x_255 + b``, across ISO as
        :func:`~nmflowgan.baselines.gaussian.across_iso` says."""

        def own(key: tuple[str, float]) -> torch.Tensor:
            if key not in self._fits:
                self._fits[key] = self._fit(self._stats[key])
            return self._fits[key]
        return across_iso(self.name, condition_key(camera, iso), list(self._stats), own)

    @staticmethod
    def _fit(stats: torch.Tensor) -> torch.Tensor:
        count, total, total_sq = stats.unbind(-1)
        x = (torch.arange(BINS, dtype=torch.float64) + 0.5) * 255.0 / BINS
        fits = []
        for c in range(3):
            used = count[c] > 10
            n = count[c][used]
            mean = total[c][used] / n
            variance = total_sq[c][used] / n - mean.square()
            design = torch.stack([x[used], torch.ones_like(n)], dim=1) * n.sqrt()[:, None]
            if int(used.sum()) >= 2:
                solution = torch.linalg.lstsq(design, (variance * n.sqrt())[:, None]).solution.squeeze(1)
            else:  # one intensity only: a constant variance
                solution = torch.stack([x.new_tensor(0.0), (variance * n).sum() / n.sum()])
            fits.append(solution)
        return torch.stack(fits)

    def noise(self, clean: torch.Tensor, cameras: Sequence[str], isos: Sequence[float],
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``(B, 3, H, W)`` noise in 8-bit units for clean images in [0, 1]."""
        coefficients = torch.stack([self.coefficients(c, i) for c, i in zip(cameras, isos)]).to(clean)  # (B, 3, 2)
        slope, offset = coefficients[..., 0, None, None], coefficients[..., 1, None, None]
        variance = (slope * clean * 255.0 + offset).clamp_min(MIN_VARIANCE)
        gaussian = torch.randn(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
        return gaussian * variance.sqrt()
