"""Rare-class sampling (DAFormer, Hoyer et al. 2022): source crops drawn towards rare classes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from diga._checks import check_number
from diga._io import atomic_write_json
from diga.data.batch import as_batch

__all__ = ["RareClassSampling", "class_pixel_counts"]


def class_pixel_counts(dataset: Dataset, num_classes: int, *, progress: bool = True) -> Tensor:
    """``(N, C)`` int64 pixel count of each class in each item's label (one pass over the labels).

    Items are read through :func:`~diga.data.as_batch` (dicts with ``"label"``, or tuples); taken untransformed
    when the dataset has a ``transform`` attribute (it is switched off for the pass).
    """
    from tqdm.auto import tqdm

    saved = getattr(dataset, "transform", None)
    if saved is not None:
        dataset.transform = None
    try:
        rows = []
        for i in tqdm(range(len(dataset)), desc="class statistics", disable=not progress, leave=False):
            item = dataset[i]
            label = as_batch(item)["label"]
            valid = (label >= 0) & (label < num_classes)
            rows.append(torch.bincount(label[valid].flatten(), minlength=num_classes))
    finally:
        if saved is not None:
            dataset.transform = saved
    return torch.stack(rows)


class RareClassSampling(Dataset):
    """Draw items so that rare classes appear more often (DAFormer's rare-class sampling).

    A class ``c`` is drawn with probability ``softmax((1 - f_c) / temperature)``
    (``f_c``: the class's share of all labelled pixels), then an item
    containing at least ``min_pixels`` pixels of ``c``, uniformly. Each draw comes
    from a generator seeded by ``(seed, index)``, so the sequence is reproducible
    and resumable under step-indexed sampling (virtual indices are passed on, so
    the wrapped dataset's augmentation still varies by epoch).

    The per-item class statistics take one pass over the labels; with
    ``stats_file`` they are cached as JSON (written atomically) and reused.

    Args:
        dataset: a labelled source dataset (``diga.data`` datasets or ``(image, label)`` items).
        num_classes: ``C``.
        temperature: DAFormer's T (0.01).
        min_pixels: an item counts for a class from this many pixels (DAFormer: 3000
            at full resolution).
        seed: draw seed.
        stats_file: optional cache of the class statistics.
    """

    supports_virtual_index = True

    def __init__(
        self,
        dataset: Dataset,
        num_classes: int,
        *,
        temperature: float = 0.01,
        min_pixels: int = 3000,
        seed: int = 0,
        stats_file: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(temperature, "temperature", low=0, low_open=True)
        check_number(min_pixels, "min_pixels", low=1, integer=True)
        self.dataset = dataset
        self.seed = seed
        counts = None
        if stats_file is not None and Path(stats_file).exists():
            cached = json.loads(Path(stats_file).read_text())
            if len(cached) == len(dataset):
                counts = torch.tensor(cached, dtype=torch.int64)
        if counts is None:
            counts = class_pixel_counts(dataset, num_classes, progress=progress)
            if stats_file is not None:
                atomic_write_json(stats_file, counts.tolist())
        freq = counts.sum(0).double()
        freq = freq / freq.sum().clamp_min(1)
        present = counts >= min_pixels  # (N, C)
        usable = present.any(0)
        if not bool(usable.any()):
            raise ValueError(
                f"`min_pixels` ({min_pixels}) is more than any class has in any item: nothing to sample"
            )
        logits = ((1 - freq) / temperature).masked_fill(~usable, float("-inf"))
        self.class_probs = torch.softmax(logits, dim=0)
        self.present = present

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from diga.data.transforms import item_generator

        g = item_generator(self.seed, int(index))
        c = int(torch.multinomial(self.class_probs, 1, generator=g))
        candidates = self.present[:, c].nonzero().flatten()
        j = int(candidates[torch.randint(len(candidates), (1,), generator=g)])
        epoch = int(index) // len(self)
        target = epoch * len(self) + j
        if getattr(self.dataset, "supports_virtual_index", False):
            return self.dataset[target]
        return self.dataset[j]
