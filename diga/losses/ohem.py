"""Online hard example mining cross-entropy (the SYNTHIA scripts' ``OhemCrossEntropy``)."""

from __future__ import annotations

import torch
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
from diga.losses.segmentation_ce import resize_logits

__all__ = ["OhemCELoss", "ohem_ce_loss"]


def ohem_ce_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    threshold: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = 255,
    align_corners: bool = True,
) -> Tensor:
    """Cross-entropy averaged over the hard pixels only: those whose true-class probability is low.

    A labelled pixel is kept when the softmax probability of its label is below
    ``max(threshold, p_k)``, where ``p_k`` is the ``(min_kept + 1)``-th smallest such
    probability in the batch (the last one when fewer pixels are labelled): so at least
    about ``min_kept`` pixels are kept however confident the model is, and every pixel under
    ``threshold``. The SYNTHIA -> Cityscapes scripts use it for every supervised term with
    ``threshold=0.7, min_kept=100000`` (HRNet's ``OhemCrossEntropy``, same selection and mean).
    Logits of another size than the labels are upsampled bilinearly first. Where the
    script's mean would be NaN (no labelled pixel, or none kept) this returns 0 with a zero
    gradient. The selection is one sort over the batch's labelled pixels and no host sync.

    Args:
        logits: ``(B, C, h, w)`` scores.
        labels: ``(B, H, W)`` int64 class indices or ``ignore_index``.
        threshold: probability under which a pixel always counts as hard, in ``(0, 1]``.
        min_kept: pixels kept at least (before ties at the cut-off), >= 1.
        ignore_index: label value that contributes nothing.
        align_corners: passed to the bilinear resize.

    Returns:
        Scalar loss in the logits' dtype.

    Example:
        >>> logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
        >>> labels = torch.tensor([[[0, 0]]])   # the first pixel is easy (p = 0.98), the second hard (0.5)
        >>> ohem_ce_loss(logits, labels, threshold=0.7, min_kept=1)  # the hard pixel alone: -log 0.5
        tensor(0.6931)
    """
    check_ndim(logits, "logits", 4, "(B, C, h, w)")
    check_floating(logits, "logits")
    check_nonempty(logits, "logits")
    check_labels(labels, "labels", num_classes=logits.shape[1], ignore_index=ignore_index)
    check_same_batch(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    check_number(threshold, "threshold", low=0, high=1, low_open=True)
    check_number(min_kept, "min_kept", low=1, integer=True)
    logits = resize_logits(logits, labels.shape[-2:], align_corners=align_corners)
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none").reshape(-1)
    # The true class's probability is exp(-CE); ignored pixels get 2 so they sort last and are never kept.
    prob = torch.where(valid, torch.exp(-pixel_losses.detach().float()), torch.full_like(pixel_losses, 2.0,
                                                                                          dtype=torch.float32))
    n_valid = valid.sum()
    kth = torch.clamp(torch.minimum(n_valid - 1, n_valid.new_tensor(int(min_kept))), min=0)
    cut = torch.sort(prob).values.gather(0, kth.view(1)).clamp_min(float(threshold))
    kept = valid & (prob < cut)
    total = (pixel_losses * kept).sum()
    return total / kept.sum().clamp_min(1).to(total.dtype)


class OhemCELoss(nn.Module):
    """Module form of :func:`ohem_ce_loss` (pass it to ``Adapter(seg_loss=...)``).

    Example:
        >>> loss_fn = OhemCELoss(threshold=0.7, min_kept=100_000)
        >>> loss_fn(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        tensor(1.0986)
    """

    def __init__(self, *, threshold: float = 0.7, min_kept: int = 100_000, ignore_index: int = 255,
                 align_corners: bool = True) -> None:
        super().__init__()
        check_number(threshold, "threshold", low=0, high=1, low_open=True)
        check_number(min_kept, "min_kept", low=1, integer=True)
        check_number(ignore_index, "ignore_index", integer=True)
        self.threshold = float(threshold)
        self.min_kept = int(min_kept)
        self.ignore_index = int(ignore_index)
        self.align_corners = bool(align_corners)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ohem_ce_loss(logits, labels, threshold=self.threshold, min_kept=self.min_kept,
                            ignore_index=self.ignore_index, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, min_kept={self.min_kept}, ignore_index={self.ignore_index}"

