"""Tiny replicas of the Cityscapes, GTA5, SYNTHIA, BDD100k and Mapillary folder layouts, for tests.

Each maker writes a handful of small PNGs with the real naming patterns,
real raw label ids and the real quirks (Cityscapes' extra ``gtFine`` files,
a GTA5 label whose size differs from its image, SYNTHIA's 16-bit 3-channel
labels), and returns a :class:`Replica` with the raw label of every item.

The image encodes its label, so alignment can be checked after any
geometric transform: the red channel is ``RED_STEP * raw_id / 255``, the
green channel the row and the blue channel the column (both scaled to
``[0, 1]``). Labels are piecewise constant on ``block x block`` squares.
BDD100k and Mapillary images are real JPEGs (a few grey levels of error), so
their raw id is written in base 9 over red and green in steps of 28
(:func:`jpeg_image_for`, read back by :func:`jpeg_ids`), blue the column.

Usage (also from the trainer tests)::

    from tests.data.replicas import make_cityscapes, make_gta5, make_synthia
    city = make_cityscapes(tmp_path / "cityscapes")
    dataset = Cityscapes(city.root, "train")
    bdd = make_bdd100k(tmp_path / "bdd100k", layout="10k")
    vistas = make_mapillary(tmp_path / "mapillary")
"""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BDD100K_IDS",
    "CITYSCAPES_IDS",
    "one_thread",
    "GTA5_IDS",
    "MAPILLARY_IDS",
    "RED_STEP",
    "SYNTHIA_IDS",
    "Replica",
    "image_for",
    "jpeg_ids",
    "jpeg_image_for",
    "make_bdd100k",
    "make_cityscapes",
    "make_gta5",
    "make_mapillary",
    "make_pseudo_labels",
    "make_synthia",
    "random_blocks",
    "write_list",
    "write_png16",
]

#: Raw ids the replicas draw from: mapped classes and ignored ones (unlabeled, ego vehicle, static, ...).
CITYSCAPES_IDS = (0, 1, 4, 6, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
GTA5_IDS = CITYSCAPES_IDS + (34,)  # GTA5 labels also hold ids past Cityscapes' 33
#: SYNTHIA-RAND-CITYSCAPES class ids: 0 void, 13 / 14 / 16 / 18 / 20 / 22 unused by the 16 classes.
SYNTHIA_IDS = tuple(range(23))
#: BDD100k ``*_train_id.png`` values: the 19 train ids, 255, and a stray id past 18 (read as 255).
BDD100K_IDS = (*range(19), 255, 19)
#: Mapillary Vistas v1.2 ids: all 66 (65 = "Unlabeled").
MAPILLARY_IDS = tuple(range(66))
#: Red channel step per raw id (ids up to 36 stay below 256).
RED_STEP = 7
#: :func:`jpeg_image_for`: ids past 80 (255) are written as 80; channel value = 14 + 28 * digit.
JPEG_MAX_ID, _JPEG_STEP = 80, 28


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one thread: per-sample ops on small images are far slower with intra-op
    threads fighting over a busy machine (as DataLoader workers, which also use one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class Replica:
    """A written replica: its root, item names in sorted order, and each item's raw label."""

    root: Path
    names: list[str]
    raw_labels: dict[str, torch.Tensor] = field(default_factory=dict)


def write_png16(path: str | Path, array: np.ndarray | torch.Tensor) -> None:
    """Write a 16-bit PNG (gray ``(H, W)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``) with zlib + struct.

    Neither PIL (no 16-bit RGB mode) nor ``torchvision.io.encode_png`` (uint8
    only) writes 16-bit colour PNGs, which is what SYNTHIA's labels are.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.min() < 0 or array.max() > 65535:
        raise ValueError("16-bit PNG values must be in [0, 65535]")
    h, w, c = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = array.astype(">u2").reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    data += chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


def random_blocks(
    size: tuple[int, int], ids: Sequence[int], *, block: int, generator: torch.Generator
) -> torch.Tensor:
    """An ``(H, W)`` int64 map, constant on ``block x block`` squares, values drawn from ``ids``."""
    h, w = size
    grid = (-(-h // block), -(-w // block))
    choice = torch.randint(len(ids), grid, generator=generator)
    blocks = torch.tensor(list(ids), dtype=torch.int64)[choice]
    return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w].contiguous()


def image_for(raw: torch.Tensor) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 image encoding a raw label: red = id * RED_STEP, green = row, blue = column."""
    h, w = raw.shape
    red = (raw * RED_STEP).clamp(max=255)
    green = torch.linspace(0, 255, h).round().long()[:, None].expand(h, w)
    blue = torch.linspace(0, 255, w).round().long()[None, :].expand(h, w)
    return torch.stack([red, green, blue], -1).to(torch.uint8).numpy()


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_list(path: str | Path, lines: Sequence[str]) -> Path:
    """A list file, one entry a line (as the paper's ``cityscapes_list/train.txt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def make_cityscapes(
    root: str | Path,
    *,
    split: str = "train",
    cities: Sequence[str] = ("aachen", "bochum"),
    per_city: int = 2,
    size: tuple[int, int] = (32, 64),
    block: int = 8,
    seed: int = 0,
) -> Replica:
    """``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and ``gtFine`` with labelIds, color,
    instanceIds (16-bit) and polygons files, as the official download has them.

    Item names are ``{city}/{city}_{seq:06d}_000019_leftImg8bit``.
    """
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    replica = Replica(root, [])
    for city in sorted(cities):
        for seq in range(per_city):
            base = f"{city}_{seq:06d}_000019"
            raw = random_blocks(size, CITYSCAPES_IDS, block=block, generator=g)
            _save(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", image_for(raw))
            gt = root / "gtFine" / split / city
            _save(gt / f"{base}_gtFine_labelIds.png", raw.to(torch.uint8).numpy())
            _save(gt / f"{base}_gtFine_color.png", np.zeros((*size, 4), np.uint8))
            write_png16(gt / f"{base}_gtFine_instanceIds.png", (raw * 1000 + 1).clamp(max=65535).numpy())
            (gt / f"{base}_gtFine_polygons.json").write_text(json.dumps({"objects": []}))
            name = f"{city}/{base}_leftImg8bit"
            replica.names.append(name)
            replica.raw_labels[name] = raw
    return replica


def make_gta5(
    root: str | Path,
    *,
    count: int = 4,
    size: tuple[int, int] = (32, 64),
    mismatched: Sequence[int] = (2,),
    block: int = 8,
    seed: int = 0,
) -> Replica:
    """``images/{i:05d}.png`` + ``labels/{i:05d}.png`` (Cityscapes ids), numbered from 1.

    The items numbered in ``mismatched`` get a label two rows taller than the
    image (GTA5 ships a few such pairs); their ``raw_labels`` entry is the
    label as written (taller).
    """
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    replica = Replica(root, [])
    for i in range(1, count + 1):
        name = f"{i:05d}"
        raw = random_blocks(size, GTA5_IDS, block=block, generator=g)
        _save(root / "images" / f"{name}.png", image_for(raw))
        if i in mismatched:
            raw = torch.cat([raw, raw[-2:]], 0)
        _save(root / "labels" / f"{name}.png", raw.to(torch.uint8).numpy())
        replica.names.append(name)
        replica.raw_labels[name] = raw
    return replica


def make_synthia(
    root: str | Path,
    *,
    count: int = 3,
    size: tuple[int, int] = (32, 64),
    block: int = 8,
    seed: int = 0,
) -> Replica:
    """``RGB/{i:07d}.png`` + ``GT/LABELS/{i:07d}.png``: 16-bit, 3 channels (class id, instance id
    in the thousands, zero), as SYNTHIA-RAND-CITYSCAPES ships them. Numbered from 0."""
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    replica = Replica(root, [])
    for i in range(count):
        name = f"{i:07d}"
        raw = random_blocks(size, SYNTHIA_IDS, block=block, generator=g)
        _save(root / "RGB" / f"{name}.png", image_for(raw))
        instance = 1000 + torch.randint(0, 60000, size, generator=g)
        label = torch.stack([raw, instance, torch.zeros_like(raw)], -1)
        write_png16(root / "GT" / "LABELS" / f"{name}.png", label.numpy())
        replica.names.append(name)
        replica.raw_labels[name] = raw
    return replica


def jpeg_image_for(raw: torch.Tensor) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 image encoding a raw label so that JPEG keeps it: the id (ids past
    ``JPEG_MAX_ID`` as ``JPEG_MAX_ID``) in base 9, red the units, green the nines, in steps of 28;
    blue the column."""
    h, w = raw.shape
    code = raw.clamp(max=JPEG_MAX_ID)
    red, green = 14 + _JPEG_STEP * (code % 9), 14 + _JPEG_STEP * (code // 9)
    blue = torch.linspace(0, 255, w).round().long()[None, :].expand(h, w)
    return torch.stack([red, green, blue], -1).to(torch.uint8).numpy()


def jpeg_ids(image: torch.Tensor) -> torch.Tensor:
    """Read back :func:`jpeg_image_for`: ``(3, H, W)`` floats in ``[0, 1]`` -> ``(H, W)`` int64 ids."""
    digits = ((image[:2] * 255 - 14) / _JPEG_STEP).round().long().clamp(0, 8)
    return digits[0] + 9 * digits[1]


def _save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, "JPEG", quality=100, subsampling=0)


def _keys(count: int, generator: torch.Generator, length: int, alphabet: str) -> list[str]:
    codes = torch.randint(len(alphabet), (count, length), generator=generator)
    return ["".join(alphabet[int(c)] for c in row) for row in codes]


#: ``make_bdd100k`` layouts: (image folder, label folder, label stem suffix, colour rendering folder).
_BDD_LAYOUTS = {
    "seg": ("seg/images/{split}", "seg/labels/{split}", "_train_id", "seg/color_labels/{split}"),
    "10k": ("images/10k/{split}", "labels/sem_seg/masks/{split}", "", "labels/sem_seg/colormaps/{split}"),
    "scripts": ("images/{split}", "gtFine/{split}", "_train_id", None),
}


def make_bdd100k(
    root: str | Path,
    *,
    layout: str = "seg",
    split: str = "val",
    count: int = 3,
    size: tuple[int, int] = (24, 40),
    block: int = 8,
    seed: int = 0,
) -> Replica:
    """BDD100k in one of its layouts: ``"seg"`` (``seg/images/{split}/*.jpg``,
    ``seg/labels/{split}/*_train_id.png``, ``seg/color_labels``), ``"10k"`` (``images/10k/{split}``,
    ``labels/sem_seg/masks/{split}/*.png``, ``labels/sem_seg/colormaps``) or ``"scripts"``
    (``images/{split}``, ``gtFine/{split}/*_train_id.png``). Images are JPEGs
    (:func:`jpeg_image_for`); labels 8-bit train ids with 255 and a stray 19. Names are
    ``{8 hex}-{8 hex}`` stems, as BDD100k's."""
    root = Path(root)
    image_sub, label_sub, suffix, color_sub = _BDD_LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed)
    replica = Replica(root, [])
    halves = _keys(2 * count, g, 8, "0123456789abcdef")
    names = sorted(f"{a}-{b}" for a, b in zip(halves[::2], halves[1::2], strict=True))
    for name in names:
        raw = random_blocks(size, BDD100K_IDS, block=block, generator=g)
        _save_jpeg(root / image_sub.format(split=split) / f"{name}.jpg", jpeg_image_for(raw))
        _save(root / label_sub.format(split=split) / f"{name}{suffix}.png", raw.to(torch.uint8).numpy())
        if color_sub is not None:  # colour renderings beside the labels: never read as labels
            _save(root / color_sub.format(split=split) / f"{name}_train_color.png", np.zeros((*size, 3), np.uint8))
        replica.names.append(name)
        replica.raw_labels[name] = raw
    return replica


def make_mapillary(
    root: str | Path,
    *,
    split: str = "validation",
    count: int = 3,
    sizes: Sequence[tuple[int, int]] = ((24, 32), (32, 24), (30, 40)),
    v2: bool = False,
    block: int = 8,
    seed: int = 0,
) -> Replica:
    """Mapillary Vistas: ``{split}/images/{key}.jpg`` of several sizes (``sizes`` cycled), v1.2
    labels as palette PNGs of ids 0-65 in ``{split}/labels`` (``v2=False``, the v1.2 download, with
    ``config.json``) or ``{split}/v1.2/labels`` beside 124-class ``{split}/v2.0/labels`` (``v2=True``,
    the v2.0 download, with ``config_v1.2.json``), and 16-bit ``instances`` (never read as labels).
    Keys are 22 characters, as Mapillary's."""
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    replica = Replica(root, [])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    palette = torch.randint(0, 256, (256 * 3,), generator=g).tolist()
    labels = root / split / ("v1.2/labels" if v2 else "labels")
    instances = root / split / ("v1.2/instances" if v2 else "instances")
    for i, name in enumerate(sorted(_keys(count, g, 22, alphabet))):
        size = sizes[i % len(sizes)]
        raw = random_blocks(size, MAPILLARY_IDS, block=block, generator=g)
        _save_jpeg(root / split / "images" / f"{name}.jpg", jpeg_image_for(raw))
        labels.mkdir(parents=True, exist_ok=True)
        label = Image.fromarray(raw.to(torch.uint8).numpy(), mode="P")
        label.putpalette(palette)
        label.save(labels / f"{name}.png")
        write_png16(instances / f"{name}.png", (raw * 256 + 1).numpy())
        if v2:
            other = random_blocks(size, tuple(range(124)), block=block, generator=g)
            _save(root / split / "v2.0" / "labels" / f"{name}.png", other.to(torch.uint8).numpy())
        replica.names.append(name)
        replica.raw_labels[name] = raw
    (root / ("config_v1.2.json" if v2 else "config.json")).write_text(json.dumps({"labels": []}))
    return replica


def make_pseudo_labels(
    directory: str | Path,
    names: Sequence[str],
    *,
    size: tuple[int, int] = (32, 64),
    num_classes: int = 19,
    flat: bool = False,
    seed: int = 1,
) -> dict[str, torch.Tensor]:
    """Pseudo-label PNGs in training ids (with some 255), one per name: ``{dir}/{name}.png``,
    or ``{dir}/{basename}.png`` with ``flat`` (the paper's scripts)."""
    directory = Path(directory)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        label = random_blocks(size, (*range(num_classes), 255), block=8, generator=g)
        target = directory / (Path(name).name if flat else name)
        _save(target.with_name(target.name + ".png"), label.to(torch.uint8).numpy())
        out[name] = label
    return out
