"""How many pseudo-labels a selector kept, overall and per class."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diga._checks import check_same_shape
from diga._ops import count_values

__all__ = ["SelectionStats", "kept_fractions", "selection_output"]


@dataclass(frozen=True)
class SelectionStats:
    """Kept fraction of pseudo-labels (tensors; nothing is read back to the host).

    Attributes:
        kept: scalar, kept valid pixels / valid pixels before selection (NaN if none).
        kept_per_class: ``(C,)``, the same per pseudo-label class (NaN where a class is absent).
        count_per_class: ``(C,)`` int64, valid pixels per class before selection.
    """

    kept: Tensor
    kept_per_class: Tensor
    count_per_class: Tensor


def kept_fractions(
    before: Tensor, after: Tensor, *, num_classes: int, ignore_index: int = 255
) -> SelectionStats:
    """Fraction of each class's pseudo-labels that survive selection.

    Args:
        before: ``(B, H, W)`` pseudo-labels given to the selector.
        after: ``(B, H, W)`` selected labels (``ignore_index`` where dropped).

    Example:
        >>> before = torch.tensor([[[0, 0, 1, 255]]])
        >>> after = torch.tensor([[[0, 255, 1, 255]]])
        >>> s = kept_fractions(before, after, num_classes=3)
        >>> round(float(s.kept), 3), s.kept_per_class.tolist()[:2]
        (0.667, [0.5, 1.0])
    """
    check_same_shape(before, after, "before", "after")
    valid = before != ignore_index
    kept = after != ignore_index
    idx = torch.where(valid, before, torch.full_like(before, num_classes)).flatten()
    total = count_values(idx, num_classes + 1)[:num_classes]
    idx_kept = torch.where(kept, before, torch.full_like(before, num_classes)).flatten()
    survived = count_values(idx_kept, num_classes + 1)[:num_classes]
    nan = torch.full((), float("nan"), device=before.device)  # a fill, not a host-to-device copy
    per_class = torch.where(total > 0, survived / total.clamp_min(1), nan)
    overall_total = total.sum()
    overall = torch.where(overall_total > 0, survived.sum() / overall_total.clamp_min(1), nan)
    return SelectionStats(kept=overall, kept_per_class=per_class, count_per_class=total)


def selection_output(
    before: Tensor, after: Tensor, *, num_classes: int, ignore_index: int, return_stats: bool
) -> Tensor | tuple[Tensor, SelectionStats]:
    """What every selector's ``forward`` returns: the labels, and the stats when asked."""
    if not return_stats:
        return after
    return after, kept_fractions(before, after, num_classes=num_classes, ignore_index=ignore_index)
