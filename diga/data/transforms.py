"""Paired transforms: one geometric op applied to an image and every label map of a sample.

A sample is ``(image, *labels)``: the image ``(C, H, W)`` float (RGB in
``[0, 1]``), then any number of ``(H, W)`` integer label maps (ground truth,
pseudo-labels, ...). Each transform is called as
``t(image, *labels, generator=g)`` and returns the tuple ``(image, *labels)``
with the same op applied to all of them: images are resized bilinearly,
labels by nearest neighbour, so pseudo-labels travel with the ground truth.

Randomness comes only from the ``generator`` passed at call time. The
datasets derive one per item with :func:`item_generator` from ``(seed,
epoch, index)``, so an item's augmentation does not depend on the number of
loader workers or the order items are drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from diga._checks import check_number
from diga._random import derive_generator

__all__ = [
    "PairedCompose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "item_generator",
    "resize_label",
]

def item_generator(seed: int, index: int, epoch: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, index)``, for one item's augmentation.

    ``derive_generator(seed, epoch, index)``: the three integers are hashed with SplitMix64, so neighbouring indices,
    epochs and seeds give unrelated streams, and the same triple gives the
    same stream in every process (loader workers, ranks, runs).

    Args:
        seed: the dataset's seed.
        index: the item's index in the dataset.
        epoch: the epoch (datasets take it from ``set_epoch``).

    Returns:
        A new ``torch.Generator`` on the CPU.

    Example:
        >>> a = torch.rand(3, generator=item_generator(0, 5))
        >>> b = torch.rand(3, generator=item_generator(0, 5))
        >>> c = torch.rand(3, generator=item_generator(0, 5, epoch=1))
        >>> bool(torch.equal(a, b)), bool(torch.equal(a, c))
        (True, False)
    """
    for name, value in (("seed", seed), ("index", index), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"`{name}` must be an integer, got {value!r}")
    return derive_generator(seed, epoch, index)


# --------------------------------------------------------------------------- helpers


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``int`` -> ``(s, s)``; ``(h, w)`` kept; both positive integers."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be an int or a pair (height, width), got {size!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must hold positive integers (height, width), got {size!r}")
    return h, w


def _check_sample(image: object, labels: Sequence[object]) -> None:
    if not isinstance(image, Tensor):
        raise ValueError(f"`image` must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 3 or not image.is_floating_point() or image.numel() == 0:
        raise ValueError(
            f"`image` must be a non-empty (C, H, W) float tensor, got shape {tuple(image.shape)} "
            f"and dtype {image.dtype}"
        )
    for i, label in enumerate(labels):
        if not isinstance(label, Tensor):
            raise ValueError(f"`labels[{i}]` must be a torch.Tensor, got {type(label).__name__}")
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise ValueError(f"`labels[{i}]` must be an integer (H, W) tensor, got dtype {label.dtype}")
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"`labels[{i}]` must be (H, W) = {tuple(image.shape[-2:])} like `image`, "
                f"got shape {tuple(label.shape)}"
            )


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else None
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64).cpu()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    device = generator.device if generator is not None else None
    return int(torch.randint(high, (1,), generator=generator, device=device))


def _nearest_index(size_in: int, size_out: int, device: torch.device) -> Tensor:
    """Source index of each output pixel for a pixel-centre nearest resize (PIL ``NEAREST``)."""
    out = torch.arange(size_out, device=device)
    return ((2 * out + 1) * size_in).div(2 * size_out, rounding_mode="floor")


def resize_label(label: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a ``(H, W)`` integer label map to ``size = (h, w)``.

    Pixel-centre sampling (as PIL's ``NEAREST`` and ``mode="nearest-exact"``),
    by index gathering, so any dtype works and values are never blended.

    Example:
        >>> resize_label(torch.tensor([[1, 2], [3, 4]]), (4, 4)).tolist()
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    """
    h, w = size
    if tuple(label.shape[-2:]) == (h, w):
        return label
    rows = _nearest_index(label.shape[-2], h, label.device)
    cols = _nearest_index(label.shape[-1], w, label.device)
    return label.index_select(-2, rows).index_select(-1, cols)


def _resize_sample(image: Tensor, labels: Sequence[Tensor], size: tuple[int, int]) -> tuple[Tensor, ...]:
    if tuple(image.shape[-2:]) == size:
        return (image, *labels)
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return (resized, *(resize_label(label, size) for label in labels))


def _crop_sample(
    image: Tensor,
    labels: Sequence[Tensor],
    crop: tuple[int, int],
    ignore_index: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, ...]:
    th, tw = crop
    h, w = image.shape[-2:]
    pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
    if pad_h or pad_w:  # bottom / right: image zeros, labels ignore
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        labels = [F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index) for label in labels]
        h, w = image.shape[-2:]
    top = _randint(h - th + 1, generator)
    left = _randint(w - tw + 1, generator)
    window = (slice(top, top + th), slice(left, left + tw))
    return (image[(slice(None), *window)], *(label[window] for label in labels))


# --------------------------------------------------------------------------- transforms


class PairedCompose:
    """Apply paired transforms in order, passing the same generator to each.

    Args:
        transforms: callables ``t(image, *labels, generator=None) -> (image, *labels)``.

    Example:
        >>> t = PairedCompose([RandomScaleCrop((16, 16)), RandomHorizontalFlip()])
        >>> g = torch.Generator().manual_seed(0)
        >>> image, label = t(torch.rand(3, 32, 64), torch.zeros(32, 64, dtype=torch.long), generator=g)
        >>> image.shape, label.shape
        (torch.Size([3, 16, 16]), torch.Size([16, 16]))
    """

    def __init__(self, transforms: Sequence) -> None:
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise ValueError(f"`transforms[{i}]` must be callable, got {type(t).__name__}")
        self.transforms = transforms

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        sample = (image, *labels)
        for t in self.transforms:
            sample = t(*sample, generator=generator)
        return tuple(sample)

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class Resize:
    """Resize to a fixed size: bilinear (antialiased) image, nearest-neighbour labels.

    Args:
        size: ``(height, width)``, or one int for a square.

    Example:
        >>> image, label = Resize((8, 16))(torch.rand(3, 32, 64), torch.zeros(32, 64, dtype=torch.long))
        >>> tuple(image.shape), tuple(label.shape)
        ((3, 8, 16), (8, 16))
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "size")

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        _check_sample(image, labels)
        return _resize_sample(image, labels, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class RandomCrop:
    """A random ``crop_size`` window; a smaller sample is padded first.

    Padding goes to the bottom and right: zeros for the image, ``ignore_index``
    for the labels, so padded pixels never train. (The paper's released
    ``RandomCrop`` stretches a too-small image up to the crop size instead.)

    Args:
        crop_size: ``(height, width)``, or one int for a square.
        ignore_index: label value written into padded pixels.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> image, label = RandomCrop((40, 40))(torch.rand(3, 32, 64), torch.zeros(32, 64, dtype=torch.long),
        ...                                     generator=g)
        >>> tuple(image.shape), int((label == 255).sum())  # 8 padded rows
        ((3, 40, 40), 320)
    """

    def __init__(self, crop_size: int | Sequence[int], *, ignore_index: int = 255) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        check_number(ignore_index, "ignore_index", integer=True)
        self.ignore_index = ignore_index

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        _check_sample(image, labels)
        return _crop_sample(image, labels, self.crop_size, self.ignore_index, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, ignore_index={self.ignore_index})"


class RandomScaleCrop:
    """The paper's ``RandomSized_and_Crop``: random per-axis rescale, then a random crop.

    Width and height are scaled by two independent factors drawn uniformly
    from ``scale`` (new size ``int(factor * size)``, width first, as the
    released code), the image bilinearly and the labels by nearest
    neighbour; then a :class:`RandomCrop` of ``crop_size`` (padding with
    zeros / ``ignore_index`` when the rescaled sample is smaller).

    Args:
        crop_size: ``(height, width)`` of the output, or one int for a square.
        scale: ``(low, high)`` range of the per-axis factors, ``0 < low <= high``
            (paper: ``(0.7, 1.0)``).
        ignore_index: label value of padded pixels.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t = RandomScaleCrop((16, 32))
        >>> image, label, pseudo = t(torch.rand(3, 32, 64), torch.zeros(32, 64, dtype=torch.long),
        ...                          torch.ones(32, 64, dtype=torch.long), generator=g)
        >>> tuple(image.shape), tuple(label.shape), tuple(pseudo.shape)
        ((3, 16, 32), (16, 32), (16, 32))
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        *,
        scale: tuple[float, float] = (0.7, 1.0),
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        try:
            low, high = scale
        except (TypeError, ValueError):
            raise ValueError(f"`scale` must be a pair (low, high), got {scale!r}") from None
        check_number(low, "scale[0]", low=0, low_open=True)
        check_number(high, "scale[1]", low=0, low_open=True)
        if low > high:
            raise ValueError(f"`scale` must satisfy low <= high, got {scale!r}")
        check_number(ignore_index, "ignore_index", integer=True)
        self.scale = (float(low), float(high))
        self.ignore_index = ignore_index

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        _check_sample(image, labels)
        h, w = image.shape[-2:]
        low, high = self.scale
        fw, fh = (low + (high - low) * _rand(2, generator)).tolist()
        size = (max(1, int(fh * h)), max(1, int(fw * w)))
        image, *labels = _resize_sample(image, labels, size)
        return _crop_sample(image, labels, self.crop_size, self.ignore_index, generator)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, scale={self.scale}, "
            f"ignore_index={self.ignore_index})"
        )


class RandomHorizontalFlip:
    """Mirror the image and all labels left-right with probability ``p``.

    Args:
        p: flip probability in ``[0, 1]``.

    Example:
        >>> flip = RandomHorizontalFlip(p=1.0)
        >>> image, label = flip(torch.rand(3, 2, 3), torch.tensor([[0, 1, 2], [3, 4, 5]]))
        >>> label.tolist()
        [[2, 1, 0], [5, 4, 3]]
    """

    def __init__(self, *, p: float = 0.5) -> None:
        check_number(p, "p", low=0, high=1)
        self.p = float(p)

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        _check_sample(image, labels)
        if float(_rand(1, generator)) >= self.p:
            return (image, *labels)
        return (image.flip(-1), *(label.flip(-1) for label in labels))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"
