"""Inference: multi-scale prediction, and self-contained model files for ``diga predict``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_images, check_number
from diga._io import atomic_write_bytes, load_checkpoint
from diga._wrap import unwrap_model
from diga.losses import resize_logits

__all__ = ["export_model", "load_model", "predict_logits"]

FORMAT = "diga-model/2"  # safetensors, metadata as JSON
LEGACY_FORMAT = "diga-model/1"  # diga 0.1: a torch.save pickle


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

    The file is safetensors (weights as raw tensors, nothing that runs when
    read: safe to share and to open from anyone); its metadata header holds,
    as JSON under the key ``"diga"``, the architecture's config
    (``create_model``'s ``diga_config``), the normalisation mean/std, the class
    names, palette, ignore index and ``extra``.

    Args:
        model: a :class:`~diga.models.FeatureSegmenter` whose wrapped model was
            built by :func:`~diga.create_model`, possibly wrapped (DDP, ``torch.compile``): an
            :class:`~diga.Adapter`'s ``adapter.student``.
        path: the file to write (atomically), by convention ``*.safetensors``.

    Raises:
        ValueError: when the model carries no ``diga_config`` (not built by create_model),
            or the palette does not have one colour per class.

    Example:
        >>> import tempfile, pathlib, diga
        >>> net = diga.with_features(diga.create_model("unet", num_classes=3, encoder_name="resnet18"))
        >>> path = export_model(net, pathlib.Path(tempfile.mkdtemp()) / "model.safetensors", classes=["a", "b", "c"])
        >>> model, meta = load_model(path)
        >>> meta["classes"], meta["config"]["name"]
        (['a', 'b', 'c'], 'unet')
    """
    from safetensors.torch import save

    if hasattr(model, "student") and hasattr(model, "teacher"):  # an Adapter: inference sits below it
        raise ValueError("`model` must be the segmenter to export, got an Adapter: pass `adapter.student`")
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
    meta = {
        "format": FORMAT,
        "config": dict(config),
        "mean": segmenter.mean.detach().cpu().flatten().tolist(),
        "std": segmenter.std.detach().cpu().flatten().tolist(),
        "classes": list(classes) if classes is not None else None,
        "palette": [list(map(int, c)) for c in palette] if palette is not None else None,
        "ignore_index": int(ignore_index),
        "extra": dict(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in inner.state_dict().items()}
    return atomic_write_bytes(path, save(tensors, metadata={"diga": json.dumps(meta)}))


_PICKLE_HEADS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle (protocol 2+)


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", allow_pickle: bool = False
) -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`export_model`: ``(FeatureSegmenter in eval mode, metadata)``.

    Reads safetensors: no code in the file runs. ``.pt`` model files of diga
    0.1 (``torch.save`` pickles) are refused unless ``allow_pickle=True``: then
    the file goes through pickle (torch's restricted weights-only unpickler,
    which still refuses any function call), so pass it only for files you
    trust, and re-save them with ``diga export``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, truncated, not a diga model file, has no config,
            or is a pickle and ``allow_pickle`` is False (the message names the file).
    """
    from diga.models import model_from_config, with_features

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        raise ValueError(f"model file {path} is empty (0 bytes): expected a .safetensors file written by diga")
    if head[8:9] != b"{" and head.startswith(_PICKLE_HEADS):  # safetensors: 8-byte length, then JSON
        meta, state = _load_pickled(path, allow_pickle)
    else:
        meta, state = _load_safetensors(path)
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ValueError(
            f"model file {path} has weights but no model config (expected 'config' with the architecture in "
            "its diga metadata): write model files with diga.inference.export_model or training runs"
        )
    try:
        inner = model_from_config(config)
        inner.load_state_dict(state)
        model = with_features(inner, mean=meta.get("mean"), std=meta.get("std")).to(device).eval()
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"model file {path}: its weights do not fit its config ({_short(err)})") from err
    info = {"config": config, "classes": meta.get("classes"), "palette": meta.get("palette"),
            "ignore_index": meta.get("ignore_index", 255), "extra": meta.get("extra", {})}
    return model, info


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_safetensors(path: Path) -> tuple[dict, dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"cannot read model file {path}: truncated or not a safetensors file ({_short(err)}); expected "
            "<work-dir>/model.safetensors written by training or diga export"
        ) from err
    if "diga" not in header:
        raise ValueError(
            f"model file {path} is a safetensors file without diga metadata (no model config, classes or "
            "normalisation): write model files with diga.inference.export_model or training runs"
        )
    try:
        meta = json.loads(header["diga"])
    except json.JSONDecodeError as err:
        raise ValueError(f"model file {path}: its diga metadata is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"model file {path} has format {got!r}, expected {FORMAT!r}")
    return meta, state


def _load_pickled(path: Path, allow_pickle: bool) -> tuple[dict, dict[str, Tensor]]:
    """A diga 0.1 ``model.pt`` (``torch.save`` of a dict), only with the explicit opt-in."""
    if not allow_pickle:
        raise ValueError(
            f"refused to load model file {path}: it is a pickle (a .pt file), and unpickling can run code. "
            "diga model files are .safetensors; for a .pt model you trust, convert it once with "
            f"`diga export {path} --out model.safetensors --allow-pickle`"
        )
    payload = load_checkpoint(path, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
        raise ValueError(
            f"{path} is not a diga model file (expected format {LEGACY_FORMAT!r}, a diga 0.1 model.pt); "
            "training runs write <work-dir>/model.safetensors"
        )
    return payload, payload.get("state_dict") or {}
