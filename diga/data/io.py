"""Reading images and label maps from disk, and writing label maps (atomically).

8-bit files go through PIL; 16-bit PNGs (SYNTHIA's ``GT/LABELS``) through
``torchvision.io.decode_png``, because PIL silently reduces a 16-bit RGB PNG
to 8 bits. Every reader names the file in its errors: a missing file raises
:class:`FileNotFoundError`, an unreadable or corrupt one :class:`ValueError`.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diga._io import atomic_write_bytes

__all__ = ["IMAGE_SUFFIXES", "load_image", "load_label", "save_label"]

#: File suffixes :func:`load_image` reads (lower case; matching is case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 16-bit PNGs: torchvision's decoder when available (one C pass), else a PIL-only path.
_USE_TORCHVISION = True

PathLike = str | os.PathLike


def _existing_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ValueError(f"{what} {str(path)!r} is not a regular file")
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    return path


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk (33 bytes read), or None when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def _decode_png16_torchvision(path: Path) -> Tensor:
    from torchvision.io import ImageReadMode, decode_png, read_file

    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)


def _decode_png16_pil(path: Path) -> Tensor:
    """PIL-only 16-bit PNG decoding (used when torchvision has no PNG decoder).

    PIL keeps 16-bit gray (``I;16``) but reduces 16-bit RGB(A) to 8 bits by
    keeping each sample's high byte. Decoding twice, once reading the samples
    as big-endian (high bytes) and once as little-endian (low bytes),
    recovers all 16 bits.
    """
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I"):
            img.load()
            return torch.from_numpy(np.asarray(img).astype(np.int32))[None]
        if img.mode not in ("RGB", "RGBA"):
            raise ValueError(f"16-bit PNG in mode {img.mode!r} needs torchvision.io to be read")
        tile = list(img.tile)
    halves = []
    for order in ("B", "L"):
        with Image.open(path) as img:
            img.tile = [(t[0], t[1], t[2], f"{img.mode};16{order}") for t in tile]
            img.load()
            halves.append(np.asarray(img).astype(np.int32))
    value = halves[0] * 256 + halves[1]
    return torch.from_numpy(value).permute(2, 0, 1)


def _decode_png16(path: Path, what: str) -> Tensor:
    """A 16-bit PNG as a ``(C, H, W)`` integer tensor, every channel kept."""
    try:
        if _USE_TORCHVISION:
            try:
                return _decode_png16_torchvision(path)
            except ImportError:  # a torchvision without image codecs
                pass
        return _decode_png16_pil(path)
    except (RuntimeError, ValueError, OSError, SyntaxError) as err:
        raise ValueError(
            f"cannot read {what} {str(path)!r}: corrupt or unsupported 16-bit PNG ({err})"
        ) from err


def _read_pil(path: Path, what: str, mode: str | None = None) -> np.ndarray:
    """Decode the whole file with PIL (optionally converting to ``mode``) into a numpy array."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode) if mode is not None else img
            img.load()
            return np.asarray(img).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read {what} {str(path)!r}: corrupt or not an image ({err})") from err


def load_image(path: PathLike) -> Tensor:
    """Read an image file as RGB floats in ``[0, 1]``.

    Grayscale images are repeated over three channels; an alpha channel is
    dropped (not composited); palette images are expanded. 16-bit PNGs keep
    their precision (divided by 65535).

    Args:
        path: an image file (any format PIL reads; see :data:`IMAGE_SUFFIXES`).

    Returns:
        ``(3, H, W)`` float32 tensor in ``[0, 1]``.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is corrupt or not an image (the message names it).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("L", (4, 2), color=255).save(os.path.join(d, "gray.png"))
        ...     image = load_image(os.path.join(d, "gray.png"))
        >>> image.shape, image.dtype, float(image.min())
        (torch.Size([3, 2, 4]), torch.float32, 1.0)
    """
    path = _existing_file(path, "image file")
    if _png_bit_depth(path) == 16:
        raw = _decode_png16(path, "image file").to(torch.float32) / 65535.0
        channels = raw.shape[0]
        if channels in (1, 2):  # gray, gray + alpha
            raw = raw[:1].expand(3, -1, -1)
        return raw[:3].contiguous()
    array = _read_pil(path, "image file", "RGB")
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()


def load_label(path: PathLike, *, channel: int | None = None) -> Tensor:
    """Read a label map: one integer id per pixel.

    Single-channel files (8-bit ``L``, palette ``P`` read as indices, 16-bit
    gray) are read as they are. A multi-channel file (SYNTHIA's 16-bit RGB
    ``GT/LABELS``, whose class id is in the first channel) needs ``channel``.

    Args:
        path: a label file (PNG, or any format PIL reads).
        channel: which channel holds the id, for multi-channel files. Ignored
            for single-channel files.

    Returns:
        ``(H, W)`` int64 tensor of raw ids (no mapping applied).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is corrupt, or it has several channels and
            ``channel`` is None or out of range.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_label(os.path.join(d, "a.png"), torch.tensor([[7, 26], [0, 255]]))
        ...     load_label(os.path.join(d, "a.png")).tolist()
        [[7, 26], [0, 255]]
    """
    path = _existing_file(path, "label file")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise ValueError(f"`channel` must be a non-negative integer or None, got {channel!r}")
    if _png_bit_depth(path) == 16:
        raw = _decode_png16(path, "label file")  # (C, H, W) uint16
    else:
        array = _read_pil(path, "label file")
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        raw = torch.from_numpy(array.astype(np.int64, copy=False))
        raw = raw[None] if raw.ndim == 2 else raw.permute(2, 0, 1)
    if raw.shape[0] > 1:
        if channel is None:
            raise ValueError(
                f"label file {str(path)!r} has {raw.shape[0]} channels; pass `channel` "
                f"(the index of the channel holding the class id), got channel=None"
            )
        if channel >= raw.shape[0]:
            raise ValueError(
                f"`channel` must be in [0, {raw.shape[0]}) for label file {str(path)!r}, got {channel}"
            )
        raw = raw[channel]
    else:
        raw = raw[0]
    return raw.to(torch.int64).contiguous()


def _check_palette(palette: Sequence[Sequence[int]]) -> list[int]:
    entries = list(palette)
    if not 1 <= len(entries) <= 256:
        raise ValueError(f"`palette` must have 1 to 256 (r, g, b) entries, got {len(entries)}")
    flat: list[int] = []
    for i, entry in enumerate(entries):
        rgb = tuple(entry)
        if len(rgb) != 3 or not all(isinstance(c, int | np.integer) and 0 <= c <= 255 for c in rgb):
            raise ValueError(f"`palette` entry {i} must be (r, g, b) integers in [0, 255], got {entry!r}")
        flat.extend(int(c) for c in rgb)
    return flat + [0] * (768 - len(flat))


def save_label(
    path: PathLike,
    label: Tensor | np.ndarray,
    *,
    palette: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write a label map as an 8-bit PNG, atomically.

    The PNG goes to a temporary file in the destination folder, then
    ``os.replace`` moves it into place, so a reader (or a crash) never sees a
    half-written file. Missing parent folders are created. With a palette the
    PNG is in mode ``P`` (values are palette indices, shown in colour by image
    viewers, and read back as indices by :func:`load_label`); ids without a
    palette entry show black.

    Args:
        path: destination file; written as PNG whatever its suffix.
        label: ``(H, W)`` integer ids in ``[0, 255]`` (a tensor on any device, or a numpy array).
        palette: optional ``(r, g, b)`` colour per id, e.g.
            :data:`~diga.data.CITYSCAPES_PALETTE`; at most 256 entries.

    Raises:
        ValueError: ``label`` is not a 2-D integer map with values in ``[0, 255]``,
            or the palette is malformed.
        OSError: the file cannot be written (a full disk): ``diga._io.WriteError`` naming it;
            a file already there is left as it was.

    Example:
        >>> import tempfile, os
        >>> from diga.data import CITYSCAPES_PALETTE
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = os.path.join(d, "pseudo", "aachen", "a.png")
        ...     save_label(out, torch.tensor([[0, 13], [18, 255]]), palette=CITYSCAPES_PALETTE)
        ...     load_label(out).tolist()
        [[0, 13], [18, 255]]
    """
    if isinstance(label, np.ndarray):
        label = torch.from_numpy(label)
    if not isinstance(label, Tensor):
        raise ValueError(f"`label` must be a torch.Tensor or numpy array, got {type(label).__name__}")
    if label.ndim != 2:
        raise ValueError(f"`label` must be (H, W), got shape {tuple(label.shape)}")
    if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
        raise ValueError(f"`label` must be an integer tensor, got dtype {label.dtype}")
    if label.numel() == 0:
        raise ValueError(f"`label` must not be empty, got shape {tuple(label.shape)}")
    label = label.detach().cpu().to(torch.int64)
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"`label` values must be in [0, 255] for an 8-bit PNG, got values in [{lo}, {hi}]")
    flat_palette = _check_palette(palette) if palette is not None else None
    image = Image.fromarray(label.to(torch.uint8).numpy())  # mode "L"
    if flat_palette is not None:
        image.putpalette(flat_palette)  # "L" -> "P", same values, now palette indices

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())  # a full disk: WriteError naming the file, no temp file left
