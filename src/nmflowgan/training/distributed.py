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
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
        """Mean of ``values`` over all ranks (identity when not distributed)."""
        if not self.enabled:
            return values
        summed = values.detach().clone()
        dist.all_reduce(summed)
        return summed / self.world_size


def setup(device: torch.device) -> DistributedContext:
    """Joins the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise a no-op.

    The backend follows the device: NCCL for CUDA, gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(context: DistributedContext) -> None:
    """Leaves the process group. DistributedDataParallel wrappers sit in reference cycles and keep the
    group alive until the garbage collector frees them; freed only at interpreter exit, the group's
    threads may outlive what they use and abort the process, the likely cause of a rank that died with
    ``terminate called without an active exception`` once in a CI run. So they are freed first."""
    if context.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
