"""Batches of dataset items: one dict per batch, concatenated compositions, moved to a device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["as_batch", "batch_images", "concat_batches", "to_device"]


def as_batch(batch: Any) -> dict[str, Any]:
    """A dataset batch (or item) as a dict: ``(image, label[, pseudo_label])`` tuples become named
    entries, a tensor is the ``image``, a dict is copied.

    Example:
        >>> sorted(as_batch((torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))))
        ['image', 'label']
    """
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, Tensor):
        return {"image": batch}
    if isinstance(batch, (tuple, list)):
        names = ("image", "label", "pseudo_label")
        return {k: v for k, v in zip(names, batch, strict=False)}
    raise ValueError(f"a batch must be a dict, tuple or tensor, got {type(batch).__name__}")


def batch_images(batch: Any) -> Tensor:
    """The image tensor of a batch: a tensor, the first item of a tuple/list, or ``batch["image"]``.

    Example:
        >>> batch_images((torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))).shape
        torch.Size([2, 3, 4, 4])
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(
        "each batch must be an image tensor, an (images, ...) tuple or a dict with key 'image', "
        f"got {type(batch).__name__}"
    )


def concat_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate dict batches along dim 0 (tensors) or as lists (anything else), key by key
    (keys missing from any batch are dropped).

    Example:
        >>> out = concat_batches([{"image": torch.zeros(2, 3, 4, 4), "name": ["a", "b"]},
        ...                       {"image": torch.zeros(1, 3, 4, 4), "name": ["c"]}])
        >>> out["image"].shape[0], out["name"]
        (3, ['a', 'b', 'c'])
    """
    if len(batches) == 1:
        return batches[0]
    keys = [k for k in batches[0] if all(k in b for b in batches)]
    out: dict[str, Any] = {}
    for k in keys:
        values = [b[k] for b in batches]
        if all(isinstance(v, Tensor) for v in values):
            out[k] = torch.cat(values)
        else:
            out[k] = [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Every tensor of ``batch`` on ``device`` (non-blocking); other entries as they are."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}
