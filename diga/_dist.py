"""Thin answers about ``torch.distributed``, falling back to one process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum_", "barrier", "is_dist", "is_main", "rank", "world_size"]


def is_dist() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum_(*tensors: Tensor) -> None:
    """Sum ``tensors`` in place across ranks, in one collective; a no-op in one process.

    Tensors are packed into one flat float64 buffer (so counts stay exact), reduced
    and written back. Every rank must call this the same number of times.
    """
    if not is_dist() or world_size() == 1 or not tensors:
        return
    device = tensors[0].device
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    flat = torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
        offset += n
