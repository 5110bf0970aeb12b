"""``param_groups``: the paper's optimiser groups (encoder at ``lr``, the rest faster) for any supported model,
optionally with layer-wise learning-rate decay through the encoder's layers (ViTs)."""

from __future__ import annotations

import torch  # noqa: F401 - the doctest's namespace
from torch import nn

from diga._checks import check_number
from diga._wrap import unwrap_model
from diga.models.features import FeatureSegmenter

__all__ = ["param_groups"]


def _layered(encoder: nn.Module) -> nn.Module | None:
    """The module of ``encoder`` that carries timm's ``group_matcher`` (itself, or a features wrapper's ``model``)."""
    for module in (encoder, getattr(encoder, "model", None)):
        if isinstance(module, nn.Module) and callable(getattr(module, "group_matcher", None)):
            return module
    return None


def _encoder_layer_groups(encoder: nn.Module, lr: float, layer_decay: float, trainable: set[int]) -> list[dict]:
    """One group per encoder layer: ``lr * layer_decay ** (top - layer)``, layers numbered by timm's matcher."""
    from timm.optim import param_groups_layer_decay

    layered = _layered(encoder)
    if layered is None:
        raise ValueError(
            f"`layer_decay` needs an encoder with layers timm can number (a `group_matcher`: ViT, DeiT, EVA, "
            f"DINOv2 through TimmSegmenter), got an encoder {type(encoder).__name__} without one; "
            f"pass layer_decay=None"
        )
    # weight decay is the optimiser's business: one group per layer, 1-d parameters not split off
    groups = param_groups_layer_decay(layered, weight_decay=0.0, weight_decay_exclude_1d=False,
                                      layer_decay=float(layer_decay))
    out = [{"params": [p for p in g["params"] if id(p) in trainable], "lr": lr * g["lr_scale"]} for g in groups]
    inside = {id(p) for p in layered.parameters()}
    outside = [p for p in encoder.parameters() if id(p) in trainable and id(p) not in inside]
    if outside:  # encoder parameters outside the numbered module: the top layer's rate
        out.append({"params": outside, "lr": lr})
    return [g for g in out if g["params"]]


def param_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0, *,
                 layer_decay: float | None = None) -> list[dict]:
    """Optimiser groups: the encoder at ``lr``, everything else at ``head_lr_mult * lr``.

    DiGA (after DeepLab v2) trains the decoder / head ten times faster than the
    pretrained encoder. The encoder is ``model.encoder`` (smp models,
    :class:`TimmSegmenter`'s timm backbone, :class:`DeepLabV2`'s ResNet). DDP,
    ``torch.compile`` and :class:`FeatureSegmenter` wrappers are looked through.
    Only trainable parameters (``requires_grad``) are listed.

    With ``layer_decay`` (BEiT's layer-wise learning-rate decay, the usual way to
    fine-tune a pretrained ViT), the encoder is split by layer as timm numbers it
    (``group_matcher``; :func:`timm.optim.param_groups_layer_decay`): for a ViT the
    stem (patch embedding, class/register tokens, position embedding) is layer 0 and
    block ``i`` layer ``i + 1``. Layer ``k`` of ``L`` (the top one) trains at
    ``lr * layer_decay ** (L - k)``: the last block kept at ``lr``, the stem at
    ``lr * layer_decay ** depth`` (VFM-UDA's convention). The head stays at
    ``head_lr_mult * lr``.

    Args:
        model: a supported model, possibly wrapped.
        lr: the encoder's learning rate (its top layer's, with ``layer_decay``).
        head_lr_mult: the rest's learning rate over ``lr``.
        layer_decay: per-layer factor in ``(0, 1]``; None: one encoder group.

    Returns:
        ``[{"params": [...], "lr": lr}, {"params": [...], "lr": lr * head_lr_mult}]``; with
        ``layer_decay``, one encoder group per layer (bottom first), then the head's group.

    Raises:
        ValueError: the model has no ``encoder`` submodule; bad ``lr``, multiplier or
            ``layer_decay``; ``layer_decay`` for an encoder whose layers timm cannot number
            (a CNN's ``features_only`` wrapper, an smp encoder).

    Example:
        >>> from diga.models import create_model
        >>> model = create_model("fpn", num_classes=2, encoder_name="resnet18")
        >>> groups = param_groups(model, 0.01)
        >>> [g["lr"] for g in groups]
        [0.01, 0.1]
        >>> opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
        >>> vit = create_model("timm", num_classes=2, encoder_name="vit_small_patch14_dinov2", depth=3)
        >>> [g["lr"] for g in param_groups(vit, 1.0, layer_decay=0.5)]  # stem, 3 blocks, head
        [0.125, 0.25, 0.5, 1.0, 10.0]
    """
    check_number(lr, "lr", low=0)
    check_number(head_lr_mult, "head_lr_mult", low=0)
    if layer_decay is not None:
        check_number(layer_decay, "layer_decay", low=0, high=1, low_open=True)
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
    head = {"params": [p for p in params if id(p) not in encoder_ids], "lr": lr * head_lr_mult}
    if layer_decay is None:
        return [{"params": [p for p in params if id(p) in encoder_ids], "lr": lr}, head]
    trainable = {id(p) for p in params}
    return [*_encoder_layer_groups(encoder, lr, layer_decay, trainable), head]
