"""Keep a dataset's items in memory after their first read."""

from __future__ import annotations

import operator
from typing import Any

from torch.utils.data import Dataset

__all__ = ["CachedDataset"]


class CachedDataset(Dataset):
    """``dataset``'s items, each computed once and then served from memory.

    For datasets that are slow to read and small enough to hold (the built-in
    :class:`~diga.data.SyntheticShift`, which draws every scene on the fly;
    pseudo-labels read from PNG files that do not change during a stage). The
    first read of an index calls ``dataset[index]``; later reads return the
    same object, so items must not be modified in place (the default
    ``DataLoader`` collate copies them into a new batch). Each ``DataLoader``
    worker process holds its own cache. Only cache datasets whose items are
    fixed: one that draws a random transform per read would keep its first
    draw for good (so the cache serves only real indices, ``[0, len)``, never
    a step sampler's virtual ones). Other attributes (``classes``,
    ``palette``, ``num_classes``, ...) are the wrapped dataset's.

    Args:
        dataset: any map-style dataset with ``__len__``.

    Example:
        >>> from diga.data import SyntheticShift
        >>> data = CachedDataset(SyntheticShift("target", size=(32, 48), length=4))
        >>> data[1] is data[1], len(data), data.num_classes
        (True, 4, 8)
    """

    supports_virtual_index = False

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                f"`dataset` must be a map-style dataset with __len__ and __getitem__, got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"`index` must be in [{-len(self)}, {len(self)}), got {index}")
        if index < 0:
            index += len(self)
        try:
            return self._items[index]
        except KeyError:
            item = self._items[index] = self.dataset[index]
            return item

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "_items"):  # unpickling: before __init__ ran
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r}, cached={len(self._items)})"
