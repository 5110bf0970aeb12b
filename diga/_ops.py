"""Small tensor helpers shared across components."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_argmax", "constant", "count_values", "host_to_device", "resize_labels"]


def class_argmax(scores: Tensor, dim: int = 1) -> Tensor:
    """Index of the largest score along ``dim`` (the first on ties, as ``argmax``).

    ``max(dim).indices`` gives the same result as ``argmax(dim)`` (both return
    the first maximal value's index) and is about 4x faster on CPU for
    ``(B, C, H, W)`` scores in the torch releases we measured.

    Example:
        >>> class_argmax(torch.tensor([[[[1.0]], [[3.0]], [[3.0]]]]))
        tensor([[[1]]])
    """
    return scores.max(dim=dim).indices


def count_values(index: Tensor, size: int) -> Tensor:
    """``torch.bincount(index, minlength=size)`` for ``index`` in ``[0, size)``, with no host sync.

    CUDA's ``bincount`` reads the maximum back to size its output (a host sync);
    the output size is known here, so a ``scatter_add_`` does the same count on
    the device. The CPU keeps ``bincount`` (faster there, and a CPU read is free).

    Args:
        index: int64 values in ``[0, size)``, any shape (flattened).
        size: number of bins.

    Returns:
        ``(size,)`` int64 counts.

    Example:
        >>> count_values(torch.tensor([0, 2, 2]), 4)
        tensor([1, 0, 2, 0])
    """
    index = index.reshape(-1)
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=size)
    return _scatter_count(index, size)


def _scatter_count(index: Tensor, size: int) -> Tensor:
    """The device branch of :func:`count_values`: ``(size,)`` counts by ``scatter_add_``."""
    return index.new_zeros(size).scatter_add_(0, index, torch.ones_like(index))


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of ``(B, H, W)`` integer labels to ``size``, as ``F.interpolate``.

    A no-op at that size. Shrinking by whole factors ``s`` is a strided view: nearest
    interpolation picks source ``floor(i * s) = i * s`` there, so no float round trip and no
    kernel are needed.

    Example:
        >>> resize_labels(torch.arange(16).reshape(1, 4, 4), (2, 2))
        tensor([[[ 0,  2],
                 [ 8, 10]]])
    """
    (h, w), size = labels.shape[-2:], tuple(size)
    if (h, w) == size:
        return labels
    if h % size[0] == 0 and w % size[1] == 0:
        return labels[..., :: h // size[0], :: w // size[1]]
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return out[:, 0].to(labels.dtype)


def host_to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """Move a small tensor drawn on the host (a CPU generator's draws) to ``device``, without a sync.

    A blocking host-to-GPU copy waits for every kernel already queued on the
    stream (a host sync in the middle of a step); an asynchronous one from
    pageable memory is staged before the call returns, so it is safe and waits
    for nothing. A no-op on the same device.

    Example:
        >>> host_to_device(torch.arange(3), "cpu")
        tensor([0, 1, 2])
    """
    return x.to(device, non_blocking=True)


@functools.lru_cache(maxsize=64)
def constant(value: float | int | bool, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """A 0-dim tensor holding ``value``, made once per value, dtype and device (do not write to it).

    For ``torch.where(mask, constant(...), x)`` and the like: a Python number there becomes a
    fresh scalar tensor, an extra operator (and on CUDA a host-to-device copy) at every call.

    Example:
        >>> x = torch.tensor([1.0, 2.0])
        >>> torch.where(x > 1, constant(0.0, x.dtype, x.device), x)
        tensor([1., 0.])
    """
    return torch.full((), value, dtype=dtype, device=device)
