"""The latent-correlation loss of one training step (forward and backward), today's implementation against the
reference one it replaced, in the same process:

* reference: lag products through a full inverse FFT, and the filters' cross-covariance through FFT products of
  their taps;
* current: the inverse transform at the lags alone (two matrix products), and the cross-covariance as one
  convolution grouped by sample.

For ``small``'s filter (5x5, one per 2x2 phase) and the same with a filter per content class as well
(``correlation_content``), on a batch of 16 patches of 48 px (``small``'s training batch) with their real latents
and clean images (the content filter counts its pixels' neighbours' classes the same way in both). The last line,
``ratio: X``, is reference over current seconds for ``small``'s filter; the two also agree on the loss to within
float32 rounding (checked and printed).

    python benchmarks/correlation.py
    python benchmarks/correlation.py --quick
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from harness import arguments, finish, machine, print_machine, print_table, seconds_per_call
from harness import setup as setup_device
from nmflowgan.conditions import grid_positions
from nmflowgan.config import preset
from nmflowgan.models import correlation
from nmflowgan.models.noise_model import NoiseModel

BATCH, PATCH_PX = 16, 48


def reference_lag_products(x: torch.Tensor, max_lag: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~nmflowgan.models.correlation.lag_products` through the full inverse transform."""
    height, width = x.shape[-2:]
    size = (height + max_lag, width + max_lag)
    spectrum = torch.fft.rfft2(x.float(), s=size)
    other = spectrum if y is None else torch.fft.rfft2(y.float(), s=size)
    products = torch.fft.irfft2(spectrum.conj()[:, :, None] * other[:, None, :], s=size)
    lags = torch.arange(-max_lag, max_lag + 1, device=x.device)
    return products.index_select(-2, lags % size[0]).index_select(-1, lags % size[1])


def reference_cross_covariance(self: correlation.LatentCorrelation, features: torch.Tensor, max_lag: int
                               ) -> torch.Tensor:
    """:meth:`~nmflowgan.models.correlation.LatentCorrelation.cross_covariance` through FFT products of the taps."""
    w = self.kernels(features)
    batch, k, channels = w.shape[0], self.kernel_px, correlation.CHANNELS
    taps = w.permute(0, 3, 1, 2, 4, 5).reshape(batch * channels, self.phases * channels, k, k)
    per_input = reference_lag_products(taps, max_lag)
    size = per_input.shape[-1]
    pairs = per_input.view(batch, channels, self.phases, channels, self.phases, channels, size, size)
    return pairs.sum(1).flip(-2, -1)


@contextlib.contextmanager
def reference() -> Iterator[None]:
    """The module's lag products and cross-covariance replaced by the reference ones for the duration."""
    saved = correlation.lag_products, correlation.LatentCorrelation.cross_covariance
    correlation.lag_products = reference_lag_products
    correlation.LatentCorrelation.cross_covariance = reference_cross_covariance
    try:
        yield
    finally:
        correlation.lag_products, correlation.LatentCorrelation.cross_covariance = saved


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    device = setup_device(args)
    info = machine(device)
    print_machine(info)
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(BATCH, 3, PATCH_PX, PATCH_PX, generator=generator)
    clean = torch.nn.functional.avg_pool2d(clean, 5, 1, 2)  # flat areas and edges both, as images have
    clean[:, :, :, PATCH_PX // 2 :] += 0.2
    latent = torch.randn(BATCH, 3, PATCH_PX, PATCH_PX, generator=generator)
    config = preset("small").model
    records = []
    for name, content in (("small", False), ("small + content", True)):
        torch.manual_seed(0)
        model = NoiseModel(dataclasses.replace(config, correlation_content=content), ["S0", "S1"], (100.0, 6400.0))
        torch.nn.init.normal_(model.correlation.net[-1].bias, std=0.2)
        cond = model.encode(["S0", "S1"] * (BATCH // 2), [800.0] * BATCH, BATCH,
                            grid=grid_positions(BATCH, PATCH_PX, PATCH_PX))
        clean_d, latent_d, cond = clean.to(device), latent.to(device), cond.to(device)
        model.to(device)

        def step(model: NoiseModel = model, cond: object = cond, clean_d: torch.Tensor = clean_d,
                 latent_d: torch.Tensor = latent_d) -> float:
            model.zero_grad(set_to_none=True)
            loss = model.correlation.loss(latent_d, cond, clean_d)
            loss.backward()
            return loss.item()

        with reference():
            reference_loss = step()
            reference_s = seconds_per_call(step, device, 0.5 if args.quick else 3.0)
        current_loss = step()
        current_s = seconds_per_call(step, device, 0.5 if args.quick else 3.0)
        if abs(current_loss - reference_loss) > 1e-4 * abs(reference_loss):
            raise SystemExit(f"{name}: the loss differs: current {current_loss} against reference {reference_loss}")
        records.append({"filter": name, "reference_ms": reference_s * 1e3, "current_ms": current_s * 1e3,
                        "ratio": reference_s / current_s, "loss": current_loss, "reference_loss": reference_loss})
    print(f"\nlatent-correlation loss, forward and backward, {BATCH} patches of {PATCH_PX} px on {device} "
          f"({torch.get_num_threads()} threads)")
    print_table(["filter", "reference ms", "current ms", "reference / current", "loss (current)", "loss (reference)"],
                [[r["filter"], r["reference_ms"], r["current_ms"], f"{r['ratio']:.2f}x", f"{r['loss']:.6g}",
                  f"{r['reference_loss']:.6g}"] for r in records])
    finish(args, info, {"correlation": records}, records[0]["ratio"])


if __name__ == "__main__":
    main()
