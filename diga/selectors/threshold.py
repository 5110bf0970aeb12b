"""Confidence-threshold baselines that DiGA's dynamic selection is compared against."""

from __future__ import annotations

import torch
from torch import Tensor

from diga._checks import (
    check_finite,
    check_floating,
    check_labels,
    check_ndim,
    check_number,
    check_same_batch,
)
from diga._ops import count_values
from diga.losses.segmentation_ce import resize_logits
from diga.selectors.base import PseudoLabelSelector

__all__ = ["ClassBalancedSelector", "ConfidenceThresholdSelector", "pseudo_label_confidence"]


def pseudo_label_confidence(pseudo_labels: Tensor, logits: Tensor) -> Tensor:
    """Softmax probability of each pixel's pseudo-label class, ``(B, H, W)`` float32.

    Logits are upsampled bilinearly (``align_corners=True``) to the labels'
    size before the softmax, as in the paper's pseudo-label generation. Pixels
    whose pseudo-label is out of range (the ignore value) get 0.

    Example:
        >>> pseudo_label_confidence(torch.tensor([[[1]]]), torch.tensor([[[[0.]], [[0.]]]]))
        tensor([[[0.5000]]])
    """
    probs = torch.softmax(resize_logits(logits, pseudo_labels.shape[-2:]).float(), dim=1)
    c = probs.shape[1]
    valid = (pseudo_labels >= 0) & (pseudo_labels < c)
    index = torch.where(valid, pseudo_labels, torch.zeros_like(pseudo_labels))
    conf = probs.gather(1, index[:, None])[:, 0]
    return torch.where(valid, conf, torch.zeros_like(conf))


class _ThresholdBase(PseudoLabelSelector):
    """Selectors on the confidence of each pixel's pseudo-label class, from ``logits`` (required)."""

    def _confidence(self, pseudo_labels: Tensor, logits: Tensor) -> Tensor:
        check_ndim(logits, "logits", 4, "(B, C, h, w)")
        check_floating(logits, "logits")
        check_labels(
            pseudo_labels, "pseudo_labels", num_classes=logits.shape[1], ignore_index=self.ignore_index
        )
        check_same_batch(pseudo_labels, logits, "pseudo_labels", "logits")
        check_finite(logits, "logits")
        return pseudo_label_confidence(pseudo_labels, logits)

    def _keep(self, pseudo_labels: Tensor, conf: Tensor, num_classes: int) -> Tensor:
        raise NotImplementedError

    def select(
        self, pseudo_labels: Tensor, *, features: Tensor | None = None, logits: Tensor | None = None
    ) -> tuple[Tensor, int]:
        """Keep the pseudo-labels whose confidence under ``logits`` (required) passes; ``features`` are unused."""
        logits = self._require(logits, "logits")
        conf = self._confidence(pseudo_labels, logits)
        keep = self._keep(pseudo_labels, conf, logits.shape[1])
        keep = keep & (pseudo_labels != self.ignore_index)
        return pseudo_labels.masked_fill(~keep, self.ignore_index), logits.shape[1]


class ConfidenceThresholdSelector(_ThresholdBase):
    """Keep a pseudo-label where its class's softmax probability is at least ``threshold``.

    Args:
        threshold: in ``[0, 1]`` (0.9 is the usual choice).
        ignore_index: label value for dropped pixels.

    Example:
        >>> sel = ConfidenceThresholdSelector(threshold=0.9)
        >>> logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.0]]]])    # (1, 2, 1, 2)
        >>> sel(torch.tensor([[[0, 0]]]), logits=logits)
        tensor([[[  0, 255]]])
    """

    def __init__(self, *, threshold: float = 0.9, ignore_index: int = 255) -> None:
        super().__init__(ignore_index=ignore_index)
        check_number(threshold, "threshold", low=0, high=1)
        self.threshold = float(threshold)

    def _keep(self, pseudo_labels: Tensor, conf: Tensor, num_classes: int) -> Tensor:
        return conf >= self.threshold

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, ignore_index={self.ignore_index}"


class ClassBalancedSelector(_ThresholdBase):
    """Class-balanced selection (CBST): each class keeps its most confident ``portion`` of pixels.

    Per pseudo-label class ``k`` in the batch, the threshold is the confidence
    at index ``floor((1 - portion) * n_k)`` of that class's ``n_k`` confidences
    sorted ascending; pixels at or above it are kept, so rare classes keep as
    large a share as frequent ones. ``max_threshold`` caps every class's
    threshold (pixels that confident are always kept). Vectorised: one sort
    of (class, confidence) keys, no loop over classes.

    Args:
        portion: fraction of each class to keep, in ``(0, 1]``.
        max_threshold: optional cap on the per-class thresholds.
        ignore_index: label value for dropped pixels.

    Example:
        >>> sel = ClassBalancedSelector(portion=0.5)
        >>> logits = torch.tensor([[[[3.0, 2.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
        >>> sel(torch.tensor([[[0, 0, 0, 0]]]), logits=logits)
        tensor([[[  0,   0, 255, 255]]])
    """

    def __init__(
        self, *, portion: float = 0.5, max_threshold: float | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        check_number(portion, "portion", low=0, high=1, low_open=True)
        if max_threshold is not None:
            check_number(max_threshold, "max_threshold", low=0, high=1)
        self.portion = float(portion)
        self.max_threshold = max_threshold

    def class_thresholds(self, pseudo_labels: Tensor, conf: Tensor, num_classes: int) -> Tensor:
        """Per-class thresholds ``(C,)`` (``inf`` for classes absent from the batch)."""
        valid = (pseudo_labels >= 0) & (pseudo_labels < num_classes)
        cls = torch.where(valid, pseudo_labels, torch.full_like(pseudo_labels, num_classes))
        cls, conf = cls.flatten(), conf.flatten()
        # Sort by class, then confidence: conf lies in [0, 1], so class * 2 + conf orders both.
        key = cls.double() * 2 + conf.double()
        sorted_conf = conf[key.argsort()]
        counts = count_values(cls, num_classes + 1)[:num_classes]
        starts = counts.cumsum(0) - counts
        offset = torch.floor((1 - self.portion) * counts.double()).long()
        offset = torch.minimum(offset, (counts - 1).clamp_min(0))
        index = (starts + offset).clamp_max(max(sorted_conf.numel() - 1, 0))
        thresholds = sorted_conf[index]
        inf = torch.full_like(thresholds, float("inf"))
        thresholds = torch.where(counts > 0, thresholds, inf)
        if self.max_threshold is not None:
            thresholds = thresholds.clamp_max(self.max_threshold)
        return thresholds

    def _keep(self, pseudo_labels: Tensor, conf: Tensor, num_classes: int) -> Tensor:
        thresholds = self.class_thresholds(pseudo_labels, conf, num_classes)
        valid = (pseudo_labels >= 0) & (pseudo_labels < num_classes)
        index = torch.where(valid, pseudo_labels, torch.zeros_like(pseudo_labels))
        return valid & (conf >= thresholds[index])

    def extra_repr(self) -> str:
        return (
            f"portion={self.portion}, max_threshold={self.max_threshold}, "
            f"ignore_index={self.ignore_index}"
        )
