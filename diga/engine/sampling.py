"""Step-indexed sampling: batch ``k`` is a pure function of (seed, k), so a resumed run repeats it."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diga._checks import check_number
from diga._random import derive_generator

__all__ = ["StepSampler", "VirtualIndex", "infinite_loader"]


class StepSampler(Sampler[int]):
    """Endless, resumable, rank-sharded sampler.

    Each epoch is a permutation of the dataset drawn from ``derive_generator(seed, epoch)``;
    every rank takes a disjoint slice of it, ``batch_size`` indices per step,
    and the tail that does not fill a step on every rank is dropped. Indices are
    *virtual*: ``epoch * len(dataset) + i``, so a dataset that draws its random
    transform from the index (``diga.data`` datasets do) gets fresh, reproducible
    augmentation every epoch; datasets take ``index % len(self)`` for the file.

    Args:
        num_items: dataset length.
        batch_size: per-rank batch size.
        seed: permutation seed.
        start_step: first step to yield (resume): no item before it is loaded.
        rank, world_size: this process's shard.
        shuffle: permute each epoch (False: dataset order).

    Example:
        >>> s = StepSampler(10, batch_size=2, seed=0)
        >>> first = [i for _, i in zip(range(6), s)]
        >>> resumed = [i for _, i in zip(range(2), StepSampler(10, batch_size=2, seed=0, start_step=2))]
        >>> resumed == first[4:6]
        True
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        check_number(num_items, "num_items", low=1, integer=True)
        check_number(batch_size, "batch_size", low=1, integer=True)
        check_number(start_step, "start_step", low=0, integer=True)
        check_number(world_size, "world_size", low=1, integer=True)
        check_number(rank, "rank", low=0, high=world_size - 1, integer=True)
        self.steps_per_epoch = num_items // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"`num_items` ({num_items}) must be at least batch_size x world_size = "
                f"{batch_size * world_size} to fill one step"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        g = derive_generator(self.seed, epoch)
        return torch.randperm(self.num_items, generator=g)

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        per_step = self.batch_size * self.world_size
        while True:
            epoch, k = divmod(step, self.steps_per_epoch)
            order = self._epoch_order(epoch)
            lo = k * per_step + self.rank * self.batch_size
            for i in order[lo : lo + self.batch_size].tolist():
                yield epoch * self.num_items + i
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class VirtualIndex(Dataset):
    """Serves a :class:`StepSampler`'s virtual indices from a dataset that knows only ``[0, n)``.

    Datasets that set ``supports_virtual_index = True`` (those of :mod:`diga.data`,
    which draw their random transform from the full index) are used as they are.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def infinite_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    shuffle: bool = True,
) -> Iterator:
    """An endless iterator of batches from a :class:`StepSampler` (``next(it)`` per step)."""
    sampler = StepSampler(
        len(dataset), batch_size=batch_size, seed=seed, start_step=start_step, rank=rank,
        world_size=world_size, shuffle=shuffle,
    )
    if not getattr(dataset, "supports_virtual_index", False):
        dataset = VirtualIndex(dataset)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=pin_memory, drop_last=True, persistent_workers=num_workers > 0,
    )
    return iter(loader)
