"""Mapillary Vistas v1.2: a real evaluation set, its 66 classes grouped into Cityscapes' 19."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from diga.data._base import SegmentationDataset, require_dir
from diga.data._eval_sets import flat_samples, with_resize
from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    MAPILLARY_V12_TO_CITYSCAPES,
    lookup_table,
    map_labels,
)

__all__ = ["Mapillary"]

#: Where v1.2's label PNGs are: the v1.2 download, then the v2.0 download (which ships both versions).
_LABEL_SUBS = ("labels", "v1.2/labels")


class Mapillary(SegmentationDataset):
    """Mapillary Vistas v1.2 images with their labels grouped into the 19 Cityscapes classes.

    Layout (the official downloads)::

        root/{split}/images/{key}.jpg
        root/{split}/labels/{key}.png          (v1.2 download: one class id per pixel, 0-65)
        root/{split}/v1.2/labels/{key}.png     (v2.0 download, which also ships the v1.2 labels)

    The 66 v1.2 ids go to the 19 Cityscapes training ids through
    :data:`~diga.data.MAPILLARY_V12_TO_CITYSCAPES`, the grouping the domain
    generalisation literature uses (RobustNet's loader, copied by DiGA's
    scripts): 25 ids are kept, the other 41 (and anything past 65) read as
    255. v2.0's 124-class labels (``{split}/v2.0/labels``) are not read: no
    grouping of them into Cityscapes' classes is shared by the literature.
    Images have many sizes; the scripts evaluate them resized to 1080 x 1920:
    pass ``size=(1080, 1920)`` for that (or let
    :class:`~diga.engine.targets.EvalTarget` resize).

    Args:
        root: the Mapillary Vistas folder (holding ``training``, ``validation``).
        split: ``"validation"`` (2,000 images), ``"training"`` (18,000) or ``"testing"`` (no labels).
        transform: paired transform ``t(image, *labels, generator=g)``.
        labels: load the ground truth (False: no label folder needed).
        pseudo_label_dir: ``{dir}/{key}.png`` per image, as for :class:`~diga.data.Cityscapes`.
        list_file: one image name per line, with or without ``.jpg`` (the scripts'
            ``mapillary_list/val.txt``), restricting and ordering the items.
        seed: augmentation seed (None: torch's global generator).
        size: ``(height, width)`` to resize every item to before ``transform``, as the
            scripts' evaluation does (image bicubic, labels nearest). None keeps each image's size.

    Attributes:
        label_dir: the v1.2 label folder read (None without labels).

    Raises:
        FileNotFoundError: missing root, split, image or v1.2 label folder (the message
            names what it expected), list entry or pseudo-label.
        ValueError: bad argument, no images, an image without a label (or the reverse).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from diga.data.io import save_label
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.makedirs(f"{root}/validation/images")
        ...     Image.new("RGB", (40, 30)).save(f"{root}/validation/images/tpXbWbKou74kfzwhD_k5GQ.jpg")
        ...     # four bands of 10 columns: Road, Lane Marking - General, Bike Lane, On Rails
        ...     raw = torch.tensor([13, 24, 7, 58]).repeat_interleave(10).expand(30, 40)
        ...     save_label(f"{root}/validation/labels/tpXbWbKou74kfzwhD_k5GQ.png", raw)
        ...     item = Mapillary(root, size=(6, 8))[0]
        >>> tuple(item["image"].shape), item["label"][0].tolist()
        ((3, 6, 8), [0, 0, 0, 0, 255, 255, 16, 16])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "validation",
        *,
        transform: Callable | None = None,
        labels: bool = True,
        pseudo_label_dir: str | os.PathLike | None = None,
        list_file: str | os.PathLike | None = None,
        seed: int | None = 0,
        size: int | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"`split` must be a folder name such as 'validation', got {split!r}")
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"Mapillary: root folder {str(self.root)!r} does not exist")
        split_dir = self.root / split
        if not split_dir.is_dir():
            splits = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise FileNotFoundError(
                f"Mapillary: expected split folder {str(split_dir)!r} holding images/*.jpg and "
                f"labels/*.png, but it does not exist (folders found: {splits})"
            )
        image_dir = require_dir(split_dir / "images", dataset="Mapillary", what="the image folder",
                                pattern="*.jpg")
        self.label_dir: Path | None = self._find_labels(split_dir) if labels else None
        samples = flat_samples(image_dir, self.label_dir, dataset="Mapillary", list_file=list_file,
                               pseudo_label_dir=pseudo_label_dir)
        super().__init__(samples, transform=with_resize(transform, size), seed=seed,
                         classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE)
        self._table = lookup_table(MAPILLARY_V12_TO_CITYSCAPES)

    @staticmethod
    def _find_labels(split_dir: Path) -> Path:
        for sub in _LABEL_SUBS:
            if (split_dir / sub).is_dir():
                return split_dir / sub
        v2 = split_dir / "v2.0" / "labels"
        why = (
            f"; only {str(v2)!r} (v2.0's 124 classes, which have no agreed grouping into Cityscapes' "
            f"19) is there: every v2.0 download also ships the v1.2 labels in v1.2/labels"
            if v2.is_dir() else "; pass labels=False for images without labels"
        )
        raise FileNotFoundError(
            f"Mapillary: expected the v1.2 label folder {str(split_dir / _LABEL_SUBS[0])!r} (or "
            f"{str(split_dir / _LABEL_SUBS[1])!r}) holding *.png, but neither exists{why}"
        )

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return map_labels(raw, self._table, ignore_index=self.ignore_index)
