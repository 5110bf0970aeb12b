"""Cityscapes: the real target domain (``leftImg8bit`` images, ``gtFine`` labelIds)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from diga.data._base import (
    Sample,
    SegmentationDataset,
    attach_pseudo_labels,
    list_files,
    pair_by_key,
    require_dir,
    select_by_list,
)
from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    SYNTHIA16_CLASSES,
    SYNTHIA16_IN_19,
    SYNTHIA_PALETTE,
    lookup_table,
    map_labels,
)

__all__ = ["Cityscapes"]

_IMAGE_SUFFIX = "_leftImg8bit"
_LABEL_SUFFIX = "_gtFine_labelIds"


class Cityscapes(SegmentationDataset):
    """Cityscapes images with their 19-class labels, pseudo-labels, or neither.

    Layout (the official one)::

        root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
        root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

    Label ids are mapped to the 19 training ids
    (:data:`~diga.data.CITYSCAPES_ID_TO_TRAIN_ID`), every other id to 255.
    Items are in sorted path order, or in the order of ``list_file``.
    With ``labels=False`` the ``gtFine`` folder is not needed at all.

    Args:
        root: the Cityscapes folder.
        split: ``"train"``, ``"val"``, ``"test"`` (any sub-folder of ``leftImg8bit``).
        transform: paired transform ``t(image, *labels, generator=g)``, e.g.
            :class:`~diga.data.RandomScaleCrop`; ``g`` is derived from
            ``(seed, epoch, index)``.
        labels: load the ground truth (False for the unlabelled target).
        pseudo_label_dir: folder of pseudo-label PNGs in training ids, one per
            image: ``{pseudo_label_dir}/{name}.png`` (e.g.
            ``aachen/aachen_000000_000019_leftImg8bit.png``), or flat
            ``{pseudo_label_dir}/{basename}.png`` as the paper's scripts write them.
            Checked at construction; ids outside ``[0, 19)`` read as 255.
        list_file: text file with one image path relative to
            ``leftImg8bit/{split}`` per line (the paper's ``cityscapes_list/train.txt``),
            restricting and ordering the items.
        seed: augmentation seed (None: torch's global generator).
        num_classes: 19 (Cityscapes' training classes), or 16 for SYNTHIA -> Cityscapes:
            the classes SYNTHIA shares, in :data:`~diga.data.SYNTHIA16_CLASSES` order
            (terrain, truck and train become 255).

    Raises:
        FileNotFoundError: missing root, split folder, label folder, list entry or pseudo-label.
        ValueError: no images, or an image without a label.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from diga.data.io import save_label
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.makedirs(f"{root}/leftImg8bit/val/lindau")
        ...     image = f"{root}/leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"
        ...     Image.new("RGB", (8, 4)).save(image)
        ...     save_label(f"{root}/gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png",
        ...                torch.full((4, 8), 26))
        ...     item = Cityscapes(root, "val")[0]
        >>> item["name"], tuple(item["image"].shape), item["label"].unique().tolist()
        ('lindau/lindau_000000_000019_leftImg8bit', (3, 4, 8), [13])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Callable | None = None,
        labels: bool = True,
        pseudo_label_dir: str | os.PathLike | None = None,
        list_file: str | os.PathLike | None = None,
        seed: int | None = 0,
        num_classes: int = 19,
    ) -> None:
        if num_classes not in (19, 16):
            raise ValueError(
                "`num_classes` must be 19 (Cityscapes) or 16 (the classes SYNTHIA shares), "
                f"got {num_classes!r}"
            )
        if not isinstance(split, str) or not split:
            raise ValueError(f"`split` must be a non-empty string such as 'train', got {split!r}")
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"Cityscapes: root folder {str(self.root)!r} does not exist")
        image_root = self.root / "leftImg8bit"
        require_dir(image_root, dataset="Cityscapes", what="the image folder",
                    pattern=f"{{split}}/{{city}}/*{_IMAGE_SUFFIX}.png")
        image_dir = image_root / split
        if not image_dir.is_dir():
            splits = sorted(p.name for p in image_root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"Cityscapes: expected split folder {str(image_dir)!r} holding "
                f"{{city}}/*{_IMAGE_SUFFIX}.png, but it does not exist (splits found: {splits})"
            )
        images = list_files(image_dir, (".png",), stem_suffix=_IMAGE_SUFFIX)
        if not images:
            raise ValueError(
                f"Cityscapes: no images matching {{city}}/*{_IMAGE_SUFFIX}.png in {str(image_dir)!r}"
            )
        if list_file is not None:
            images = select_by_list(images, list_file, image_dir)
        if labels:
            label_dir = require_dir(self.root / "gtFine" / split, dataset="Cityscapes",
                                    what="the label folder", pattern=f"{{city}}/*{_LABEL_SUFFIX}.png",
                                    hint=" (pass labels=False for the unlabelled target)")
            found = list_files(label_dir, (".png",), stem_suffix=_LABEL_SUFFIX)
            pairs = pair_by_key(images, found, image_dir=image_dir, label_dir=label_dir,
                                both_ways=list_file is None)
            samples = [Sample(img.name, img.path, lbl.path) for img, lbl in pairs]
        else:
            samples = [Sample(img.name, img.path) for img in images]
        if pseudo_label_dir is not None:
            samples = attach_pseudo_labels(samples, pseudo_label_dir)
        if num_classes == 19:
            mapping, classes, palette = CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
        else:  # label id -> 19 train ids -> the 16 SYNTHIA classes (terrain, truck, train ignored)
            to16 = {c19: c16 for c16, c19 in enumerate(SYNTHIA16_IN_19)}
            mapping = {i: to16[t] for i, t in CITYSCAPES_ID_TO_TRAIN_ID.items() if t in to16}
            classes, palette = SYNTHIA16_CLASSES, SYNTHIA_PALETTE
        super().__init__(samples, transform=transform, seed=seed, classes=classes, palette=palette)
        self._table = lookup_table(mapping)

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return map_labels(raw, self._table, ignore_index=self.ignore_index)
