"""What the datasets share: file listing, list files, pairing by stem, and the per-item pipeline."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from diga.data.io import load_image, load_label
from diga.data.transforms import item_generator, resize_label

__all__ = [
    "FileEntry",
    "Sample",
    "SegmentationDataset",
    "attach_pseudo_labels",
    "list_files",
    "pair_by_key",
    "pair_flat_folders",
    "read_list_file",
    "require_dir",
    "select_by_list",
]

_SHOW = 5  # how many unmatched / missing names an error message lists

PathLike = str | os.PathLike


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOW])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOW else "")


@dataclass(frozen=True)
class FileEntry:
    """One file found by :func:`list_files`.

    ``name`` is the path relative to the listed folder, in POSIX form, without
    the file suffix; ``key`` is ``name`` without the stem suffix (e.g.
    ``"_leftImg8bit"``): what images and labels are paired by.
    """

    key: str
    name: str
    path: Path

    @property
    def relpath(self) -> str:
        return self.name + self.path.suffix


@dataclass(frozen=True)
class Sample:
    """Where one item's files are. ``name`` identifies the item (relative path without suffix)."""

    name: str
    image: Path
    label: Path | None = None
    pseudo_label: Path | None = None


def require_dir(path: Path, *, dataset: str, what: str, pattern: str, hint: str = "") -> Path:
    """``path`` must be an existing folder; the error says what it should have held."""
    if not path.is_dir():
        kind = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"{dataset}: expected {what} {str(path)!r} holding {pattern}, but it {kind}{hint}"
        )
    return path


def list_files(
    folder: Path,
    suffixes: Iterable[str],
    *,
    stem_suffix: str = "",
    recursive: bool = True,
) -> list[FileEntry]:
    """Files under ``folder`` whose suffix is one of ``suffixes`` (case-insensitive), sorted by path.

    Hidden files and folders (name starting with ``.``) are skipped.
    With a ``stem_suffix``, only files whose name (before the file suffix) ends
    with it are listed, and the pairing key drops it. Two files with the same
    key (``a.png`` and ``a.jpg``) raise ``ValueError``.
    """
    wanted = {s.lower() for s in suffixes}
    found: list[FileEntry] = []
    paths = folder.rglob("*") if recursive else folder.iterdir()
    for path in paths:
        relative = path.relative_to(folder)
        if path.suffix.lower() not in wanted or any(p.startswith(".") for p in relative.parts):
            continue  # hidden files and folders (.ipynb_checkpoints, temporary files) are not data
        if not path.is_file():
            continue
        name = relative.with_suffix("").as_posix()
        if stem_suffix:
            if not name.endswith(stem_suffix):
                continue
            key = name[: -len(stem_suffix)]
        else:
            key = name
        found.append(FileEntry(key=key, name=name, path=path))
    found.sort(key=lambda e: e.path.relative_to(folder).as_posix())
    seen: dict[str, FileEntry] = {}
    for entry in found:
        if entry.key in seen:
            raise ValueError(
                f"two files in {str(folder)!r} share the stem {entry.key!r}: "
                f"{seen[entry.key].relpath!r} and {entry.relpath!r}"
            )
        seen[entry.key] = entry
    return found


def read_list_file(path: PathLike) -> list[str]:
    """Non-empty lines of a list file (``#`` starts a comment line), stripped, ``./`` prefix dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {str(path)!r}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read list file {str(path)!r}: {err}") from err
    entries = []
    for line in text.splitlines():
        line = line.strip().replace("\\", "/")
        if not line or line.startswith("#"):
            continue
        entries.append(line[2:] if line.startswith("./") else line)
    if not entries:
        raise ValueError(f"list file {str(path)!r} names no files (it is empty)")
    return entries


def select_by_list(entries: Sequence[FileEntry], list_file: PathLike, folder: Path) -> list[FileEntry]:
    """The entries a list file names, in its order (lines are paths relative to ``folder``,
    with or without the file suffix). Names the list file and the first missing lines."""
    lines = read_list_file(list_file)
    lookup: dict[str, FileEntry] = {}
    for entry in entries:
        lookup.setdefault(entry.name, entry)
        lookup[entry.relpath] = entry
    missing = [line for line in lines if line not in lookup]
    if missing:
        raise FileNotFoundError(
            f"list file {str(list_file)!r} names {len(missing)} file(s) not found in {str(folder)!r}: "
            f"{_few(missing)}"
        )
    return [lookup[line] for line in lines]


def pair_by_key(
    images: Sequence[FileEntry],
    labels: Sequence[FileEntry],
    *,
    image_dir: Path,
    label_dir: Path,
    both_ways: bool = True,
) -> list[tuple[FileEntry, FileEntry]]:
    """Match each image with the label of the same key, in the images' order.

    An image without a label raises ``ValueError`` naming both folders and the
    first unmatched stems; with ``both_ways``, so does a label without an image.
    """
    by_key = {entry.key: entry for entry in labels}
    no_label = [entry.key for entry in images if entry.key not in by_key]
    if no_label:
        raise ValueError(
            f"{len(no_label)} image(s) in {str(image_dir)!r} have no label in {str(label_dir)!r}; "
            f"unmatched stems: {_few(no_label)}"
        )
    if both_ways:
        image_keys = {entry.key for entry in images}
        no_image = [entry.key for entry in labels if entry.key not in image_keys]
        if no_image:
            raise ValueError(
                f"{len(no_image)} label(s) in {str(label_dir)!r} have no image in {str(image_dir)!r}; "
                f"unmatched stems: {_few(no_image)}"
            )
    return [(entry, by_key[entry.key]) for entry in images]


def pair_flat_folders(
    root: PathLike,
    *,
    dataset: str,
    image_sub: str,
    label_sub: str,
    label_pattern: str = "*.png",
    list_file: PathLike | None = None,
) -> list[tuple[FileEntry, FileEntry]]:
    """Pairs of ``<root>/<image_sub>/*.png`` and ``<root>/<label_sub>/*.png`` matched by file name.

    The layout GTA5 and SYNTHIA share. Errors name the dataset and the folder it expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: root folder {str(root)!r} does not exist")
    image_dir = require_dir(root / image_sub, dataset=dataset, what="the image folder", pattern="*.png")
    label_dir = require_dir(root / label_sub, dataset=dataset, what="the label folder", pattern=label_pattern)
    images = list_files(image_dir, (".png",), recursive=False)
    if not images:
        raise ValueError(f"{dataset}: no images matching *.png in {str(image_dir)!r}")
    if list_file is not None:
        images = select_by_list(images, list_file, image_dir)
    labels = list_files(label_dir, (".png",), recursive=False)
    return pair_by_key(images, labels, image_dir=image_dir, label_dir=label_dir, both_ways=list_file is None)


def attach_pseudo_labels(samples: Sequence[Sample], pseudo_label_dir: PathLike) -> list[Sample]:
    """Give each sample its pseudo-label file, checked now so that no epoch stops halfway.

    The file is ``{pseudo_label_dir}/{name}.png`` (the image's relative path,
    folders kept), or else ``{pseudo_label_dir}/{basename}.png`` (one flat
    folder, as the paper's scripts write them).
    """
    root = Path(pseudo_label_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"`pseudo_label_dir` {str(root)!r} does not exist (expected {{name}}.png per image)"
        )
    out, missing = [], []
    for sample in samples:
        nested = root / f"{sample.name}.png"
        flat = root / f"{Path(sample.name).name}.png"
        path = nested if nested.is_file() else flat if flat.is_file() else None
        if path is None:
            missing.append(str(nested.relative_to(root)))
        out.append(Sample(sample.name, sample.image, sample.label, path))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} pseudo-label file(s) missing in {str(root)!r}: {_few(missing)}"
        )
    return out


class SegmentationDataset(Dataset):
    """An indexable list of :class:`Sample` loaded into dicts, with a seeded paired transform.

    Subclasses build the samples and override :meth:`_read_label` (the raw
    ids, e.g. one channel of a 16-bit PNG) and :meth:`_map_label` (raw ids
    -> training ids).

    Each item is a dict: ``"image"`` ``(3, H, W)`` float32 in ``[0, 1]``,
    ``"label"`` ``(H, W)`` int64 training ids (if labelled), ``"pseudo_label"``
    ``(H, W)`` int64 (if pseudo-labels were given; values outside
    ``[0, num_classes)`` become ``ignore_index``), ``"name"``. The transform
    is called as ``transform(image, *labels, generator=g)`` with ``g`` from
    :func:`~diga.data.transforms.item_generator` ``(seed, index, epoch)``;
    ``seed=None`` uses torch's global generator instead.

    Virtual indices: an index ``v >= len(self)`` reads item ``v % len(self)``
    at epoch ``self.epoch + v // len(self)``, so a sampler that counts
    ``epoch * len + i`` (``diga.engine.sampling.StepSampler``) gets fresh, reproducible
    augmentation every epoch without calling :meth:`set_epoch`. Iterating the
    dataset directly stops after ``len(self)`` items.
    """

    #: Accepts indices past ``len(self)`` (see above); read by ``diga.engine``'s loaders.
    supports_virtual_index = True

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        transform: Callable | None = None,
        seed: int | None = 0,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        label_size_mismatch: str = "error",
    ) -> None:
        if transform is not None and not callable(transform):
            raise ValueError(f"`transform` must be callable or None, got {type(transform).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"`ignore_index` must be an integer, got {ignore_index!r}")
        if classes is not None:
            classes = tuple(classes)
            if not classes or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"`classes` must be a non-empty sequence of names, got {classes!r}")
        if palette is not None:
            palette = tuple(tuple(int(v) for v in rgb) for rgb in palette)
            if classes is not None and len(palette) != len(classes):
                raise ValueError(
                    f"`palette` must have one colour per class ({len(classes)}), got {len(palette)}"
                )
        self.samples: tuple[Sample, ...] = tuple(samples)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.classes: tuple[str, ...] | None = classes
        self.palette = palette
        self.ignore_index = ignore_index
        self._label_size_mismatch = label_size_mismatch
        self._use_labels = True

    # ------------------------------------------------------------------ public

    @property
    def num_classes(self) -> int | None:
        """Number of training classes (None when the class list is unknown)."""
        return None if self.classes is None else len(self.classes)

    @property
    def names(self) -> list[str]:
        """Every item's name, in index order."""
        return [s.name for s in self.samples]

    @property
    def has_labels(self) -> bool:
        """Whether items carry a ground-truth ``"label"``."""
        return self._use_labels and any(s.label is not None for s in self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change every item's augmentation for a new epoch (call before iterating the loader)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`epoch` must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def unlabelled(self) -> SegmentationDataset:
        """A copy whose items have no ``"label"`` (the target during adaptation); pseudo-labels stay."""
        clone = copy.copy(self)
        clone._use_labels = False
        return clone

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, Tensor):
            index = int(index)
        if index < -len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        rounds, index = divmod(index, len(self)) if index >= 0 else (0, index % len(self))
        sample = self.samples[index]
        image = load_image(sample.image)
        size = tuple(image.shape[-2:])
        keys, tensors = ["image"], [image]
        if self._use_labels and sample.label is not None:
            label = self._map_label(self._read_label(sample.label), sample.label)
            label = self._fit(label, size, sample.label, sample.image, self._label_size_mismatch)
            keys.append("label")
            tensors.append(label)
        if sample.pseudo_label is not None:
            pseudo = load_label(sample.pseudo_label)
            if self.num_classes is not None:
                outside = (pseudo < 0) | (pseudo >= self.num_classes)
                pseudo = pseudo.masked_fill(outside, self.ignore_index)
            keys.append("pseudo_label")
            tensors.append(self._fit(pseudo, size, sample.pseudo_label, sample.image, "resize"))
        if self.transform is not None:
            epoch = self.epoch + rounds
            generator = None if self.seed is None else item_generator(self.seed, index, epoch)
            tensors = self.transform(*tensors, generator=generator)
            if len(tensors) != len(keys):
                raise ValueError(
                    f"`transform` must return (image, *labels) = {len(keys)} tensors, got {len(tensors)}"
                )
        item = dict(zip(keys, tensors, strict=True))
        item["name"] = sample.name
        return item

    def __repr__(self) -> str:
        extra = "" if self.transform is None else f", transform={self.transform!r}"
        return f"{type(self).__name__}({len(self)} items, labels={self.has_labels}{extra})"

    # ------------------------------------------------------------------ hooks

    def _read_label(self, path: Path) -> Tensor:
        return load_label(path)

    def _map_label(self, raw: Tensor, path: Path) -> Tensor:
        return raw

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _fit(label: Tensor, size: tuple[int, int], path: Path, image: Path, policy: str) -> Tensor:
        if tuple(label.shape) == size:
            return label
        if policy == "resize":
            return resize_label(label, size)
        raise ValueError(
            f"label file {str(path)!r} is {label.shape[1]}x{label.shape[0]} (WxH) but image file "
            f"{str(image)!r} is {size[1]}x{size[0]}"
        )
