"""ClassMix-style masks and the cross-domain mixture of DiGA's warm-up (and DACS mix)."""

from __future__ import annotations

import torch
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
)
from diga._ops import host_to_device

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

    Returns:
        ``(B, H, W)`` bool mask, True where the pasted image shows.

    Raises:
        ValueError: labels that are not ``(B, H, W)`` integers, empty, or out of range.

    Example:
        >>> labels = torch.tensor([[[0, 1], [2, 255]]])
        >>> mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(0))
        >>> mask.shape, bool(mask[0, 1, 1]), int(mask[0].sum()) - 1
        (torch.Size([1, 2, 2]), True, 1)
    """
    check_number(ignore_index, "ignore_index", integer=True)
    if num_classes is not None:
        check_number(num_classes, "num_classes", low=1, integer=True)
    return _class_mix_mask(labels, ignore_index, num_classes, generator, "labels")


def _class_mix_mask(
    labels: Tensor, ignore_index: int, num_classes: int | None, generator, name: str
) -> Tensor:
    """:func:`class_mix_mask` with the labels' argument name for errors."""
    with value_checks(False):
        check_labels(labels, name, num_classes=num_classes, ignore_index=ignore_index)  # shape and dtype
    is_ignore = labels == ignore_index
    check_label_values(labels, name, num_classes=num_classes, ignore_index=ignore_index, is_ignore=is_ignore)
    if num_classes is None:
        num_classes = _infer_num_classes(labels, is_ignore)
    b = labels.shape[0]
    device = labels.device

    # Class index per pixel with ignore pixels sent to an extra slot C. Presence and the final
    # lookup work on uint8 viewed as bool: on the CPU, scatter_ from a (broadcast) uint8 source
    # is ~4x faster than from a bool scalar, and a uint8 gather 2x faster than a bool one.
    slot = torch.where(is_ignore, num_classes, labels).reshape(b, -1)
    one = torch.ones((), dtype=torch.uint8, device=device)
    present = torch.zeros(b, num_classes + 1, dtype=torch.uint8, device=device)
    present = present.scatter_(1, slot, one.expand(slot.shape))[:, :num_classes].view(torch.bool)

    if generator is not None and generator.device != device:
        scores = host_to_device(torch.rand(b, num_classes, generator=generator, device=generator.device), device)
    else:
        scores = torch.rand(b, num_classes, generator=generator, device=device)
    # Absent classes rank after every present one (scores are in [0, 1)).
    scores = torch.where(present, scores, torch.full_like(scores, 2.0))
    order = scores.argsort(dim=1)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_classes, device=device).expand(b, -1).contiguous()
    )
    n_keep = present.sum(dim=1, keepdim=True) // 2
    keep = (rank < n_keep) & present
    keep = torch.cat([keep, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1).view(torch.uint8)
    return keep.gather(1, slot).view(torch.bool).reshape(labels.shape)


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
