"""Which patches each step reads: a permutation per epoch, global batches, each rank its own slice.

The order is a pure function of ``(seed, epoch)``, so a resumed run reads exactly the batches the
uninterrupted run would have read, and N ranks together read exactly the global batches one process
reads alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_order(length: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(length)`` used in ``epoch``."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's ``(index, epoch)`` keys of global batches from ``start_step`` on, epoch after epoch
    (the epoch selects each patch's augmentation).

    Args:
        length: patches in the data set; global_batch: patches per step over all ranks (the last
            incomplete batch of an epoch is dropped); rank, world_size: this process's slice.
        seed: the order's seed; start_step: the first step to yield (resume); steps: total steps.
    """

    def __init__(self, length: int, global_batch: int, rank: int, world_size: int, seed: int, start_step: int,
                 steps: int) -> None:
        if global_batch % world_size:
            raise ValueError(f"the batch size {global_batch} does not split over {world_size} processes")
        self.steps_per_epoch = length // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"the data set has {length} patches, fewer than one batch of {global_batch}")
        self.length, self.global_batch, self.rank, self.world_size = length, global_batch, rank, world_size
        self.seed, self.start_step, self.steps = seed, start_step, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def global_indices(self, step: int) -> torch.Tensor:
        """All indices of global batch ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.length, self.seed, epoch)
        return order[position * self.global_batch : (position + 1) * self.global_batch]

    def local_slice(self) -> slice:
        size = self.global_batch // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, order = -1, None
        for step in range(self.start_step, self.steps):
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, epoch_order(self.length, self.seed, epoch)
            batch = order[position * self.global_batch : (position + 1) * self.global_batch]
            yield [(index, epoch) for index in batch[self.local_slice()].tolist()]
