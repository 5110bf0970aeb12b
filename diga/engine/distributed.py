"""Process setup under ``torchrun`` (or a single process), seeds and per-step generators."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from diga import _dist
from diga._random import derive_generator

__all__ = [
    "DistInfo",
    "cleanup_distributed",
    "resolve_device",
    "setup_distributed",
    "step_generator",
    "unused_parameters",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (this rank's GPU) when available, else CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("`device` 'cuda' was asked for, but this machine has no usable CUDA device "
                             "(torch.cuda.is_available() is False); expected 'cpu' or 'auto' here")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"`device` must be 'auto', 'cpu', 'cuda' or a torch device string, got {device!r}"
        ) from err


def setup_distributed(device: str | torch.device = "auto", *, backend: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    NCCL on CUDA, gloo on CPU. A plain ``python script.py`` is one process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not _dist.is_dist():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if _dist.is_dist():
        dist.destroy_process_group()


def step_generator(seed: int, step: int, *, stream: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for one training step: ``derive_generator(seed, step, stream, rank)``, so the
    same (seed, step, stream, rank) gives the same draws and a resumed run repeats exactly the
    randomness of an uninterrupted one.

    Example:
        >>> a = torch.rand(2, generator=step_generator(0, 5))
        >>> bool((a == torch.rand(2, generator=step_generator(0, 5))).all())
        True
    """
    return derive_generator(seed, step, stream, rank)


def unused_parameters(model: torch.nn.Module, *, size: tuple[int, int] = (64, 64)) -> list[str]:
    """Names of trainable parameters no output depends on (one dry forward/backward, grads cleared).

    smp models built with ``encoder_depth < 5`` keep encoder stages they never
    run, for instance; DDP must be told (``find_unused_parameters=True``).

    Example:
        >>> net = torch.nn.ModuleDict({"a": torch.nn.Conv2d(3, 2, 1), "b": torch.nn.Conv2d(3, 2, 1)})
        >>> net.forward = lambda x: net["a"](x)
        >>> unused_parameters(net)
        ['b.weight', 'b.bias']
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()  # no batch-norm statistics are touched by the dry run
    try:
        out = model(torch.zeros(2, 3, *size, device=device))
        tensors = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if torch.is_tensor(t)]
        torch.autograd.backward([t.float().sum() for t in tensors])
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return unused


def wrap_ddp(model: torch.nn.Module, info: DistInfo, *, find_unused: bool | None = None) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (no-op in one process), finding unused parameters
    only when the model has some (``find_unused=None``: one dry run of :func:`unused_parameters` tells;
    True / False when the caller knows, as the translator's networks, which use every parameter)."""
    if info.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if find_unused is None:
        find_unused = bool(unused_parameters(model))
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)
