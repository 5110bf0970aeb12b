"""How many pseudo-labels a selector kept, overall and per class."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diga._checks import check_same_shape
from diga._ops import constant, count_values

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
    # One count over 2 (C + 1) bins: the class (ignore -> slot C) of every pixel before selection,
    # shifted by C + 1 where it was kept. Total = both halves; 0 / 0 gives the NaN of an absent class.
    if ignore_index >= num_classes:  # labels hold classes and the ignore value: one clamp
        slot = before.clamp_max(num_classes)
    else:
        slot = torch.where(before == ignore_index, constant(num_classes, before.dtype, before.device), before)
    code = slot.add(after != ignore_index, alpha=num_classes + 1)
    counts = count_values(code, 2 * (num_classes + 1)).view(2, num_classes + 1)[:, :num_classes]
    survived = counts[1]
    total = counts[0] + survived
    per_class = survived / total
    overall = survived.sum() / total.sum()
    return SelectionStats(kept=overall, kept_per_class=per_class, count_per_class=total)


def selection_output(
    before: Tensor, after: Tensor, *, num_classes: int, ignore_index: int, return_stats: bool
) -> Tensor | tuple[Tensor, SelectionStats]:
    """What every selector's ``forward`` returns: the labels, and the stats when asked."""
    if not return_stats:
        return after
    return after, kept_fractions(before, after, num_classes=num_classes, ignore_index=ignore_index)
