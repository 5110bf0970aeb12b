"""Confusion matrix, per-class IoU and mIoU (dataset-wide, as the benchmarks define it), and the
precision of pseudo-labels against ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diga import _dist
from diga._checks import check_labels, check_ndim, check_number, check_same_shape
from diga._ops import class_argmax, count_values

__all__ = ["ConfusionMatrix", "iou_from_confusion", "miou", "pseudo_label_counts", "pseudo_label_precision"]


def pseudo_label_counts(pseudo_labels: Tensor, labels: Tensor, *, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """``(correct, labelled)`` pixel counts (int64 scalars) of pseudo-labels against ground truth.

    A pixel is labelled where both ``pseudo_labels`` and ``labels`` differ from
    ``ignore_index``, correct where it is labelled and the two agree. Sum the
    counts over a dataset for its precision (never average per-image ratios).

    Args:
        pseudo_labels: ``(..., H, W)`` int pseudo-labels.
        labels: the same shape, ground truth.
        ignore_index: the value that carries no label in either.

    Raises:
        ValueError: the shapes differ.

    Example:
        >>> pseudo_label_counts(torch.tensor([[0, 1, 255]]), torch.tensor([[0, 2, 1]]))
        (tensor(1), tensor(2))
    """
    check_same_shape(pseudo_labels, labels, "pseudo_labels", "labels")
    labelled = (labels != ignore_index) & (pseudo_labels != ignore_index)
    correct = labelled & (pseudo_labels == labels)
    return correct.sum(), labelled.sum()


def pseudo_label_precision(pseudo_labels: Tensor, labels: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Pseudo-label precision: correct / labelled pixels (:func:`pseudo_label_counts`), 0 when none is labelled.

    Example:
        >>> pseudo_label_precision(torch.tensor([[0, 1, 255]]), torch.tensor([[0, 2, 1]]))
        tensor(0.5000)
    """
    correct, labelled = pseudo_label_counts(pseudo_labels, labels, ignore_index=ignore_index)
    return correct / labelled.clamp_min(1)


def _confusion(preds: Tensor, labels: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    valid = labels != ignore_index
    idx = torch.where(valid, labels * num_classes + preds, torch.full_like(labels, num_classes**2))
    counts = count_values(idx, num_classes**2 + 1)
    return counts[: num_classes**2].reshape(num_classes, num_classes)


def iou_from_confusion(matrix: Tensor, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Per-class IoU ``(C,)`` (NaN where a class is in neither prediction nor label) and mIoU.

    ``matrix[i, j]`` counts pixels of label ``i`` predicted ``j``. ``classes``
    restricts the mean to a subset (e.g. SYNTHIA's 13 classes).

    Example:
        >>> iou, m = iou_from_confusion(torch.tensor([[2, 0], [1, 1]]))
        >>> [round(v, 3) for v in iou.tolist()], round(float(m), 3)
        ([0.667, 0.5], 0.583)
    """
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    sub = iou if classes is None else iou[list(classes)]
    return iou, sub.nanmean()


def miou(
    preds: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    ignore_index: int = 255,
    classes: Sequence[int] | None = None,
) -> Tensor:
    """Mean IoU of a batch of predictions (one confusion matrix over all pixels).

    Args:
        preds: ``(B, H, W)`` int64 predictions, or ``(B, C, H, W)`` scores (argmax taken).
        labels: ``(B, H, W)`` int64 labels or ``ignore_index``.

    Example:
        >>> miou(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]), num_classes=2)
        tensor(0.2500, dtype=torch.float64)
    """
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index).to(labels.device)
    cm.update(preds, labels)
    return cm.compute(classes=classes)["miou"]


class ConfusionMatrix(nn.Module):
    """Accumulates a ``(C, C)`` confusion matrix on device; IoU per class and mIoU.

    mIoU is dataset-wide intersection over union (one matrix for the whole
    set), as the paper's ``runningScore`` and the benchmarks compute it, not a
    mean of per-image IoUs. Under ``torch.distributed`` ``compute`` sums the
    matrices of all ranks (every rank must call it).

    Args:
        num_classes: ``C``.
        ignore_index: label value left out.

    Example:
        >>> cm = ConfusionMatrix(num_classes=3)
        >>> cm.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]]))
        >>> out = cm.compute()
        >>> out["iou"].tolist()
        [1.0, 0.5, 0.0]
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 255) -> None:
        super().__init__()
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(ignore_index, "ignore_index", integer=True)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.register_buffer("matrix", torch.zeros(num_classes, num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, preds: Tensor, labels: Tensor) -> None:
        """Add a batch: ``preds`` ``(B, H, W)`` int64 or ``(B, C, H, W)`` scores; ``labels`` ``(B, H, W)``."""
        check_labels(labels, "labels", num_classes=self.num_classes, ignore_index=self.ignore_index)
        if preds.ndim == 4:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"`preds` scores must have C = {self.num_classes} channels, got {tuple(preds.shape)}"
                )
            preds = class_argmax(preds)
        check_ndim(preds, "preds", 3, "(B, H, W) or (B, C, H, W)")
        check_labels(preds, "preds", num_classes=self.num_classes, ignore_index=-(10**9))
        check_same_shape(preds, labels, "preds", "labels")
        self.matrix += _confusion(
            preds.to(self.matrix.device), labels.to(self.matrix.device), self.num_classes,
            self.ignore_index,
        )

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, classes: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``{"iou": (C,), "miou": scalar, "matrix": (C, C)}``, summed over ranks.

        ``classes`` restricts the mean (e.g. the 13 of SYNTHIA's 16 classes).
        """
        matrix = self.matrix.clone()
        _dist.all_reduce_sum_(matrix)
        iou, mean = iou_from_confusion(matrix, classes)
        return {"iou": iou, "miou": mean, "matrix": matrix}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"
