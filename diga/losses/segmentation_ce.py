"""Pixel-wise cross-entropy with an ignore label, averaged over valid pixels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import (
    check_finite,
    check_floating,
    check_labels,
    check_ndim,
    check_nonempty,
    check_number,
    check_same_batch,
)

__all__ = ["SegmentationCELoss", "resize_logits", "segmentation_ce_loss"]


def resize_logits(logits: Tensor, size: tuple[int, int], *, align_corners: bool = True) -> Tensor:
    """Bilinear resize of ``(B, C, h, w)`` scores to ``size``; a no-op when already that size.

    ``align_corners=True`` is what the paper's scripts use (``nn.Upsample``).

    Example:
        >>> resize_logits(torch.zeros(1, 19, 8, 8), (32, 32)).shape
        torch.Size([1, 19, 32, 32])
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def segmentation_ce_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = 255,
    align_corners: bool = True,
) -> Tensor:
    """Cross-entropy averaged over the pixels whose label is not ``ignore_index``.

    Logits of another size than the labels are upsampled bilinearly to the
    labels' size first (as the paper does before its loss). The paper's
    ``cross_entropy2d`` divides by every pixel, ignored ones included; we divide
    by valid pixels (``F.cross_entropy``'s own mean). A batch with no valid pixel
    gives 0 with a zero gradient instead of NaN.

    Args:
        logits: ``(B, C, h, w)`` scores.
        labels: ``(B, H, W)`` int64 class indices or ``ignore_index``.
        ignore_index: label value that contributes nothing.
        align_corners: passed to the bilinear resize.

    Returns:
        Scalar loss in the logits' dtype.

    Example:
        >>> logits = torch.zeros(2, 19, 8, 8)
        >>> labels = torch.full((2, 32, 32), 255)
        >>> segmentation_ce_loss(logits, labels)
        tensor(0.)
    """
    check_ndim(logits, "logits", 4, "(B, C, h, w)")
    check_floating(logits, "logits")
    check_nonempty(logits, "logits")
    check_labels(labels, "labels", num_classes=logits.shape[1], ignore_index=ignore_index)
    check_same_batch(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    logits = resize_logits(logits, labels.shape[-2:], align_corners=align_corners)
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    valid = (labels != ignore_index).sum().clamp_min(1)
    return total / valid.to(total.dtype)


class SegmentationCELoss(nn.Module):
    """Module form of :func:`segmentation_ce_loss`.

    Example:
        >>> loss_fn = SegmentationCELoss(ignore_index=255)
        >>> loss_fn(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        tensor(1.0986)
    """

    def __init__(self, *, ignore_index: int = 255, align_corners: bool = True) -> None:
        super().__init__()
        check_number(ignore_index, "ignore_index", integer=True)
        self.ignore_index = int(ignore_index)
        self.align_corners = bool(align_corners)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return segmentation_ce_loss(
            logits, labels, ignore_index=self.ignore_index, align_corners=self.align_corners
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"

