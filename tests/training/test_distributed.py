"""The distributed plumbing: collectives on the backend's device, and per-rank noise that survives a resume."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from nmflowgan.config import save_config
from nmflowgan.training.distributed import DistributedContext, backend_for
from nmflowgan.training.loop import step_generator
from tests.conftest import tiny_config


def test_backend_and_collective_device_follow_the_compute_device():
    assert backend_for(torch.device("cuda", 3)) == ("nccl", torch.device("cuda", 3))
    assert backend_for(torch.device("cpu")) == ("gloo", torch.device("cpu"))
    assert backend_for(torch.device("mps")) == ("gloo", torch.device("cpu"))


def test_mean_reduces_on_the_collective_device_and_returns_on_the_input_device(monkeypatch):
    seen = []

    def fake_all_reduce(tensor):  # two ranks holding the same values
        seen.append(tensor.device)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    context = DistributedContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    values = torch.tensor([1.0, 3.0], dtype=torch.float64)
    mean = context.mean(values)
    assert seen == [context.device]
    assert torch.equal(mean, values) and mean.device == values.device and mean.dtype == values.dtype
    assert torch.equal(values, torch.tensor([1.0, 3.0], dtype=torch.float64))  # the input is left alone


def test_step_generators_differ_by_rank_and_step_and_repeat_exactly():
    def draw(seed, step, rank):
        return torch.randn(8, generator=step_generator(seed, step, rank))

    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    assert not torch.equal(draw(0, 5, 0), draw(0, 5, 1))
    assert not torch.equal(draw(0, 5, 0), draw(0, 6, 0))
    assert not torch.equal(draw(0, 5, 0), draw(1, 5, 0))


def _denoiser_run(tmp_path, simcam_tree, out, steps, resume=False):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args = ["train-denoiser", "--noise", "gaussian", "--data", simcam_tree, "--config", config, "--steps", steps,
            "--device", "cpu", "--quiet", "--val-every", 2, "--out", out] + (["--resume"] if resume else [])
    done = subprocess.run([*launcher, "-m", "nmflowgan", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_rank_denoiser_resumed_equals_uninterrupted(tmp_path, simcam_tree):
    # Each rank draws its own noise; after a resume each must still draw its own, not rank 0's.
    _denoiser_run(tmp_path, simcam_tree, tmp_path / "straight", 4)
    _denoiser_run(tmp_path, simcam_tree, tmp_path / "resumed", 2)
    _denoiser_run(tmp_path, simcam_tree, tmp_path / "resumed", 4, resume=True)
    straight = load_file(str((tmp_path / "straight" / "last").resolve() / "denoiser.safetensors"))
    resumed = load_file(str((tmp_path / "resumed" / "last").resolve() / "denoiser.safetensors"))
    assert all(torch.allclose(straight[k], resumed[k], rtol=0, atol=1e-7) for k in straight)
