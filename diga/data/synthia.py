"""SYNTHIA-RAND-CITYSCAPES: the second synthetic source (16-bit labels, 16 shared classes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from diga.data._base import Sample, SegmentationDataset, pair_flat_folders
from diga.data.classes import (
    SYNTHIA16_CLASSES,
    SYNTHIA_ID_TO_TRAIN_ID,
    SYNTHIA_PALETTE,
    lookup_table,
    map_labels,
)
from diga.data.io import load_label

__all__ = ["Synthia"]


class Synthia(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES frames with labels mapped to the 16 classes shared with Cityscapes.

    Layout (as downloaded)::

        root/RGB/0000000.png ...
        root/GT/LABELS/0000000.png ...   (16-bit, 3 channels: class id, instance id, 0)

    The class id is the first channel of the 16-bit label PNG (read with
    ``torchvision.io``: PIL would cut it to 8 bits), mapped through
    :data:`~diga.data.SYNTHIA_ID_TO_TRAIN_ID` to the training ids of
    :data:`~diga.data.SYNTHIA16_CLASSES`; every other id becomes 255. To
    score on 13 classes, see :data:`~diga.data.SYNTHIA13_IN_16`.

    Args:
        root: the SYNTHIA-RAND-CITYSCAPES folder.
        transform: paired transform ``t(image, label, generator=g)``.
        list_file: one image file name per line (``0000000.png``), restricting
            and ordering the items.
        seed: augmentation seed (None: torch's global generator).

    Raises:
        FileNotFoundError: missing root, ``RGB`` / ``GT/LABELS`` folder or list entry.
        ValueError: no images or unpaired files.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.makedirs(f"{root}/RGB"); os.makedirs(f"{root}/GT/LABELS")
        ...     Image.new("RGB", (8, 4)).save(f"{root}/RGB/0000000.png")
        ...     Image.new("I;16", (8, 4), color=8).save(f"{root}/GT/LABELS/0000000.png")  # car
        ...     dataset = Synthia(root)
        ...     item = dataset[0]
        >>> item["label"].unique().tolist(), dataset.classes[12], dataset.num_classes
        ([12], 'car', 16)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        transform: Callable | None = None,
        list_file: str | os.PathLike | None = None,
        seed: int | None = 0,
    ) -> None:
        self.root = Path(root)
        pairs = pair_flat_folders(
            self.root, dataset="SYNTHIA", image_sub="RGB", label_sub="GT/LABELS",
            label_pattern="*.png (16-bit)", list_file=list_file,
        )
        samples = [Sample(img.name, img.path, lbl.path) for img, lbl in pairs]
        super().__init__(samples, transform=transform, seed=seed, classes=SYNTHIA16_CLASSES,
                         palette=SYNTHIA_PALETTE)
        self._table = lookup_table(SYNTHIA_ID_TO_TRAIN_ID)

    def _read_label(self, path: Path) -> Tensor:
        return load_label(path, channel=0)

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return map_labels(raw, self._table, ignore_index=self.ignore_index)
