"""What every benchmark shares: the machine's description, timing, FLOP counting, tables and ``ratio:``.

Each benchmark measures an optimized path against the plain eager float32 path of the same network in
the same process, so the machine's noise (clock, other load) cancels in the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from nmflowgan.config import SMALL_REFINER, ModelConfig, preset
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import has_native_bf16


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a reduced run that finishes in under a minute")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Applies ``--threads`` and returns the device (refusing cuda without a GPU)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    return device


def machine(device: torch.device) -> dict:
    """Where a figure was measured: CPU, cores, threads, torch, native bf16, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "native_bf16": has_native_bf16(device), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_machine(info: dict) -> None:
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(function: Callable[[], object], device: torch.device, min_seconds: float = 2.0,
                     min_calls: int = 2, warmup: int = 2) -> float:
    """Median wall time of ``function`` after ``warmup`` calls, over at least ``min_calls`` calls and
    ``min_seconds`` seconds."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times: list[float] = []
    while len(times) < min_calls or sum(times) < min_seconds:
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops_of(function: Callable[[], object]) -> float:
    """Floating-point operations (multiply and add counted apart) of one call, from PyTorch's counter
    (convolutions and matrix products; elementwise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def give_refiner_work(model: NoiseModel) -> NoiseModel:
    """Gives the refiner's last convolution (zero at initialization, which makes the refiner the identity)
    small random weights, so that the refiner changes the noise; a model without a refiner is returned as it
    is. Costs do not depend on the weights; the realism checks need a refiner that does something."""
    if model.refiner is not None:
        with torch.no_grad():
            model.refiner.last.weight.normal_(0, 0.02)
    return model


# Models to compare besides the presets: ``small-affine`` is ``small`` without its spline layer (the flow of
# ``small`` before RQS), the baseline the spline's cost is measured against; ``small-refiner`` is that model
# with the identity refiner every ``small`` model used to carry and run (before models held only what their
# config uses); ``small-nogrid`` is ``small`` without the camera's grid (no grid values, one latent filter), the
# baseline the grid's cost is measured against.
AFFINE_SPEC = "UD|NE|SAL|SDL|CL2|SAL|SDL|CL2"


def model_config(name: str) -> ModelConfig:
    """The model config of preset ``name``, or of ``small-affine``, ``small-refiner`` or ``small-nogrid``."""
    if name == "small-nogrid":
        config = preset("small").model
        return dataclasses.replace(config, flow=dataclasses.replace(config.flow, grid_px=0), correlation_grid_px=0)
    if name in ("small-affine", "small-refiner"):
        config = preset("small").model
        config = dataclasses.replace(config, flow=dataclasses.replace(config.flow, spec=AFFINE_SPEC))
        return dataclasses.replace(config, refiner=SMALL_REFINER) if name == "small-refiner" else config
    return preset(name).model


def busy_model(name: str, device: torch.device | str = "cpu") -> NoiseModel:
    """An untrained model of ``name`` (:func:`model_config`; seed 0) whose refiner, if it has one, does something."""
    torch.manual_seed(0)
    return give_refiner_work(NoiseModel(model_config(name))).to(device).eval()


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A Markdown table (pastes straight into BENCHMARKS.md)."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def finish(args: argparse.Namespace, info: dict, results: dict, ratio: float) -> None:
    """Writes ``--json`` and prints the headline ``ratio: X`` (optimized over plain) as the last line."""
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick, **results, "ratio": ratio}, indent=2)
                             + "\n")
    print(f"ratio: {ratio:.2f}")
