"""Training throughput in patches per second, plain eager float32 against the fast path this device offers
(bf16 autocast on GPUs and on CPUs with native bf16, float32 elsewhere, where bf16 would be emulated; the
default sampling path), through the real trainers on a small simcam data set:

* one full NM-FlowGAN step: critic every step, flow + refiner every 5th, so a window of 5 steps holds
  exactly one generator update;
* denoiser (DnCNN) training on pairs synthesized on the fly by a frozen noise model (plain sampling
  path against the default sampling path).

Batch 16 of 96x96 patches on the CPU, the preset's batch on a GPU; the ``paper`` preset (``--quick``:
the ``small`` preset, under a minute on 2 CPU cores).

    python benchmarks/training.py
    python benchmarks/training.py --quick

Each rate is that of the last logging window (the first holds one-off start-up work). FLOPs per
patch are counted on a separate run as the difference between runs of 2N and N steps. The last line,
``ratio: X``, is the geometric mean of the two jobs' fast-over-plain ratios.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from harness import arguments, finish, flops_of, give_refiner_work, machine, print_machine, print_table
from harness import setup as setup_device
from nmflowgan.config import Config, preset
from nmflowgan.data.simcam import simulate
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions, has_native_bf16
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, train_denoiser
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from nmflowgan.training.run import read_metrics

CPU_BATCH, PATCH_PX = 16, 96


def benchmark_config(name: str, batch: int | None) -> Config:
    """The preset with 96x96 patches in batches of ``batch`` (None: the preset's), the GAN from the first
    step, and almost no validation."""
    config = preset(name)
    train = dataclasses.replace(config.train, batch_size=batch or config.train.batch_size, patch_px=PATCH_PX,
                                stride_px=PATCH_PX, val_every=10**6, val_patches=8)
    gan = dataclasses.replace(config.gan, flow_warmup_steps=0) if config.gan is not None else None
    denoise = dataclasses.replace(config.denoiser_train, batch_size=batch or config.denoiser_train.batch_size,
                                  patch_px=PATCH_PX, stride_px=PATCH_PX)
    return dataclasses.replace(config, train=train, gan=gan, denoiser_train=denoise)


def noise_run(config: Config, data: Path, out: Path, steps: int, window: int, precision: str, device: str) -> None:
    train_noise_model(config, NoiseTrainingOptions(data=data, out=out, steps=steps, log_every=window, device=device,
                                                   quiet=True, precision=precision, overwrite=True))


def denoiser_run(config: Config, data: Path, model: Path, out: Path, steps: int, window: int, precision: str,
                 sampling: SamplingOptions, device: str) -> None:
    train_denoiser(config, DenoiserTrainingOptions(data=data, out=out, noise=str(model), steps=steps,
                                                   log_every=window, val_every=10**6, val_patches=8, device=device,
                                                   quiet=True, precision=precision, sampling=sampling, overwrite=True))


def last_rate(run: Path) -> float:
    return [m["patches_per_s"] for m in read_metrics(run) if "patches_per_s" in m][-1]


def gflop_per_patch(run: object, steps: int, batch: int) -> float:
    """FLOPs of ``steps`` steps, from the difference between runs of 2 x ``steps`` and ``steps`` steps."""
    counts = [flops_of(lambda length=length: run(length)) for length in (steps, 2 * steps)]  # type: ignore[operator]
    return (counts[1] - counts[0]) / (steps * batch) / 1e9


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="default paper (--quick: small)")
    args = parser.parse_args()
    device = setup_device(args)
    info = machine(device)
    print_machine(info)
    name = args.preset or ("small" if args.quick else "paper")
    config = benchmark_config(name, CPU_BATCH if device.type == "cpu" else None)
    batch, where = config.train.batch_size, str(device)
    window = 5  # one generator update per window
    rows, records = [], []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        scenes, size = (6, 192) if batch <= 16 else (12, 384)  # enough patches for one batch of the preset
        data = simulate(root / "data", cameras=["V1", "V2"], isos=[100, 1600], scenes=scenes, size_px=size, seed=0,
                        progress=False)

        fast_precision = "bf16" if has_native_bf16(device) else "fp32"
        rates = {}
        for key, precision in (("fp32", "fp32"), ("bf16", fast_precision)):
            noise_run(config, data, root / f"gan-{key}", 2 * window, window, precision, where)
            rates[key] = last_rate(root / f"gan-{key}")
        flops = gflop_per_patch(lambda n: noise_run(config, data, root / "gan-flops", n, window, "fp32", where),
                                window, batch)
        records.append({"job": "NM-FlowGAN step", "plain": rates["fp32"], "fast": rates["bf16"],
                        "gflop_per_patch": flops})

        model = give_refiner_work(NoiseModel.load(root / "gan-fp32", map_location=device))
        model_dir = model.save(root / "noise-model")
        denoise_window = 3
        paths = {"fp32": ("fp32", SamplingOptions.plain()), "bf16": (fast_precision, SamplingOptions())}
        rates = {}
        for key, (precision, sampling) in paths.items():
            denoiser_run(config, data, model_dir, root / f"dn-{key}", 2 * denoise_window, denoise_window, precision,
                         sampling, where)
            rates[key] = last_rate(root / f"dn-{key}")
        flops = gflop_per_patch(lambda n: denoiser_run(config, data, model_dir, root / "dn-flops", n, denoise_window,
                                                       "fp32", SamplingOptions.plain(), where), denoise_window, batch)
        records.append({"job": "denoiser + on-the-fly synthesis", "plain": rates["fp32"], "fast": rates["bf16"],
                        "gflop_per_patch": flops})

    for record in records:
        record["ratio"] = record["fast"] / record["plain"]
        record["gflop_per_mp"] = record["gflop_per_patch"] / (PATCH_PX * PATCH_PX / 1e6)
        rows.append([record["job"], name, f"{batch} x {PATCH_PX}x{PATCH_PX}", record["plain"], record["fast"],
                     record["gflop_per_patch"], record["gflop_per_mp"], record["gflop_per_patch"] * record["plain"],
                     f"{record['ratio']:.2f}x"])
    print(f"\ntraining on {device}, {torch.get_num_threads()} CPU threads; plain = eager float32 (and the plain "
          f"sampling path); fast = {fast_precision} (bf16 autocast only where the device has native bf16) and the "
          "default sampling path")
    print_table(["job", "preset", "batch", "plain patches/s", "fast patches/s", "GFLOP/patch", "GFLOP/MP",
                 "plain GFLOP/s", "fast / plain"], rows)
    finish(args, info, {"preset": name, "training": records},
           statistics.geometric_mean([r["ratio"] for r in records]))


if __name__ == "__main__":
    main()
