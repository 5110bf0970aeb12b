"""``param_groups``: the paper's optimiser groups (encoder at ``lr``, the rest faster) for any supported model."""

from __future__ import annotations

import torch  # noqa: F401 - the doctest's namespace
from torch import nn

from diga._checks import check_number
from diga._wrap import unwrap_model
from diga.models.features import FeatureSegmenter

__all__ = ["param_groups"]


def param_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
    """Two optimiser groups: the encoder at ``lr``, everything else at ``head_lr_mult * lr``.

    DiGA (after DeepLab v2) trains the decoder / head ten times faster than the
    pretrained encoder. The encoder is ``model.encoder`` (smp models,
    :class:`TimmSegmenter`'s timm backbone, :class:`DeepLabV2`'s ResNet). DDP,
    ``torch.compile`` and :class:`FeatureSegmenter` wrappers are looked through.
    Only trainable parameters (``requires_grad``) are listed.

    Args:
        model: a supported model, possibly wrapped.
        lr: the encoder's learning rate.
        head_lr_mult: the rest's learning rate over ``lr``.

    Returns:
        ``[{"params": [...], "lr": lr}, {"params": [...], "lr": lr * head_lr_mult}]``.

    Raises:
        ValueError: the model has no ``encoder`` submodule; bad ``lr`` or multiplier.

    Example:
        >>> from diga.models import create_model
        >>> model = create_model("fpn", num_classes=2, encoder_name="resnet18")
        >>> groups = param_groups(model, 0.01)
        >>> [g["lr"] for g in groups]
        [0.01, 0.1]
        >>> opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    """
    check_number(lr, "lr", low=0)
    check_number(head_lr_mult, "head_lr_mult", low=0)
    inner = unwrap_model(model)
    if isinstance(inner, FeatureSegmenter):
        inner = unwrap_model(inner.model)
    encoder = getattr(inner, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(
            f"`model` must have an `encoder` submodule (smp models, TimmSegmenter, DeepLabV2), "
            f"got {type(inner).__name__}"
        )
    encoder_ids = {id(p) for p in encoder.parameters()}
    params = [p for p in inner.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in encoder_ids], "lr": lr},
        {"params": [p for p in params if id(p) not in encoder_ids], "lr": lr * head_lr_mult},
    ]
