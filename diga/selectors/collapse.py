"""Collapse watch: the class shares of target predictions against a reference (the warm-up's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from diga._checks import check_labels, check_ndim, check_number
from diga._ops import constant, count_values

__all__ = ["ClassShareMonitor", "ShareStats"]


@dataclass(frozen=True)
class ShareStats:
    """What one :meth:`ClassShareMonitor.update` saw (tensors; nothing is read back to the host).

    Attributes:
        shares: ``(C,)`` running class shares of the labels (an EMA over updates).
        ratio: ``(C,)`` ``shares / reference``, NaN for classes under ``min_share`` in the reference.
        min_ratio: scalar, the smallest finite ratio (NaN without a reference).
        perplexity_ratio: scalar, ``exp(entropy)`` of the running shares over that of the
            reference: the effective number of classes predicted, against the warm-up's
            (NaN without a reference).
        collapsed: scalar bool, ``perplexity_ratio`` fell under the monitor's ``min_ratio``.
    """

    shares: Tensor
    ratio: Tensor
    min_ratio: Tensor
    perplexity_ratio: Tensor
    collapsed: Tensor


def _perplexity(shares: Tensor) -> Tensor:
    """``exp(-sum p log p)`` of ``(C,)`` shares (0 log 0 = 0): the effective number of classes."""
    return torch.special.entr(shares).sum().exp()


class ClassShareMonitor(nn.Module):
    """Flags a self-training collapse: the predictions have narrowed to far fewer classes than the reference.

    Self-training on its own pseudo-labels can drift into predicting a few
    classes everywhere (each step's labels confirm the last step's errors). The
    sign is in the class shares of the target predictions. The monitor keeps a
    running (EMA) share per class over the updates and compares it with the
    reference shares (the warm-up model's, in DiGA): their effective numbers of
    classes, ``exp`` of the entropy of the shares. A collapse is the running one
    falling under ``min_ratio`` times the reference's (one class everywhere:
    1 against the warm-up's 4 or 5). One class shrinking is not a collapse by
    itself: self-training rightly corrects a class the warm-up over-predicted
    (on the built-in weather shift, building fell from 20% to 6% of the target
    predictions while mIoU rose); per-class ratios are reported for the classes
    with at least ``min_share`` of the reference pixels. Everything stays on the
    device (no host sync); read ``collapsed`` only when you log.

    Args:
        num_classes: ``C``.
        momentum: EMA weight of each update's shares (0.05: about the last 20 batches).
        min_share: reference share under which a class gets no ratio (small classes are noisy).
        min_ratio: effective-class-number ratio under which the predictions count as collapsed.
        ignore_index: label value that is not counted.

    Buffers:
        ``reference`` ``(C,)`` shares (all zero until :meth:`set_reference`), ``running`` ``(C,)``,
        ``updates`` (int64 scalar). What :meth:`update` compares against is derived from the
        reference when it is set or loaded (not saved): set it with :meth:`set_reference`.

    Example:
        >>> monitor = ClassShareMonitor(4)
        >>> monitor.set_reference(torch.tensor([[[0, 1, 2, 3]]]))    # four classes, a quarter each
        >>> monitor.update(torch.zeros(1, 1, 4, dtype=torch.long)).collapsed   # one class everywhere
        tensor(True)
    """

    def __init__(
        self,
        num_classes: int,
        *,
        momentum: float = 0.05,
        min_share: float = 0.05,
        min_ratio: float = 0.5,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(momentum, "momentum", low=0, high=1, low_open=True)
        check_number(min_share, "min_share", low=0, high=1)
        check_number(min_ratio, "min_ratio", low=0, high=1)
        check_number(ignore_index, "ignore_index", integer=True)
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.min_share = float(min_share)
        self.min_ratio = float(min_ratio)
        self.ignore_index = int(ignore_index)
        self.register_buffer("reference", torch.zeros(num_classes))
        self.register_buffer("running", torch.zeros(num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        # Derived from the reference once (not saved): the watched classes' reference shares (NaN for
        # the others, so a ratio to them is NaN) and the reference's perplexity (NaN without one).
        self.register_buffer("_watched_reference", torch.zeros(num_classes), persistent=False)
        self.register_buffer("_reference_perplexity", torch.zeros(()), persistent=False)
        self._derive()

    @torch.no_grad()
    def _derive(self) -> None:
        """Refresh what :meth:`update` compares against from ``reference``."""
        ref = self.reference
        nan = constant(float("nan"), ref.dtype, ref.device)
        watched = ref >= max(self.min_share, 1e-12)
        self._watched_reference.copy_(torch.where(watched, ref.clamp_min(1e-12), nan))
        self._reference_perplexity.copy_(torch.where(ref.sum() > 0, _perplexity(ref), nan))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._derive()

    def _shares(self, labels: Tensor) -> Tensor:
        check_labels(labels, "labels", num_classes=self.num_classes, ignore_index=self.ignore_index)
        if self.ignore_index >= self.num_classes:  # classes and the ignore value: one clamp
            idx = labels.clamp_max(self.num_classes)
        else:
            idx = torch.where(labels == self.ignore_index, constant(self.num_classes, labels.dtype, labels.device),
                              labels)
        counts = count_values(idx, self.num_classes + 1)[: self.num_classes].float()
        return counts / counts.sum().clamp_min(1)

    @torch.no_grad()
    def set_reference(self, labels: Tensor | None = None, *, counts: Tensor | None = None) -> None:
        """Set the reference shares from labels ``(B, H, W)`` or from per-class pixel ``counts`` ``(C,)``;
        the running shares start again."""
        if (labels is None) == (counts is None):
            raise ValueError("pass exactly one of `labels` and `counts`")
        if counts is not None:
            check_ndim(counts, "counts", 1, "(C,)")
            if counts.shape[0] != self.num_classes:
                raise ValueError(f"`counts` must be (C,) = ({self.num_classes},), got {tuple(counts.shape)}")
            counts = counts.to(self.reference.device, torch.float32)
            shares = counts / counts.sum().clamp_min(1)
        else:
            shares = self._shares(labels.to(self.reference.device))
        self.reference.copy_(shares)
        self.running.zero_()
        self.updates.zero_()
        self._derive()

    @property
    def has_reference(self) -> Tensor:
        """Scalar bool tensor: a reference has been set (its shares are not all zero)."""
        return self.reference.sum() > 0

    @torch.no_grad()
    def update(self, labels: Tensor) -> ShareStats:
        """Fold this batch's class shares into the running shares and compare them with the reference.

        Args:
            labels: ``(B, H, W)`` predicted (or pseudo-) labels of target images.
        """
        check_ndim(labels, "labels", 3, "(B, H, W)")
        shares = self._shares(labels.to(self.running.device))
        # The first update sets the running shares: a lerp with weight 1 is exactly its end.
        dev = self.running.device
        weight = torch.where(self.updates == 0, constant(1.0, shares.dtype, dev),
                             constant(self.momentum, shares.dtype, dev))
        self.running.lerp_(shares, weight)
        self.updates.add_(1)
        ratio = self.running / self._watched_reference  # NaN for classes not watched
        min_ratio = ratio.sort().values[0]  # NaN sorts last: the smallest ratio, NaN if none is watched
        perplexity_ratio = _perplexity(self.running) / self._reference_perplexity  # NaN without a reference
        collapsed = perplexity_ratio < self.min_ratio  # False without a reference (NaN)
        return ShareStats(shares=self.running.clone(), ratio=ratio, min_ratio=min_ratio,
                          perplexity_ratio=perplexity_ratio, collapsed=collapsed)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, momentum={self.momentum}, min_share={self.min_share}, "
                f"min_ratio={self.min_ratio}")
