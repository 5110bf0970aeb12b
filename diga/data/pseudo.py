"""Pair any dataset's items with pseudo-labels written by ``diga.engine.generate_pseudo_labels``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from diga.data.batch import as_batch

__all__ = ["PseudoLabelled", "item_name", "label_file_fits"]


def item_name(item: Any, index: int) -> str:
    """The file stem an item's pseudo-label is stored under: its ``"name"``, else the zero-padded index.

    Example:
        >>> item_name({"name": "aachen/a_000001"}, 3), item_name((None,), 3)
        ('aachen/a_000001', '000003')
    """
    if isinstance(item, dict) and "name" in item:
        return str(item["name"])
    return f"{index:06d}"


def label_file_fits(path: str | os.PathLike, size: tuple[int, int]) -> bool:
    """Whether ``path`` is a whole PNG label map of ``size`` ``(H, W)``: a cached pseudo-label to keep.

    Reads 33 bytes at the start and 12 at the end, not the pixels: a PNG
    signature, an ``IHDR`` of the right size, and the closing ``IEND`` chunk (a
    file cut short, by a kill during a copy or a full disk, lacks it). A
    missing, truncated, foreign or other-size file is not kept.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from diga.data.io import save_label
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> _ = save_label(path, torch.zeros(4, 6, dtype=torch.uint8))
        >>> label_file_fits(path, (4, 6)), label_file_fits(path, (4, 7))
        (True, False)
        >>> _ = path.write_bytes(path.read_bytes()[:-20])  # cut short
        >>> label_file_fits(path, (4, 6))
        False
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(33)
            f.seek(0, os.SEEK_END)
            if f.tell() < 45:
                return False
            f.seek(-12, os.SEEK_END)
            tail = f.read(12)
    except OSError:
        return False
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return False
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (height, width) == tuple(size) and tail == b"\x00\x00\x00\x00IEND\xaeB`\x82"


class PseudoLabelled(Dataset):
    """Items of ``dataset`` as dicts with a ``"pseudo_label"`` read from ``directory/<name>.png``.

    For datasets without their own pseudo-label support (e.g. the built-in
    :class:`~diga.data.SyntheticShift`, or any ``(image, label)`` dataset).
    Items that are tuples become ``{"image", "label"}`` (:func:`~diga.data.as_batch`); the dataset's labels are
    kept (for monitoring pseudo-label precision; never trained on).

    Args:
        dataset: the target dataset (index ``i`` named as by :func:`item_name`).
        directory: where the pseudo-labels were written.

    Raises:
        FileNotFoundError: naming the directory if it is missing, and naming the
            file when an item's pseudo-label is.
    """

    supports_virtual_index = False

    def __init__(self, dataset: Dataset, directory: str | os.PathLike) -> None:
        self.dataset = dataset
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"pseudo-label directory not found: {self.directory}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from diga.data.io import load_label

        item = self.dataset[index]
        out = as_batch(item)
        path = self.directory / f"{item_name(item, index)}.png"
        out["pseudo_label"] = load_label(path)
        return out
