"""Masked image consistency (MIC, Hoyer et al., CVPR 2023): the student on a masked target learns the
teacher's pseudo-labels of the whole one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_finite, check_floating, check_ndim, check_number, check_same_batch
from diga.augment.block_mask import block_mask, mask_images
from diga.losses.segmentation_ce import resize_logits

__all__ = ["MaskedConsistency", "masked_consistency_loss"]


def masked_consistency_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    quality_threshold: float = 0.968,
    valid: Tensor | None = None,
) -> Tensor:
    """CE of the student's masked-image logits against the teacher's pseudo-labels, times their quality.

    As MIC (on DAFormer's pseudo-labels): the teacher's argmax on the unmasked target is the
    label of every pixel, and the loss is scaled by the batch's *quality weight*, the share
    of pixels whose teacher probability exceeds ``quality_threshold`` (DACS' 0.968), so a
    teacher that is unsure of most of the image teaches little. Logits are resized to the
    teacher's size first (bilinear). Nothing flows back into the teacher or the weight.

    Args:
        student_logits: ``(B, C, h, w)``, the student on the masked images.
        teacher_logits: ``(B, C, H, W)``, the teacher on the unmasked images.
        quality_threshold: probability a confident pixel exceeds, in ``[0, 1)``.
        valid: optional ``(B, H, W)`` bool, the pixels that count (others weigh 0 in the mean
            and in the quality weight).

    Returns:
        Scalar loss in the student logits' dtype.

    Example:
        >>> t = torch.zeros(1, 2, 4, 4); t[:, 0] = 10.0   # a confident teacher: class 0 everywhere
        >>> s = torch.zeros(1, 2, 4, 4)                    # an unsure student
        >>> masked_consistency_loss(s, t)                  # quality 1 x CE log(2)
        tensor(0.6931)
    """
    check_ndim(student_logits, "student_logits", 4, "(B, C, h, w)")
    check_ndim(teacher_logits, "teacher_logits", 4, "(B, C, H, W)")
    check_floating(student_logits, "student_logits")
    check_same_batch(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(f"`student_logits` and `teacher_logits` must have the same classes, got "
                         f"{student_logits.shape[1]} and {teacher_logits.shape[1]}")
    check_finite(teacher_logits, "teacher_logits")
    check_number(quality_threshold, "quality_threshold", low=0, high=1, high_open=True)
    size = teacher_logits.shape[-2:]
    if valid is not None and (valid.dtype != torch.bool or valid.shape != (teacher_logits.shape[0], *size)):
        raise ValueError(f"`valid` must be a bool (B, H, W) = {(teacher_logits.shape[0], *size)}, "
                         f"got {tuple(valid.shape)} {valid.dtype}")
    acc = torch.float64 if student_logits.dtype == torch.float64 else torch.float32  # float32 at least
    with torch.no_grad():
        prob, pseudo = torch.softmax(teacher_logits.detach().to(acc), dim=1).max(dim=1)
        weight = torch.ones_like(prob) if valid is None else valid.to(acc)
        quality = ((prob > quality_threshold).to(acc) * weight).sum() / weight.numel()
    ce = F.cross_entropy(resize_logits(student_logits, size).to(acc), pseudo, reduction="none")
    loss = (ce * weight).sum() / weight.numel() * quality
    return loss.to(student_logits.dtype)


class MaskedConsistency(nn.Module):
    """MIC as a component: masks the (colour-augmented) target and scores the student on it.

    ``mask(images)`` hides random ``block_size`` blocks with probability ``ratio`` (MIC:
    64-pixel blocks, ratio 0.7, for 512 x 512 and larger crops: scale the block with the crop);
    ``forward(student_logits, teacher_logits)`` is :func:`masked_consistency_loss` times
    ``weight`` (MIC: 1). ``Adapter(masked_consistency=MaskedConsistency())`` adds it to every
    self-training step: the strongly augmented target, masked, joins the student's forward, and
    the EMA teacher's prediction of the clean target is its label.

    Example:
        >>> mic = MaskedConsistency(block_size=8)
        >>> g = torch.Generator().manual_seed(0)
        >>> masked, visible = mic.mask(torch.rand(2, 3, 32, 32, generator=g), generator=g)
        >>> mic(torch.randn(2, 4, 32, 32), torch.randn(2, 4, 32, 32)).shape
        torch.Size([])
    """

    def __init__(self, *, block_size: int = 64, ratio: float = 0.7, weight: float = 1.0,
                 quality_threshold: float = 0.968) -> None:
        super().__init__()
        check_number(block_size, "block_size", low=1, integer=True)
        check_number(ratio, "ratio", low=0, high=1, high_open=True)
        check_number(weight, "weight", low=0)
        check_number(quality_threshold, "quality_threshold", low=0, high=1, high_open=True)
        self.block_size, self.ratio = int(block_size), float(ratio)
        self.weight, self.quality_threshold = float(weight), float(quality_threshold)

    def mask(self, images: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(masked images, visible mask)`` for ``(B, 3, H, W)`` images."""
        b, _, h, w = images.shape
        visible = block_mask((b, h, w), block_size=self.block_size, ratio=self.ratio, device=images.device,
                             generator=generator)
        return mask_images(images, visible), visible

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.weight * masked_consistency_loss(student_logits, teacher_logits,
                                                     quality_threshold=self.quality_threshold, valid=valid)

    def extra_repr(self) -> str:
        return (f"block_size={self.block_size}, ratio={self.ratio}, weight={self.weight}, "
                f"quality_threshold={self.quality_threshold}")
