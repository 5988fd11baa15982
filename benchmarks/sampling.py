"""Noise sampling throughput: megapixels per second of the plain eager float32 path and of the default
(optimized) path, for the ``paper`` and ``small`` presets (and ``small-affine``, ``small`` without its spline
layer), the flow alone and the whole model (latent correlation, flow, refiner: those it has), at batches of
256x256 images; FLOPs per megapixel next to each figure; a realism check of the optimized samples.

    python benchmarks/sampling.py            # batches 1, 8, 32 (a few minutes on 2 CPU cores)
    python benchmarks/sampling.py --quick    # batch 1 only, under a minute

The last line, ``ratio: X``, is the geometric mean over the batches run of the ``paper`` preset's
whole-model throughput, default path over plain path.
"""

from __future__ import annotations

import statistics

import torch

from harness import arguments, busy_model, finish, flops_of, machine, print_machine, print_table, seconds_per_call
from harness import setup as setup_device
from nmflowgan.metrics.kld import kld_per_patch
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default 1 8 32 (--quick: 1)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--compile", action="store_true", help="also time the default path with torch.compile")
    args = parser.parse_args()
    device = setup_device(args)
    info = machine(device)
    print_machine(info)
    batches = args.batches or ([1] if args.quick else [1, 8, 32])
    min_seconds = 0.5 if args.quick else 2.0
    paths = {"plain": SamplingOptions.plain(), "default": SamplingOptions()}
    if args.compile:
        paths["compiled"] = SamplingOptions(compile=True)
    generator = torch.Generator().manual_seed(0)

    rows, records = [], []
    for name in args.presets:
        model = busy_model(name, device)
        for refine in (False, True):
            for batch in batches:
                clean = torch.rand(batch, 3, args.size, args.size, generator=generator).to(device)
                cond = model.encode("S6", 800, batch)
                measured = {path: measure(model, clean, cond, refine, options, device, min_seconds)
                            for path, options in paths.items()}
                ratio = measured["default"]["mp_per_s"] / measured["plain"]["mp_per_s"]
                what = "whole model" if refine else "flow"
                record = {"preset": name, "network": what, "batch": batch, **measured, "ratio": ratio}
                records.append(record)
                row = [name, what, batch]
                for path in paths:
                    row += [measured[path]["mp_per_s"], measured[path]["gflop_per_mp"], measured[path]["gflop_per_s"]]
                rows.append(row + [f"{ratio:.2f}x"])
    print(f"\nsampling {args.size}x{args.size} images on {device} ({torch.get_num_threads()} threads); "
          "default path = " + repr(SamplingOptions()))
    headers = ["preset", "network", "batch"]
    for path in paths:
        headers += [f"{path} MP/s", f"{path} GFLOP/MP", f"{path} GFLOP/s"]
    print_table(headers + ["default / plain"], rows)

    realism = {name: realism_check(busy_model(name, device), device) for name in args.presets}
    print("\nrealism (whole model, 4 images of 256x256, KLD to a plain-path reference draw; equal within "
          "sampling noise means unchanged):")
    print_table(["preset", "KLD plain", "KLD default", "KLD spread of plain draws"],
                [[n, r["plain"], r["default"], r["spread"]] for n, r in realism.items()])

    summary = {}
    if {"paper", "small"} <= set(args.presets):
        print("\nsmall relative to paper (whole model, default path):")
        summary_rows = []
        for batch in batches:
            paper_record, small_record = (next(r for r in records if r["preset"] == p and r["batch"] == batch
                                               and r["network"] == "whole model") for p in ("paper", "small"))
            flops = small_record["default"]["gflop_per_mp"] / paper_record["default"]["gflop_per_mp"]
            speed = small_record["default"]["mp_per_s"] / paper_record["default"]["mp_per_s"]
            summary_rows.append([batch, f"{flops:.3f}", f"{speed:.1f}x"])
            summary[batch] = {"flops_ratio": flops, "throughput_ratio": speed}
        print_table(["batch", "small / paper GFLOP per MP", "small / paper MP/s"], summary_rows)
    headline = [r["ratio"] for r in records if r["preset"] == "paper" and r["network"] == "whole model"]
    if not headline:
        headline = [r["ratio"] for r in records]
    finish(args, info, {"sampling": records, "realism": realism, "small_vs_paper": summary},
           statistics.geometric_mean(headline))


def measure(model: NoiseModel, clean: torch.Tensor, cond: object, refine: bool, options: SamplingOptions,
            device: torch.device, min_seconds: float) -> dict:
    """Throughput (MP/s), cost (GFLOP per MP) and achieved GFLOP/s of one sampling path on one batch."""
    generator = torch.Generator().manual_seed(0)
    megapixels = clean[:, 0].numel() / 1e6

    def draw() -> torch.Tensor:
        return model.draw(clean, cond, generator, refine=refine, options=options)

    seconds = seconds_per_call(draw, device, min_seconds)
    gflop_per_mp = flops_of(draw) / megapixels / 1e9
    return {"mp_per_s": megapixels / seconds, "gflop_per_mp": gflop_per_mp, "gflop_per_s": gflop_per_mp / seconds
            * megapixels}


def realism_check(model: NoiseModel, device: torch.device, draws: int = 4) -> dict:
    """Mean per-image KLD between a reference draw of the plain path and ``draws`` further draws of each
    path; the spread is the standard deviation over the plain draws."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(4, 3, 256, 256, generator=generator).to(device)
    cond = model.encode("S6", 800, 4)
    reference = model.draw(clean, cond, generator, options=SamplingOptions.plain())
    scores = {}
    for path, options in {"plain": SamplingOptions.plain(), "default": SamplingOptions()}.items():
        draws_k = [model.draw(clean, cond, torch.Generator().manual_seed(10 + k), options=options)
                   for k in range(draws)]
        scores[path] = [float(kld_per_patch(reference, noise).mean()) for noise in draws_k]
    spread = torch.tensor(scores["plain"]).std().item()
    return {"plain": sum(scores["plain"]) / draws, "default": sum(scores["default"]) / draws, "spread": spread}


if __name__ == "__main__":
    main()
