"""Symmetric cross-view knowledge distillation (DiGA, Sec. 3.2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diga._checks import (
    check_finite,
    check_floating,
    check_labels,
    check_ndim,
    check_nonempty,
    check_number,
    check_same_shape,
)
from diga._ops import resize_labels

__all__ = ["SymmetricKDLoss", "symmetric_kd_loss"]


def _acc(x: Tensor) -> Tensor:
    """Upcast to the accumulation dtype: float32, or float64 when given float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _scaled(x: Tensor, temperature: float) -> Tensor:
    x = _acc(x)
    return x if temperature == 1.0 else x / temperature


class _SymmetricKD(torch.autograd.Function):
    """Fused soft cross-entropy over both view pairs; the gradient is made in forward.

    For each term, ``d/ds [T^2 CE(softmax(t/T), log_softmax(s/T))] = T (softmax(s/T) - softmax(t/T))``,
    and ``softmax(s/T) = exp(log_softmax(s/T))``, which forward needs anyway. So forward writes
    ``q - p`` per view into one buffer the size of the student logits and backward only scales
    it: no log-probabilities, products or per-view copies are kept, and backward is one pass.
    """

    @staticmethod
    def forward(ctx, student, teacher, weight_map, augmented_weight, temperature, denominator):
        b = student.shape[0] // 2
        grad = torch.empty(student.shape, dtype=_acc(student).dtype, device=student.device)
        per_pixel = None
        # (student view, teacher view, weight): the clean teacher supervises the augmented student.
        for s_sl, t_sl, w in ((slice(b, None), slice(None, b), 1.0),
                              (slice(None, b), slice(b, None), augmented_weight)):
            p = torch.softmax(_scaled(teacher[t_sl], temperature), dim=1)
            log_q = torch.log_softmax(_scaled(student[s_sl], temperature), dim=1)
            torch.exp(log_q, out=grad[s_sl])
            grad[s_sl].sub_(p)
            if w != 1.0:
                grad[s_sl].mul_(w)
            term = p.mul_(log_q).sum(dim=1)  # sum_c p log q, (B, H, W); the sign is taken once, below
            per_pixel = term if per_pixel is None else per_pixel.add_(term, alpha=w)
            del p, log_q
        if weight_map is not None:
            per_pixel.mul_(weight_map)
            grad.mul_(weight_map.repeat(2, 1, 1).unsqueeze(1))
        loss = per_pixel.sum() * (-(temperature**2) / denominator)  # negation is exact: the same loss
        ctx.save_for_backward(grad)
        ctx.scale = temperature / denominator
        ctx.student_dtype = student.dtype
        return loss.to(student.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad * (_acc(grad_output) * ctx.scale)).to(ctx.student_dtype), None, None, None, None, None


def symmetric_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    augmented_weight: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = 255,
) -> Tensor:
    """Cross-view distillation over two stacked views ``[clean; augmented]``.

    The teacher's softmax on the clean view supervises the student's
    log-softmax on the augmented view (weight 1); the teacher on the augmented
    view supervises the student on the clean view (weight ``augmented_weight``).
    Each term is a soft cross-entropy summed over classes and averaged over
    pixels, and the sum is scaled by ``temperature ** 2``.

    Without ``labels`` every pixel counts, exactly as the paper's
    ``distillation_loss``. With ``labels``, pixels equal to ``ignore_index`` are
    left out of both terms (the average runs over valid pixels; zero valid pixels
    give a loss of 0 with a zero gradient). Labels of another size than the
    logits are resized to the logits' grid by nearest neighbour.

    No gradient reaches ``teacher_logits``. Memory: a fused autograd function
    that keeps one tensor the size of the student logits between forward and
    backward (the gradient, made in forward from the softmaxes it computes
    anyway), against the log-probabilities, teacher probabilities and
    products the plain formulation keeps. Internal arithmetic is float32; the
    loss has the logits' dtype.

    Args:
        student_logits: ``(2B, C, H, W)``, clean views first, then augmented.
        teacher_logits: same shape; never receives gradient.
        labels: optional ``(B, H', W')`` int64 labels of the clean view.
        augmented_weight: weight of the term supervised by the augmented view.
        temperature: softmax temperature ``T > 0`` on both sides.
        ignore_index: label value left out when ``labels`` is given.

    Returns:
        Scalar loss.

    Raises:
        ValueError: wrong rank, odd or empty batch, shapes that differ between
            student and teacher, labels whose batch is not ``B`` or whose values are
            out of range, non-finite logits.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s, t = torch.randn(2, 4, 19, 8, 8, generator=g)
        >>> symmetric_kd_loss(s, t).shape
        torch.Size([])
    """
    check_number(augmented_weight, "augmented_weight", low=0)
    check_number(temperature, "temperature", low=0, low_open=True)
    check_ndim(student_logits, "student_logits", 4, "(2B, C, H, W)")
    check_ndim(teacher_logits, "teacher_logits", 4, "(2B, C, H, W)")
    check_floating(student_logits, "student_logits")
    check_floating(teacher_logits, "teacher_logits")
    check_nonempty(student_logits, "student_logits")
    if student_logits.shape[0] % 2:
        raise ValueError(
            "`student_logits` must stack two views of each image on dim 0, (2B, C, H, W), "
            f"got an odd batch: {tuple(student_logits.shape)}"
        )
    check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    check_finite(student_logits, "student_logits", teacher_logits, "teacher_logits")
    b = student_logits.shape[0] // 2
    h, w = student_logits.shape[-2:]

    teacher_logits = teacher_logits.detach()
    weight_map = None
    denominator = float(b * h * w)
    if labels is not None:
        check_labels(labels, "labels", num_classes=student_logits.shape[1], ignore_index=ignore_index)
        if labels.shape[0] != b:
            raise ValueError(
                f"`labels` must be (B, H, W) with B = {b} (half of student_logits' batch), "
                f"got shape {tuple(labels.shape)}"
            )
        labels = resize_labels(labels, (h, w))
        weight_map = (labels != ignore_index).to(_acc(student_logits).dtype)
        # Tensor denominator keeps the host out of the loop; clamp makes 0 valid pixels -> loss 0.
        denominator = weight_map.sum().clamp_min(1.0)
    return _SymmetricKD.apply(
        student_logits, teacher_logits, weight_map, float(augmented_weight), float(temperature),
        denominator,
    )


class SymmetricKDLoss(nn.Module):
    """Module form of :func:`symmetric_kd_loss`.

    Args:
        augmented_weight: weight of the term the augmented view's teacher
            supervises (the paper's ``scale=0.5``).
        temperature: softmax temperature; the loss is scaled by ``T ** 2``.
        ignore_index: label value left out when ``labels`` are passed.

    Shapes:
        ``forward(student_logits (2B, C, H, W), teacher_logits (2B, C, H, W),
        labels (B, H, W) | None) -> ()``.

    Example:
        >>> loss_fn = SymmetricKDLoss(augmented_weight=0.5)
        >>> s = torch.randn(4, 19, 16, 16, requires_grad=True)
        >>> loss = loss_fn(s, torch.randn(4, 19, 16, 16))
        >>> loss.backward()
        >>> s.grad.shape
        torch.Size([4, 19, 16, 16])
    """

    def __init__(
        self, *, augmented_weight: float = 0.5, temperature: float = 1.0, ignore_index: int = 255
    ) -> None:
        super().__init__()
        check_number(augmented_weight, "augmented_weight", low=0)
        check_number(temperature, "temperature", low=0, low_open=True)
        check_number(ignore_index, "ignore_index", integer=True)
        self.augmented_weight = float(augmented_weight)
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        return symmetric_kd_loss(
            student_logits,
            teacher_logits,
            labels,
            augmented_weight=self.augmented_weight,
            temperature=self.temperature,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return (
            f"augmented_weight={self.augmented_weight}, temperature={self.temperature}, "
            f"ignore_index={self.ignore_index}"
        )
