"""Any folder of images, with an optional folder of labels matched by file stem."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from diga.data._base import (
    Sample,
    SegmentationDataset,
    attach_pseudo_labels,
    list_files,
    pair_by_key,
    require_dir,
)
from diga.data.classes import lookup_table
from diga.data.io import load_label

__all__ = ["SegmentationFolder"]

PathLike = str | os.PathLike


def _check_suffix(suffix: object, name: str) -> str:
    if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(f"`{name}` must be file suffixes such as '.png', got {suffix!r}")
    return suffix.lower()


def _read_label_map(source: Mapping | PathLike) -> dict[int, int]:
    """A ``{raw id: training id}`` dict from a mapping, a JSON file, or a YAML file (with PyYAML)."""
    if isinstance(source, Mapping):
        raw, origin = source, "`label_map`"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        origin = f"`label_map` file {str(path)!r}"
        if not path.is_file():
            raise FileNotFoundError(f"{origin} not found")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(
                    f"{origin} is YAML, which needs PyYAML (pip install pyyaml); "
                    f"or give a JSON file or a dict"
                ) from None
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ValueError(f"{origin} is not valid YAML: {err}") from err
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{origin} is not valid JSON: {err}") from err
        if not isinstance(raw, Mapping):
            raise ValueError(
                f"{origin} must hold a mapping {{raw id: training id}}, got {type(raw).__name__}"
            )
    else:
        raise ValueError(
            f"`label_map` must be a dict or a path to a JSON/YAML file, got {type(source).__name__}"
        )
    mapping: dict[int, int] = {}
    for key, value in raw.items():
        if isinstance(key, str) and key.strip().isdigit():  # JSON keys are strings
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, int) or key < 0 or isinstance(value, bool) or (
            not isinstance(value, int)
        ):
            raise ValueError(
                f"{origin} must map non-negative integer ids to integer training ids, got {key!r}: {value!r}"
            )
        mapping[key] = value
    if not mapping:
        raise ValueError(f"{origin} is empty")
    return mapping


class SegmentationFolder(SegmentationDataset):
    """Images from any folder tree, optionally paired with labels by file stem.

    The stem of a file is its path relative to its folder without the file
    suffix, and without ``image_stem_suffix`` / ``label_stem_suffix`` (files
    that do not end with a given stem suffix are not listed), so
    ``images/a/x_leftImg8bit.png`` pairs with ``labels/a/x_gtFine_labelIds.png``.
    Unlabelled folders (``labels=None``) are the usual target set.

    Label values are used as they are, unless ``label_map`` sends raw ids to
    training ids: then every value in a label file must be a key of the map
    or ``ignore_index``, and anything else raises naming the file and the
    value (send unwanted ids to ``ignore_index`` in the map). Without a map
    but with ``classes``, values must lie in ``[0, len(classes))`` or equal
    ``ignore_index``.

    Args:
        images: folder of images, searched recursively.
        labels: folder of label maps (optional).
        label_map: ``{raw id: training id}``, or a path to a JSON file
            (``{"7": 0, "8": 1}``) or a YAML file (needs PyYAML).
        classes: class names, indexed by training id.
        palette: one ``(r, g, b)`` per class (for visualisation).
        image_suffixes: image file suffixes to list (case-insensitive).
        label_suffix: label file suffix.
        image_stem_suffix: end of image stems to strip before pairing, e.g. ``"_leftImg8bit"``.
        label_stem_suffix: end of label stems to strip, e.g. ``"_gtFine_labelIds"``.
        label_channel: channel holding the id in multi-channel label files.
        pseudo_label_dir: folder of pseudo-labels ``{name}.png`` in training ids (see
            :class:`~diga.data.Cityscapes`).
        transform: paired transform ``t(image, *labels, generator=g)``.
        seed: augmentation seed (None: torch's global generator).
        ignore_index: label value that is never a class.

    Raises:
        FileNotFoundError: a folder (or the label-map file) does not exist.
        ValueError: a folder with no matching files (says which folder and
            suffixes), images and labels that do not pair up (names both
            folders and the first unmatched stems), a malformed label map.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> from diga.data.io import save_label
        >>> with tempfile.TemporaryDirectory() as d:
        ...     os.makedirs(f"{d}/img/site1")
        ...     Image.new("RGB", (8, 4)).save(f"{d}/img/site1/0001.jpg")
        ...     save_label(f"{d}/lbl/site1/0001.png", torch.tensor([[0, 5] * 4] * 4))
        ...     data = SegmentationFolder(f"{d}/img", f"{d}/lbl", label_map={0: 255, 5: 1},
        ...                               classes=("background", "thing"))
        ...     item = data[0]
        ...     keys = sorted(SegmentationFolder(f"{d}/img")[0])  # unlabelled
        >>> item["name"], item["label"][0, :4].tolist(), keys
        ('site1/0001', [255, 1, 255, 1], ['image', 'name'])
    """

    def __init__(
        self,
        images: PathLike,
        labels: PathLike | None = None,
        *,
        label_map: Mapping[int, int] | PathLike | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        image_suffixes: Sequence[str] = (".png", ".jpg", ".jpeg"),
        label_suffix: str = ".png",
        image_stem_suffix: str = "",
        label_stem_suffix: str = "",
        label_channel: int | None = None,
        pseudo_label_dir: PathLike | None = None,
        transform: Callable | None = None,
        seed: int | None = 0,
        ignore_index: int = 255,
    ) -> None:
        if isinstance(image_suffixes, str):
            image_suffixes = (image_suffixes,)
        suffixes = tuple(_check_suffix(s, "image_suffixes") for s in image_suffixes)
        if not suffixes:
            raise ValueError("`image_suffixes` must name at least one suffix, got ()")
        label_suffix = _check_suffix(label_suffix, "label_suffix")
        stem_suffixes = {"image_stem_suffix": image_stem_suffix, "label_stem_suffix": label_stem_suffix}
        for name, value in stem_suffixes.items():
            if not isinstance(value, str):
                raise ValueError(f"`{name}` must be a string, got {value!r}")
        self.images_dir = require_dir(Path(images), dataset="SegmentationFolder", what="the image folder",
                                      pattern=f"**/*{image_stem_suffix}{{{','.join(suffixes)}}}")
        found = list_files(self.images_dir, suffixes, stem_suffix=image_stem_suffix)
        if not found:
            raise ValueError(
                f"SegmentationFolder: no images in {str(self.images_dir)!r} (searched recursively for "
                f"*{image_stem_suffix} with suffixes {suffixes})"
            )
        self.labels_dir = None
        if labels is not None:
            self.labels_dir = require_dir(Path(labels), dataset="SegmentationFolder", what="the label folder",
                                          pattern=f"**/*{label_stem_suffix}{label_suffix}")
            label_files = list_files(self.labels_dir, (label_suffix,), stem_suffix=label_stem_suffix)
            if not label_files:
                raise ValueError(
                    f"SegmentationFolder: no labels in {str(self.labels_dir)!r} (searched recursively for "
                    f"*{label_stem_suffix}{label_suffix})"
                )
            pairs = pair_by_key(found, label_files, image_dir=self.images_dir, label_dir=self.labels_dir)
            samples = [Sample(img.name, img.path, lbl.path) for img, lbl in pairs]
        else:
            samples = [Sample(img.name, img.path) for img in found]
        if pseudo_label_dir is not None:
            samples = attach_pseudo_labels(samples, pseudo_label_dir)
        if label_channel is not None and (
            isinstance(label_channel, bool) or not isinstance(label_channel, int) or label_channel < 0
        ):
            raise ValueError(f"`label_channel` must be a non-negative integer or None, got {label_channel!r}")
        super().__init__(samples, transform=transform, seed=seed, classes=classes, palette=palette,
                         ignore_index=ignore_index)
        self.label_channel = label_channel
        self.label_map = None if label_map is None else _read_label_map(label_map)
        if self.label_map is not None:
            self._check_map_values(self.label_map)
            size = max(max(self.label_map), ignore_index) + 1
            self._table = lookup_table(self.label_map, size=size, ignore_index=ignore_index)
            self._known = torch.zeros(size, dtype=torch.bool)
            self._known[list(self.label_map)] = True
            self._known[ignore_index] = True

    def _check_map_values(self, mapping: dict[int, int]) -> None:
        for key, value in mapping.items():
            if value == self.ignore_index:
                continue
            if value < 0 or (self.num_classes is not None and value >= self.num_classes):
                expected = f"[0, {self.num_classes})" if self.num_classes is not None else "non-negative"
                raise ValueError(
                    f"`label_map` must send ids to training ids in {expected} or "
                    f"ignore_index={self.ignore_index}, got {key}: {value}"
                )

    def _read_label(self, path: Path) -> Tensor:
        return load_label(path, channel=self.label_channel)

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        if self.label_map is None:
            if self.num_classes is not None:
                bad = ((raw < 0) | (raw >= self.num_classes)) & (raw != self.ignore_index)
                if bool(bad.any()):
                    raise ValueError(
                        f"label file {str(path)!r} holds value {int(raw[bad][0])}, outside "
                        f"[0, {self.num_classes}) and not ignore_index={self.ignore_index} "
                        f"(raw ids need a `label_map`)"
                    )
            return raw
        size = self._table.numel()
        clamped = raw.clamp(0, size - 1)
        known = self._known[clamped] & (raw >= 0) & (raw < size)
        if not bool(known.all()):
            keys = sorted(self.label_map)
            shown = ", ".join(map(str, keys[:20])) + (", ..." if len(keys) > 20 else "")
            raise ValueError(
                f"label file {str(path)!r} holds value {int(raw[~known][0])}, which is neither a key of "
                f"`label_map` ({shown}) nor ignore_index={self.ignore_index}"
            )
        return self._table[clamped]
