"""BDD100k semantic segmentation: a real target / evaluation set whose labels are already in the
19 Cityscapes training ids."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from diga.data._base import SegmentationDataset, require_dir
from diga.data._eval_sets import flat_samples, with_resize
from diga.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, lookup_table, map_labels

__all__ = ["BDD100k"]

_TRAIN_ID = "_train_id"

#: layout -> (image folder, label folder, label stem suffix, where it comes from), in detection order.
#: ``{split}`` is filled in; the ``seg`` layout is also found with ``root`` at the ``seg`` folder.
_LAYOUTS: dict[str, tuple[tuple[tuple[str, str], ...], str, str]] = {
    "seg": (
        (("seg/images/{split}", "seg/labels/{split}"), ("images/{split}", "labels/{split}")),
        _TRAIN_ID,
        "the 'seg' download (bdd100k/seg)",
    ),
    "10k": (
        (("images/10k/{split}", "labels/sem_seg/masks/{split}"),),
        "",
        "the 10K images with the 'sem_seg' masks",
    ),
    "scripts": (
        (("images/{split}", "gtFine/{split}"),),
        _TRAIN_ID,
        "DiGA's scripts (data/BDD100k)",
    ),
}


def _describe(layout: str, split: str) -> str:
    candidates, suffix, origin = _LAYOUTS[layout]
    image, label = (p.format(split=split) for p in candidates[0])
    return f"{image}/*.jpg with {label}/*{suffix}.png ({origin}, layout={layout!r})"


class BDD100k(SegmentationDataset):
    """BDD100k semantic segmentation (10,000 images: 7,000 train, 1,000 val), 19 Cityscapes classes.

    Labels are already the 19 Cityscapes training ids; every other value
    (255 in the files) reads as 255. Three folder layouts are recognised
    (``layout=None`` finds the first that exists, in this order; pass one to
    insist on it)::

        "seg":     root/seg/images/{split}/{stem}.jpg
                   root/seg/labels/{split}/{stem}_train_id.png   (also with root = the seg folder)
        "10k":     root/images/10k/{split}/{stem}.jpg
                   root/labels/sem_seg/masks/{split}/{stem}.png
        "scripts": root/images/{split}/{stem}.jpg
                   root/gtFine/{split}/{stem}_train_id.png        (DiGA's data/BDD100k)

    ``"seg"`` is the older release the domain generalisation literature
    evaluates on; ``"10k"`` the current one (``bdd100k_images_10k.zip`` and
    ``bdd100k_sem_seg_labels_trainval.zip``). Both are the same 10,000 images.
    Colour renderings (``color_labels``, ``colormaps``) are never read.
    Items are the images in sorted order, or in the order of ``list_file``.

    Args:
        root: the ``bdd100k`` folder (or, for ``"seg"``, the ``seg`` folder itself).
        split: ``"train"``, ``"val"`` or ``"test"`` (test has no labels).
        layout: ``"seg"``, ``"10k"``, ``"scripts"``, or None to detect.
        transform: paired transform ``t(image, *labels, generator=g)``.
        labels: load the ground truth (False for unlabelled images: no label folder needed).
        pseudo_label_dir: ``{dir}/{stem}.png`` per image, as for :class:`~diga.data.Cityscapes`.
        list_file: one image name per line, with or without ``.jpg`` (the scripts'
            ``bdd100k_list/val.txt``), restricting and ordering the items.
        seed: augmentation seed (None: torch's global generator).
        size: ``(height, width)`` to resize every item to before ``transform``,
            as the scripts' evaluation does (720 x 1280, which real images already
            are): image bicubic, labels nearest. None keeps each image's size.

    Attributes:
        layout: the layout read.

    Raises:
        FileNotFoundError: no layout found under ``root`` for ``split`` (the message
            lists the folders each layout needs), missing list entry or pseudo-label.
        ValueError: bad argument, no images, an image without a label (or the reverse).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from diga.data.io import save_label
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.makedirs(f"{root}/seg/images/val")
        ...     Image.new("RGB", (8, 4)).save(f"{root}/seg/images/val/a59131a5-00000000.jpg")
        ...     save_label(f"{root}/seg/labels/val/a59131a5-00000000_train_id.png",
        ...                torch.tensor([[0, 13, 18, 255] * 2] * 4))
        ...     data = BDD100k(root, "val")
        ...     item = data[0]
        >>> data.layout, item["name"], item["label"][0, :4].tolist()
        ('seg', 'a59131a5-00000000', [0, 13, 18, 255])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        *,
        layout: str | None = None,
        transform: Callable | None = None,
        labels: bool = True,
        pseudo_label_dir: str | os.PathLike | None = None,
        list_file: str | os.PathLike | None = None,
        seed: int | None = 0,
        size: int | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"`split` must be a folder name such as 'val', got {split!r}")
        if layout is not None and layout not in _LAYOUTS:
            raise ValueError(f"`layout` must be one of {tuple(_LAYOUTS)} or None (detect), got {layout!r}")
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"BDD100k: root folder {str(self.root)!r} does not exist")
        self.layout, image_dir, label_dir = self._find(layout, bool(labels))
        samples = flat_samples(image_dir, label_dir, dataset="BDD100k",
                               label_stem_suffix=_LAYOUTS[self.layout][1], list_file=list_file,
                               pseudo_label_dir=pseudo_label_dir)
        super().__init__(samples, transform=with_resize(transform, size), seed=seed,
                         classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE)
        self._table = lookup_table({i: i for i in range(len(CITYSCAPES_CLASSES))})

    def _find(self, layout: str | None, labels: bool) -> tuple[str, Path, Path | None]:
        """The layout, its image folder and its label folder (None without labels)."""
        names = tuple(_LAYOUTS) if layout is None else (layout,)
        # A layout whose label folder is there too wins, even without labels (it names the layout).
        for need_labels in (True, False) if not labels else (True,):
            for name in names:
                for image_sub, label_sub in _LAYOUTS[name][0]:
                    image_dir = self.root / image_sub.format(split=self.split)
                    label_dir = self.root / label_sub.format(split=self.split)
                    if image_dir.is_dir() and (label_dir.is_dir() or not need_labels):
                        return name, image_dir, label_dir if labels else None
        if layout is not None:  # the one asked for: name the first folder that is missing
            image_sub, label_sub = _LAYOUTS[layout][0][0]
            hint = f" (layout={layout!r}: {_LAYOUTS[layout][2]})"
            require_dir(self.root / image_sub.format(split=self.split), dataset="BDD100k",
                        what="the image folder", pattern="*.jpg", hint=hint)
            require_dir(self.root / label_sub.format(split=self.split), dataset="BDD100k",
                        what="the label folder", pattern=f"*{_LAYOUTS[layout][1]}.png",
                        hint=hint + "; pass labels=False for images without labels")
        expected = "; ".join(_describe(name, self.split) for name in _LAYOUTS)
        found = sorted(p.name + "/" for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(
            f"BDD100k: no known layout under {str(self.root)!r} for split {self.split!r}; expected one "
            f"of: {expected}. Found the folders {found}"
            + ("; pass labels=False for images without labels" if labels else "")
        )

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return map_labels(raw, self._table, ignore_index=self.ignore_index)
