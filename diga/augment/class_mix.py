"""ClassMix-style masks and the cross-domain mixture of DiGA's warm-up (and DACS mix)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import (
    check_finite,
    check_images,
    check_label_values,
    check_labels,
    check_ndim,
    check_number,
    check_same_batch,
    check_same_shape,
    check_same_spatial,
    value_checks,
    value_checks_enabled,
)
from diga._ops import constant, host_to_device

__all__ = ["CrossDomainMix", "class_mix_mask", "mix_by_mask"]


def _infer_num_classes(labels: Tensor, is_ignore: Tensor) -> int:
    """Largest valid label + 1 (one host read-back; pass ``num_classes`` to avoid it)."""
    return int(torch.where(is_ignore, 0, labels).max()) + 1


def class_mix_mask(
    labels: Tensor,
    *,
    ignore_index: int = 255,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    num_masks: int | None = None,
) -> Tensor:
    """ClassMix mask from a label map: half of each sample's classes, plus ignore pixels.

    Per sample, ``floor(n / 2)`` of the ``n`` valid classes present are chosen
    uniformly at random (as the paper's ``random.sample(classes, n // 2)``; at
    least one when two or more are present), and the mask is True on their
    pixels and on every ``ignore_index`` pixel. Unlike the paper's script, the
    ignore value is never counted as a class, so an image with one class pastes
    nothing but its ignore pixels, and an all-ignore map is all True.

    Vectorised: a random score per (sample, class), the present classes ranked by
    it, the first ``floor(n / 2)`` kept, and the kept set looked up with a gather
    over the label map. No loop over samples or classes, no host sync (unless
    ``num_classes`` is None: then one read-back finds it).

    Args:
        labels: ``(B, H, W)`` int64 class indices or ``ignore_index``.
        ignore_index: label value that is never a class; its pixels are always in the mask.
        num_classes: number of classes ``C``; inferred from the labels when None.
        generator: random source; a CPU generator with CUDA labels samples on
            the CPU and moves the scores to the labels' device.
        num_masks: draw this many independent masks of the same labels at once,
            ``(num_masks, B, H, W)``: the masks (and draws) of that many calls in a row,
            for the work of about one.

    Returns:
        ``(B, H, W)`` bool mask, True where the pasted image shows (``(num_masks, B, H, W)``
        with ``num_masks``).

    Raises:
        ValueError: labels that are not ``(B, H, W)`` integers, empty, or out of range.

    Example:
        >>> labels = torch.tensor([[[0, 1], [2, 255]]])
        >>> mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(0))
        >>> mask.shape, bool(mask[0, 1, 1]), int(mask[0].sum()) - 1
        (torch.Size([1, 2, 2]), True, 1)
        >>> class_mix_mask(labels, generator=torch.Generator().manual_seed(0), num_masks=2).shape
        torch.Size([2, 1, 2, 2])
    """
    check_number(ignore_index, "ignore_index", integer=True)
    if num_classes is not None:
        check_number(num_classes, "num_classes", low=1, integer=True)
    if num_masks is not None:
        check_number(num_masks, "num_masks", low=1, integer=True)
    return _class_mix_mask(labels, ignore_index, num_classes, generator, "labels", num_masks)


def _scores(shape: tuple[int, ...], generator, device) -> Tensor:
    """``shape = (M, B, C)`` uniform scores, as ``M`` calls of ``torch.rand(B, C)`` in a row draw them (one
    draw on a CPU generator, whose stream is serial); drawn where the generator lives, then moved."""
    gen_device = generator.device if generator is not None else torch.device(device)
    if gen_device.type == "cpu":
        scores = torch.rand(shape, generator=generator, device=gen_device)
    else:
        scores = torch.stack([torch.rand(shape[1:], generator=generator, device=gen_device)
                              for _ in range(shape[0])])
    return host_to_device(scores, device)


def _class_mix_mask(
    labels: Tensor, ignore_index: int, num_classes: int | None, generator, name: str,
    num_masks: int | None = None,
) -> Tensor:
    """:func:`class_mix_mask` with the labels' argument name for errors."""
    with value_checks(False):
        check_labels(labels, name, num_classes=num_classes, ignore_index=ignore_index)  # shape and dtype
    b, device = labels.shape[0], labels.device
    is_ignore = None
    if value_checks_enabled() or num_classes is None:
        is_ignore = labels == ignore_index
        check_label_values(labels, name, num_classes=num_classes, ignore_index=ignore_index, is_ignore=is_ignore)
    if num_classes is None:
        num_classes = _infer_num_classes(labels, is_ignore)

    # Class index per pixel with ignore pixels sent to an extra slot C (labels hold classes and the
    # ignore value: with ignore_index >= C a clamp does it in one pass). Presence and the final
    # lookup work on uint8 viewed as bool: on the CPU, scatter_ from a (broadcast) uint8 source
    # is ~4x faster than from a bool scalar, and a uint8 gather 2x faster than a bool one.
    if ignore_index >= num_classes:
        slot = labels.clamp_max(num_classes)
    else:
        if is_ignore is None:
            is_ignore = labels == ignore_index
        slot = torch.where(is_ignore, constant(num_classes, labels.dtype, device), labels)
    slot = slot.reshape(b, -1)
    one = constant(1, torch.uint8, device)
    present = torch.zeros(b, num_classes + 1, dtype=torch.uint8, device=device)
    present = present.scatter_(1, slot, one.expand(slot.shape))[:, :num_classes].view(torch.bool)

    m = 1 if num_masks is None else num_masks
    scores = _scores((m, b, num_classes), generator, device)
    # Absent classes rank after every present one (scores are in [0, 1)), so the first
    # floor(n / 2) ranks are present classes; the rank of each class is the inverse of the order.
    key = torch.where(present, scores, constant(2.0, scores.dtype, device))
    rank = key.argsort(dim=-1).argsort(dim=-1)
    n_keep = present.sum(dim=1, keepdim=True) // 2
    keep = F.pad((rank < n_keep).view(torch.uint8), (0, 1), value=1)  # (M, B, C + 1): ignore is pasted
    mask = keep.gather(2, slot.expand(m, -1, -1)).view(torch.bool).reshape(m, *labels.shape)
    return mask[0] if num_masks is None else mask


def mix_by_mask(pasted: Tensor, background: Tensor, mask: Tensor) -> Tensor:
    """``pasted`` where ``mask`` is True, ``background`` elsewhere.

    ``mask`` is ``(B, H, W)``; tensors are ``(B, H, W)`` or ``(B, K, H, W)``.

    Example:
        >>> mix_by_mask(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2),
        ...             torch.tensor([[[True, False], [False, True]]]))[0, 0]
        tensor([[1., 0.],
                [0., 1.]])
    """
    if pasted.ndim == 4:
        mask = mask[:, None]
    return torch.where(mask, pasted, background)


class CrossDomainMix(nn.Module):
    """Paste class regions of one image onto another (DiGA's cross-domain mixture).

    Warm-up: ``pasted`` = strongly augmented source, ``background`` = translated
    source, one label map (same geometry, so the source label still holds).
    Self-training (DACS): ``pasted`` = source, ``background`` = augmented target,
    ``background_labels`` = selected pseudo-labels, labels mixed by the same mask.

    Args:
        ignore_index: label value that is never a class (always pasted).
        num_classes: number of classes; inferred from the labels when None.

    Shapes:
        ``forward(pasted (B, 3, H, W), background (B, 3, H, W), pasted_labels (B, H, W),
        background_labels (B, H, W) | None, mask (B, H, W) bool | None, generator)
        -> (mixed (B, 3, H, W), mixed_labels (B, H, W), mask (B, H, W))``.

    Example:
        >>> mix = CrossDomainMix(num_classes=19)
        >>> src = torch.rand(2, 3, 8, 8)
        >>> lbl = torch.randint(0, 19, (2, 8, 8))
        >>> mixed, mixed_lbl, mask = mix(src, torch.rand(2, 3, 8, 8), lbl)
        >>> mixed.shape, bool((mixed_lbl == lbl).all())
        (torch.Size([2, 3, 8, 8]), True)
    """

    def __init__(self, *, ignore_index: int = 255, num_classes: int | None = None) -> None:
        super().__init__()
        check_number(ignore_index, "ignore_index", integer=True)
        if num_classes is not None:
            check_number(num_classes, "num_classes", low=1, integer=True)
        self.ignore_index = int(ignore_index)
        self.num_classes = num_classes

    def forward(
        self,
        pasted: Tensor,
        background: Tensor,
        pasted_labels: Tensor,
        background_labels: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        with value_checks(False):  # shapes here; pixel values where they reach the result, below
            check_images(pasted, "pasted", pixel_range=False)
            check_images(background, "background", pixel_range=False)
        with value_checks(False):  # labels: shape here, values once (in the mask or just below)
            check_labels(
                pasted_labels, "pasted_labels", num_classes=self.num_classes, ignore_index=self.ignore_index
            )
        check_same_shape(pasted, background, "pasted", "background")
        check_same_batch(pasted, pasted_labels, "pasted", "pasted_labels")
        check_same_spatial(pasted, pasted_labels, "pasted", "pasted_labels")
        if background_labels is not None:
            check_labels(
                background_labels,
                "background_labels",
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
            )
            check_same_shape(pasted_labels, background_labels, "pasted_labels", "background_labels")
        if mask is None:
            mask = _class_mix_mask(pasted_labels, self.ignore_index, self.num_classes, generator, "pasted_labels")
        else:
            check_labels(
                pasted_labels, "pasted_labels", num_classes=self.num_classes, ignore_index=self.ignore_index
            )
            check_ndim(mask, "mask", 3, "(B, H, W)")
            if mask.dtype != torch.bool:
                raise ValueError(f"`mask` must be a bool tensor, got dtype {mask.dtype}")
            check_same_shape(mask, pasted_labels, "mask", "pasted_labels")
        mixed = mix_by_mask(pasted, background, mask)
        check_finite(mixed, "pasted` or `background")  # non-finite pixels that reach the result
        if background_labels is None:
            mixed_labels = pasted_labels
        else:
            mixed_labels = mix_by_mask(pasted_labels, background_labels, mask)
        return mixed, mixed_labels, mask

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, num_classes={self.num_classes}"
