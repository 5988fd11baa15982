"""Scale-out with PyTorch's own engine: ``torchrun`` sets the environment, this module reads it.

Launch ``torchrun --nproc-per-node 8 -m nmflowgan train ...`` on one node, or with ``--nnodes`` and a
rendezvous endpoint on several. Each rank computes on its slice of every global batch; gradients are
averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPUs); only rank 0 writes files.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node, and the
    device the process group's collectives run on (``device``: this rank's GPU under NCCL, the CPU under gloo)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of ``values`` over all ranks (identity when not distributed), returned on their own device.
        The reduction runs on the backend's device: NCCL cannot reduce CPU tensors."""
        if not self.enabled:
            return values
        summed = values.detach().to(self.device, copy=True)
        dist.all_reduce(summed)
        return (summed / self.world_size).to(values.device)


def setup(device: torch.device) -> DistributedContext:
    """Joins the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise a no-op.

    The backend follows the device (see :func:`backend_for`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    backend, collective_device = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              collective_device)


def backend_for(device: torch.device) -> tuple[str, torch.device]:
    """The process-group backend for a rank computing on ``device``, and the device its collectives need:
    NCCL on that GPU for CUDA, gloo on the CPU otherwise."""
    if device.type == "cuda":
        return "nccl", device
    return "gloo", torch.device("cpu")


def teardown(context: DistributedContext) -> None:
    """Leaves the process group. DistributedDataParallel wrappers sit in reference cycles and keep the
    group alive until the garbage collector frees them; freed only at interpreter exit, the group's
    threads may outlive what they use and abort the process, the likely cause of a rank that died with
    ``terminate called without an active exception`` once in a CI run. So they are freed first."""
    if context.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
