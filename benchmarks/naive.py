"""Naive twins of diga's components, written the way DiGA's released scripts are.

Each function computes what the diga component computes, in the style of the
paper's training scripts (``train_DiGA_gta2city_*.py``, ``calc_centroids.py``,
``util/loss.py``, ``util/utils.py``): Python loops over samples and classes,
``torch.unique(...).tolist()`` and ``random.sample``, ``.item()`` per class,
per-class mask assignment, one ``torch.norm`` per class, one assignment per
parameter. They are the baselines of ``benchmarks/test_components.py``, which
first checks that each gives ours' results on the same inputs.

Where the paper's semantics differ from ours (the centroid EMA step, see
:func:`centroid_update`), the twin follows *our* semantics in the paper's
style, so that results can be compared and the timing isolates the style.
Nothing here hard-codes a device: tensors are made where the inputs live.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "centroid_distances",
    "centroid_update",
    "centroid_weights",
    "class_mix",
    "distillation_loss",
    "dynamic_select",
    "ema_update",
    "ema_update_lerp_loop",
    "nearest_centroid",
    "one_hot_labels",
]


# ------------------------------------------------------ cross-domain mixture
def class_mix(
    labels: Tensor,
    pasted: Tensor,
    background: Tensor,
    *,
    chosen: list[list[int]] | None = None,
    ignore_index: int = 255,
    rng: random.Random | None = None,
) -> tuple[Tensor, Tensor]:
    """ClassMix mask and mixed images, per sample and per class (the warm-up's mixture).

    Per image: ``torch.unique(label).tolist()``, ``random.sample`` of half of
    it (the ignore value counts as a class, as in the scripts), the ignore
    value added, then ``mask[idx][label == c] = 1`` for each chosen class and
    ``mixed[idx] = background * (1 - mask) + pasted * mask``. ``chosen`` skips
    the draw and uses the given classes per sample (the benchmark's equality
    check: ours draws, the twin rebuilds the mask from ours' classes).

    Example:
        >>> labels = torch.tensor([[[0, 1], [2, 255]]])
        >>> mixed, mask = class_mix(labels, torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2),
        ...                         chosen=[[1]])
        >>> mask[0].tolist(), mixed[0, 0].tolist()
        ([[0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]])
    """
    rng = random if rng is None else rng
    mask = torch.zeros(labels.size(), device=labels.device)
    for idx in range(labels.size()[0]):
        if chosen is None:
            label_list = torch.unique(labels[idx]).tolist()
            classes_select = rng.sample(label_list, len(label_list) // 2)
        else:
            classes_select = list(chosen[idx])
        if ignore_index not in classes_select:
            classes_select.append(ignore_index)
        for cls in classes_select:
            mask[idx][labels[idx] == cls] = 1
    mixed = torch.zeros(background.size(), device=background.device, dtype=background.dtype)
    if not torch.all(torch.eq(labels, ignore_index)):
        for idx in range(background.size()[0]):
            mixed[idx] = torch.mul(background[idx], 1 - mask[idx]) + torch.mul(pasted[idx], mask[idx])
    return mixed, mask


# ------------------------------------------------------------ distillation
def distillation_loss(teacher_out: Tensor, student_out: Tensor, scale: float = 0.5) -> Tensor:
    """Symmetric cross-view KD as ``util/loss.py``: loop over (teacher view, student view) pairs.

    Example:
        >>> z = torch.zeros(2, 4, 1, 1)
        >>> round(distillation_loss(z, z).item(), 4)  # 1.5 * log(4)
        2.0794
    """
    students = student_out.chunk(2)
    teachers = F.softmax(teacher_out, dim=1).detach().chunk(2)
    total = 0
    for iq, q in enumerate(teachers):
        for v, student in enumerate(students):
            if v == iq:
                continue  # never the same view on both sides
            per_pixel = torch.sum(-q * F.log_softmax(student, dim=1), dim=1)
            if iq == 1:
                per_pixel = per_pixel * scale
            total = total + per_pixel.mean()
    return total


# ---------------------------------------------------------------- centroids
def one_hot_labels(labels: Tensor, num_classes: int) -> Tensor:
    """``(B, 1, h, w)`` float labels -> ``(B, C + 1, h, w)`` one-hot; ignore goes to the last slot.

    Example:
        >>> one_hot_labels(torch.tensor([[[[0., 255.]]]]), 2)[0, :, 0].tolist()
        [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    b, _, h, w = labels.size()
    out = torch.zeros(b, num_classes + 1, h, w, device=labels.device)
    ids = torch.where(labels < num_classes, labels, torch.full_like(labels, num_classes))
    return out.scatter_(1, ids.long(), 1)


def centroid_distances(centroids: Tensor, features: Tensor) -> Tensor:
    """``feat_centroid_distance``: one ``torch.norm`` of ``centroid - features`` per class.

    Example:
        >>> centroid_distances(torch.tensor([[0., 0.], [3., 4.]]), torch.zeros(1, 2, 1, 1)).flatten()
        tensor([0., 5.])
    """
    n, _, h, w = features.shape
    num_classes = centroids.shape[0]
    out = -torch.ones((n, num_classes, h, w), device=features.device, dtype=features.dtype)
    for i in range(num_classes):
        centroid = centroids[i].detach().reshape(-1, 1, 1).expand(-1, h, w)
        out[:, i, :, :] = torch.norm(centroid - features, 2, dim=1)
    return out


def centroid_weights(centroids: Tensor, features: Tensor) -> Tensor:
    """``get_centroid_weight``: ``softmax(-distance)`` over classes."""
    return F.softmax(-centroid_distances(centroids, features), dim=1)


def nearest_centroid(centroids: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest class ``(B, h, w)`` and the weights it came from, ``(B, C, h, w)``."""
    weights = centroid_weights(centroids, features)
    return weights.max(1)[1], weights


def centroid_update(
    centroids: Tensor,
    initialized: Tensor,
    features: Tensor,
    labels: Tensor,
    logits: Tensor,
    *,
    momentum: float = 1e-4,
    min_pixels: int = 5,
    ignore_index: int = 255,
) -> list[int]:
    """One EMA step of the ``(C, D)`` centroids towards this batch's class means, in place.

    The paper's ``calculate_mean_vector`` + ``update_objective_SingleVector``
    style: labels resized by ``F.interpolate(..., mode="nearest")``, one-hot
    label and prediction maps multiplied, then a loop over classes and samples
    with an ``.item()`` per (sample, class), and one assignment per class.
    Semantics are ours (one step per class with the batch mean; classes under
    ``min_pixels`` pixels left alone; an unseen class is set, not averaged);
    the paper steps once per (image, class) vector instead.

    Returns:
        The classes that moved.
    """
    num_classes = centroids.shape[0]
    b, d, h, w = features.shape
    newlabels = labels.reshape(b, 1, *labels.shape[-2:]).float()
    newlabels = F.interpolate(newlabels, size=(h, w), mode="nearest")
    pred = F.softmax(logits, dim=1).argmax(dim=1, keepdim=True)
    if pred.shape[-2:] != (h, w):
        pred = F.interpolate(pred.float(), size=(h, w), mode="nearest")
    outputs_pred = one_hot_labels(newlabels, num_classes) * one_hot_labels(pred.float(), num_classes)
    moved = []
    for t in range(num_classes):
        total = torch.zeros(d, device=features.device)
        count = 0
        for n in range(b):
            pixels = outputs_pred[n][t].sum().item()
            if pixels == 0:
                continue
            total += (features[n] * outputs_pred[n][t]).sum(dim=(1, 2))
            count += pixels
        if count < min_pixels:
            continue
        vector = total / count
        if initialized[t].item():
            centroids[t] = centroids[t] * (1 - momentum) + momentum * vector
        else:
            centroids[t] = vector
            initialized[t] = True
        moved.append(t)
    return moved


def dynamic_select(
    pseudo_labels: Tensor, features: Tensor, centroids: Tensor, *, ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """The self-training script's bilateral consensus.

    ``get_centroid_weight`` (one ``torch.norm`` per class), every class channel
    upsampled bilinearly (``align_corners=True``) to the label size, argmax,
    and the disagreeing pseudo-labels set to ``ignore_index``.

    Returns:
        The selected labels ``(B, H, W)`` and the upsampled weights ``(B, C, H, W)``.
    """
    weights = centroid_weights(centroids, features)
    weights = F.interpolate(weights, size=pseudo_labels.shape[-2:], mode="bilinear", align_corners=True)
    feat_pseudo = weights.max(1, keepdim=True)[1].squeeze(1)
    selected = pseudo_labels.clone()
    selected[pseudo_labels != feat_pseudo] = ignore_index
    return selected, weights


# ------------------------------------------------------------------ teacher
@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, iteration: int, momentum: float = 0.999) -> None:
    """``update_teacher_params``: "true average" ramp, one assignment per parameter.

    Buffers are left alone, as in the scripts.

    Example:
        >>> t, s = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> ema_update(t, s, iteration=0)
        >>> bool(torch.equal(t.weight, s.weight))
        True
    """
    alpha = min(1 - 1 / (iteration + 1), momentum)
    for teacher_param, student_param in zip(teacher.parameters(), student.parameters(), strict=True):
        teacher_param.data[:] = alpha * teacher_param[:].data[:] + (1 - alpha) * student_param[:].data[:]


@torch.no_grad()
def ema_update_lerp_loop(teacher: nn.Module, student: nn.Module, weight: float) -> None:
    """The tightest per-parameter loop: one in-place ``lerp_`` per parameter (no temporaries)."""
    for teacher_param, student_param in zip(teacher.parameters(), student.parameters(), strict=True):
        teacher_param.lerp_(student_param, weight)
