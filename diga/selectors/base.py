"""``PseudoLabelSelector``: the one call every pseudo-label selector answers."""

from __future__ import annotations

from torch import Tensor, nn

from diga._checks import check_number
from diga.selectors.stats import SelectionStats, selection_output

__all__ = ["PseudoLabelSelector"]


class PseudoLabelSelector(nn.Module):
    """Base class of pseudo-label selectors: which target pixels keep their pseudo-label.

    Every selector is called the same way, ``selector(pseudo_labels, *,
    features=None, logits=None, return_stats=False)``, and reads the inputs it
    needs (DiGA's dynamic selector: the teacher's ``features``; the threshold
    baselines: its ``logits``), so the :class:`~diga.Adapter` can pass both.
    A subclass implements :meth:`select`; dropped pixels become ``ignore_index``.

    Args:
        ignore_index: label value for dropped and unlabelled pixels.

    Shapes:
        ``forward(pseudo_labels (B, H, W), *, features (B, D, h, w) | None, logits (B, C, h, w) | None)
        -> (B, H, W)``; with ``return_stats=True`` also a :class:`~diga.selectors.SelectionStats`.

    Example:
        >>> import torch
        >>> class KeepAll(PseudoLabelSelector):
        ...     def select(self, pseudo_labels, *, features=None, logits=None):
        ...         return pseudo_labels, 3
        >>> KeepAll()(torch.tensor([[[0, 2]]]), features=None)
        tensor([[[0, 2]]])
    """

    def __init__(self, *, ignore_index: int = 255) -> None:
        super().__init__()
        check_number(ignore_index, "ignore_index", integer=True)
        self.ignore_index = int(ignore_index)

    def select(
        self, pseudo_labels: Tensor, *, features: Tensor | None = None, logits: Tensor | None = None
    ) -> tuple[Tensor, int]:
        """``(selected (B, H, W), num_classes)``: the pseudo-labels kept, ``ignore_index`` elsewhere."""
        raise NotImplementedError

    def forward(
        self,
        pseudo_labels: Tensor,
        *,
        features: Tensor | None = None,
        logits: Tensor | None = None,
        return_stats: bool = False,
    ) -> Tensor | tuple[Tensor, SelectionStats]:
        """Select pseudo-labels.

        Args:
            pseudo_labels: ``(B, H, W)`` int64 labels (``ignore_index`` where none).
            features: ``(B, D, h, w)`` features of the same images (the teacher's), for selectors that read them.
            logits: ``(B, C, h, w)`` scores of the same images (the teacher's), for selectors that read them.
            return_stats: also return the kept fractions.

        Raises:
            ValueError: an input the selector needs is missing or malformed (the argument is named).
        """
        selected, num_classes = self.select(pseudo_labels, features=features, logits=logits)
        return selection_output(
            pseudo_labels, selected, num_classes=num_classes, ignore_index=self.ignore_index,
            return_stats=return_stats,
        )

    def _require(self, value: Tensor | None, name: str) -> Tensor:
        if value is None:
            raise ValueError(f"`{name}` is required by {type(self).__name__}, got None")
        return value
