"""Inference: multi-scale prediction, and self-contained model files for ``diga predict``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_images, check_number
from diga.losses import resize_logits
from diga.teacher import unwrap_model

__all__ = ["export_model", "load_model", "predict_logits"]

FORMAT = "diga-model/1"


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, scales: Sequence[float] = (1.0, 0.5)) -> Tensor:
    """Multi-scale prediction fused by element-wise max of the logits, as in the paper.

    Each scale's input is resized bilinearly (``align_corners=True``), its
    logits resized back to ``(H, W)`` the same way, and the maxima taken. The
    model runs in eval mode (its mode is restored afterwards).

    Args:
        model: a :class:`~diga.models.FeatureSegmenter` (``(logits, features)``
            from RGB in ``[0, 1]``) or any model returning logits.
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        scales: resize factors (the paper: full and half resolution).

    Returns:
        ``(B, C, H, W)`` float32 fused logits.

    Example:
        >>> net = nn.Conv2d(3, 4, 1)
        >>> predict_logits(net, torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 4, 8, 8])
    """
    if not scales:
        raise ValueError("`scales` must name at least one scale, got an empty sequence")
    for s in scales:
        check_number(s, "scales", low=0, low_open=True)
    check_images(images, "images")
    was_training = model.training
    model.eval()
    try:
        h, w = images.shape[-2:]
        fused = None
        for s in scales:
            x = images
            if s != 1.0:
                size = (max(1, round(h * s)), max(1, round(w * s)))
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=True)
            out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            logits = resize_logits(logits, (h, w)).float()
            fused = logits if fused is None else torch.maximum(fused, logits)
    finally:
        model.train(was_training)
    return fused


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_index: int = 255,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model file that ``diga predict`` / :func:`load_model` rebuild with no other config.

    It holds the architecture's config (``create_model``'s ``diga_config``), the
    weights, the normalisation mean/std, the class names and palette.

    Args:
        model: a :class:`~diga.models.FeatureSegmenter` whose wrapped model was
            built by :func:`~diga.create_model` (or an :class:`~diga.Adapter`: its student).

    Raises:
        ValueError: when the model carries no ``diga_config`` (not built by create_model).
    """
    from diga.adapter import Adapter
    from diga.engine.checkpoint import atomic_save

    if isinstance(model, Adapter):
        model = model.student
    segmenter = unwrap_model(model)
    inner = getattr(segmenter, "model", None)
    config = getattr(inner, "diga_config", None)
    if config is None:
        raise ValueError(
            "`model` must be built by diga.create_model (it carries diga_config) to be exported; "
            "save its state_dict yourself for other models"
        )
    if classes is not None and palette is not None and len(palette) != len(classes):
        raise ValueError(f"`palette` must have one colour per class ({len(classes)}), got {len(palette)}")
    payload = {
        "format": FORMAT,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
        "mean": segmenter.mean.detach().cpu().flatten().tolist(),
        "std": segmenter.std.detach().cpu().flatten().tolist(),
        "classes": list(classes) if classes is not None else None,
        "palette": [list(map(int, c)) for c in palette] if palette is not None else None,
        "ignore_index": int(ignore_index),
        "extra": dict(extra or {}),
    }
    return atomic_save(payload, path)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`export_model`: ``(FeatureSegmenter in eval mode, metadata)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a diga model file.
    """
    from diga.engine.checkpoint import load_checkpoint
    from diga.models import model_from_config, with_features

    payload = load_checkpoint(path, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a diga model file (expected format {FORMAT!r}); training runs write "
            "<work-dir>/model.pt"
        )
    inner = model_from_config(payload["config"])
    inner.load_state_dict(payload["state_dict"])
    model = with_features(inner, mean=payload["mean"], std=payload["std"]).to(device).eval()
    meta = {k: payload[k] for k in ("config", "classes", "palette", "ignore_index", "extra")}
    return model, meta
