"""Random block masks (masked image consistency, MIC: Hoyer et al., CVPR 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diga._checks import check_images, check_number
from diga._ops import host_to_device

__all__ = ["block_mask", "mask_images"]


def block_mask(
    shape: tuple[int, int, int],
    *,
    block_size: int = 64,
    ratio: float = 0.7,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random patch mask: each ``block_size`` square is hidden with probability ``ratio``.

    As MIC's ``BlockMaskGenerator``: a grid of ``round(H / block_size) x round(W / block_size)``
    (at least 1 x 1) uniform draws, kept where above ``ratio``, upsampled to ``(H, W)`` by
    nearest neighbour.

    Args:
        shape: ``(B, H, W)``.
        block_size: side of a block in pixels (MIC: 64 at 512 x 512 and larger crops).
        ratio: probability that a block is hidden, in ``[0, 1)`` (MIC: 0.7).
        device: where the mask lives (default: the generator's, else the CPU).
        generator: random source; a CPU generator draws on the CPU and the grid moves to ``device``.

    Returns:
        ``(B, H, W)`` bool, True where the image stays visible.

    Example:
        >>> m = block_mask((2, 32, 48), block_size=8, ratio=0.7, generator=torch.Generator().manual_seed(0))
        >>> m.shape, m.dtype
        (torch.Size([2, 32, 48]), torch.bool)
    """
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"`shape` must be (B, H, W) of positive integers, got {shape!r}")
    check_number(block_size, "block_size", low=1, integer=True)
    check_number(ratio, "ratio", low=0, high=1, high_open=True)
    b, h, w = shape
    grid = (b, 1, max(1, round(h / block_size)), max(1, round(w / block_size)))
    gen_device = generator.device if generator is not None else (device or "cpu")
    draws = torch.rand(grid, generator=generator, device=gen_device)
    keep = host_to_device(draws > ratio, device or gen_device)
    return F.interpolate(keep.float(), size=(h, w), mode="nearest")[:, 0].bool()


def mask_images(images: Tensor, mask: Tensor) -> Tensor:
    """Zero the hidden blocks: ``images * mask`` (MIC's ``mask_image``).

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        mask: ``(B, H, W)`` bool, True where visible (:func:`block_mask`).

    Returns:
        ``(B, 3, H, W)``, same dtype.

    Example:
        >>> x = torch.ones(1, 3, 4, 4)
        >>> mask_images(x, torch.eye(4, dtype=torch.bool)[None]).sum()
        tensor(12.)
    """
    check_images(images, "images")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (images.shape[0], *images.shape[2:]):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"`mask` must be a bool (B, H, W) = {(images.shape[0], *images.shape[2:])}, got {got}")
    return images * mask[:, None].to(images.dtype)
