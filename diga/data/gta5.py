"""GTA5: the synthetic source (``images/*.png`` with Cityscapes-id ``labels/*.png``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torch import Tensor

from diga.data._base import FileEntry, Sample, SegmentationDataset, pair_flat_folders
from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    lookup_table,
    map_labels,
)

__all__ = ["GTA5"]

_POLICIES = ("resize", "skip", "error")


def _png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read {str(path)!r}: corrupt or not an image ({err})") from err


class GTA5(SegmentationDataset):
    """GTA5 frames with labels mapped to the 19 Cityscapes training ids.

    Layout (as downloaded)::

        root/images/00001.png ... root/images/24966.png
        root/labels/00001.png ...          (Cityscapes label ids, 8-bit)

    A few GTA5 labels are not the size of their image. ``size_mismatch``
    decides: ``"resize"`` stretches the label to the image by nearest
    neighbour when the item is loaded; ``"skip"`` drops such items when the
    dataset is built (sizes read from the PNG headers, no pixel decoding;
    the dropped names are in ``skipped``); ``"error"`` raises at construction,
    naming the files. No policy fails in the middle of an epoch.

    Args:
        root: the GTA5 folder.
        transform: paired transform ``t(image, label, generator=g)``.
        list_file: one image file name per line (the paper's ``gta5_list/train.txt``:
            ``00001.png``), restricting and ordering the items.
        size_mismatch: ``"resize"``, ``"skip"`` or ``"error"``.
        seed: augmentation seed (None: torch's global generator).

    Raises:
        FileNotFoundError: missing root, ``images``/``labels`` folder or list entry.
        ValueError: no images, unpaired files, bad ``size_mismatch``, or (with
            ``"error"``) a label whose size differs from its image.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from diga.data.io import save_label
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.makedirs(f"{root}/images")
        ...     for name in ("00001", "00002"):
        ...         Image.new("RGB", (8, 4)).save(f"{root}/images/{name}.png")
        ...     save_label(f"{root}/labels/00001.png", torch.full((5, 8), 7))  # one row too many
        ...     save_label(f"{root}/labels/00002.png", torch.full((4, 8), 26))
        ...     item = GTA5(root)[0]
        ...     skipping = GTA5(root, size_mismatch="skip")
        >>> tuple(item["label"].shape), item["label"].unique().tolist()
        ((4, 8), [0])
        >>> len(skipping), skipping.skipped
        (1, ['00001'])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        transform: Callable | None = None,
        list_file: str | os.PathLike | None = None,
        size_mismatch: str = "resize",
        seed: int | None = 0,
    ) -> None:
        if size_mismatch not in _POLICIES:
            raise ValueError(f"`size_mismatch` must be one of {_POLICIES}, got {size_mismatch!r}")
        self.root = Path(root)
        pairs = pair_flat_folders(
            self.root, dataset="GTA5", image_sub="images", label_sub="labels",
            label_pattern="*.png", list_file=list_file,
        )
        self.size_mismatch = size_mismatch
        self.skipped: list[str] = []
        if size_mismatch != "resize":
            pairs = self._check_sizes(pairs, size_mismatch)
        samples = [Sample(img.name, img.path, lbl.path) for img, lbl in pairs]
        super().__init__(samples, transform=transform, seed=seed, classes=CITYSCAPES_CLASSES,
                         palette=CITYSCAPES_PALETTE, label_size_mismatch="resize")
        self._table = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)

    def _check_sizes(
        self, pairs: list[tuple[FileEntry, FileEntry]], policy: str
    ) -> list[tuple[FileEntry, FileEntry]]:
        kept = []
        for img, lbl in pairs:
            image_size, label_size = _png_size(img.path), _png_size(lbl.path)
            if image_size == label_size:
                kept.append((img, lbl))
            elif policy == "skip":
                self.skipped.append(img.name)
            else:
                raise ValueError(
                    f"GTA5: label file {str(lbl.path)!r} is {label_size[0]}x{label_size[1]} (WxH) but "
                    f"image file {str(img.path)!r} is {image_size[0]}x{image_size[1]}; pass "
                    f"size_mismatch='resize' or 'skip'"
                )
        if not kept:
            raise ValueError(f"GTA5: every item in {str(self.root)!r} was skipped for a size mismatch")
        return kept

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return map_labels(raw, self._table, ignore_index=self.ignore_index)
