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
from diga.data.transforms import _pair
from diga.losses import resize_logits

__all__ = [
    "HRDA_WINDOW",
    "WHOLE_IMAGE_MAX_PIXELS",
    "check_window",
    "export_model",
    "load_model",
    "predict_logits",
    "resolve_window",
]

FORMAT = "diga-model/2"  # safetensors, metadata as JSON
LEGACY_FORMAT = "diga-model/1"  # diga 0.1: a torch.save pickle


#: Whole-image inference above this many pixels (4096 x 4096) slides :data:`HRDA_WINDOW` windows instead
#: (:func:`resolve_window`, used by ``diga predict`` / ``diga evaluate`` and the trainers' evaluation and
#: pseudo-labels when no window is given): one forward of a 9000 x 9000 image would not fit memory.
WHOLE_IMAGE_MAX_PIXELS = 4096 * 4096
#: HRDA's sliding-window setting (window, stride) in pixels: 1024 x 1024 windows every 512 pixels.
HRDA_WINDOW = ((1024, 1024), (512, 512))


def check_window(window: object, stride: object = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(window, stride)`` as pairs of positive integers; ``stride`` None is half the window (rounded up).

    Raises:
        ValueError: a value that is not a positive integer (or pair), or a stride larger than the
            window along an axis (pixels between windows would get no prediction).

    Example:
        >>> check_window(1024)
        ((1024, 1024), (512, 512))
        >>> check_window((512, 1024), (256, 512))
        ((512, 1024), (256, 512))
    """
    wh, ww = _pair(window, "window")
    sh, sw = ((wh + 1) // 2, (ww + 1) // 2) if stride is None else _pair(stride, "stride")
    if sh > wh or sw > ww:
        raise ValueError(f"`stride` must be at most the window {(wh, ww)} along each axis (a larger step leaves "
                         f"pixels no window covers), got {(sh, sw)}")
    return (wh, ww), (sh, sw)


_BOUND: Any = object()  # resolve_window's default: WHOLE_IMAGE_MAX_PIXELS as it is when called


def resolve_window(
    size: Sequence[int], window: object = None, stride: object = None, *, max_pixels: int | None = _BOUND,
) -> tuple[tuple[int, int], tuple[int, int]] | tuple[None, None]:
    """The sliding window for an image of ``size = (H, W)``: the one given, else HRDA's above the pixel bound.

    Args:
        size: the image's ``(H, W)``.
        window, stride: what the user asked for (None: whole-image inference where it fits).
        max_pixels: whole-image bound (default: :data:`WHOLE_IMAGE_MAX_PIXELS`; None: no bound).

    Returns:
        ``(window, stride)`` pairs, or ``(None, None)`` for whole-image inference.

    Example:
        >>> resolve_window((1024, 2048))
        (None, None)
        >>> resolve_window((9000, 9000))
        ((1024, 1024), (512, 512))
        >>> resolve_window((64, 64), (32, 32))
        ((32, 32), (16, 16))
    """
    if window is not None:
        return check_window(window, stride)
    if stride is not None:
        raise ValueError(f"`stride` needs a `window` (sliding-window inference), got stride={stride!r} alone")
    h, w = (int(v) for v in size[-2:])
    max_pixels = WHOLE_IMAGE_MAX_PIXELS if max_pixels is _BOUND else max_pixels
    if max_pixels is not None and h * w > max_pixels:
        return HRDA_WINDOW
    return None, None


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride``, the last one flush with the end (as mmseg/HRDA)."""
    if size <= window:
        return [0]
    count = -(-(size - window) // stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def _slide(model: nn.Module, images: Tensor, window: tuple[int, int], stride: tuple[int, int],
           batch_size: int) -> Tensor:
    """``(B, C, H, W)`` float32 logits of ``images`` from overlapping windows, averaged where they overlap.

    A window larger than the image along an axis is clipped to the image there (that axis runs
    whole). ``batch_size`` windows go through the model at once, so the model's memory is that
    of ``batch_size`` windows whatever the image size; the output holds one float per class and pixel.
    """
    b, _, h, w = images.shape
    wh, ww = min(window[0], h), min(window[1], w)
    ys, xs = _window_starts(h, wh, stride[0]), _window_starts(w, ww, stride[1])
    origins = [(i, y, x) for i in range(b) for y in ys for x in xs]
    total = None
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        crops = torch.stack([images[i, :, y : y + wh, x : x + ww] for i, y, x in chunk])
        logits = resize_logits(_logits(model, crops), (wh, ww)).float()
        if total is None:
            total = logits.new_zeros(b, logits.shape[1], h, w)
        for (i, y, x), part in zip(chunk, logits, strict=True):
            total[i, :, y : y + wh, x : x + ww] += part
    # Every window spans the whole grid of origins, so the overlap count is a product of two 1-D counts.
    rows = torch.zeros(h, device=total.device)
    cols = torch.zeros(w, device=total.device)
    for y in ys:
        rows[y : y + wh] += 1
    for x in xs:
        cols[x : x + ww] += 1
    return total.div_(rows[:, None]).div_(cols)  # two broadcasts: no (H, W) temporary


def _max_into(fused: Tensor, logits: Tensor) -> None:
    """``fused = max(fused, resize(logits))`` in place, a few channels at a time (a bounded temporary)."""
    size = tuple(fused.shape[-2:])
    per = max(1, (1 << 26) // max(1, fused.shape[0] * size[0] * size[1]))
    for c in range(0, fused.shape[1], per):
        part = resize_logits(logits[:, c : c + per], size).float()
        torch.maximum(fused[:, c : c + per], part, out=fused[:, c : c + per])


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    scales: Sequence[float] = (1.0, 0.5),
    *,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 4,
) -> Tensor:
    """Multi-scale prediction fused by element-wise max of the logits, as in the paper; optionally slid.

    Each scale's input is resized bilinearly (``align_corners=True``), its
    logits resized back to ``(H, W)`` the same way, and the maxima taken. The
    model runs in eval mode (its mode is restored afterwards).

    With ``window``, every scale's image is cut into overlapping ``window``
    crops every ``stride`` pixels (the last flush with the border, as
    mmseg/HRDA), ``batch_size`` crops per forward; each crop's logits are
    resized to the crop and averaged where crops overlap. A scaled image
    smaller than the window along an axis runs whole along that axis (no
    padding). Memory: the model's is that of ``batch_size`` windows, whatever
    the image size; the result, and one scale's sum, hold a float per class and
    pixel. HRDA's setting is ``window=1024, stride=512`` (:data:`HRDA_WINDOW`).

    Args:
        model: a :class:`~diga.models.FeatureSegmenter` (``(logits, features)``
            from RGB in ``[0, 1]``) or any model returning logits.
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        scales: resize factors in ``(0, 8]`` (the paper: full and half resolution).
        window: ``(h, w)`` (or one int) crop size for sliding-window inference; None: whole images.
        stride: ``(h, w)`` step between crops, at most the window (default: half the window).
        batch_size: crops per forward when sliding.

    Returns:
        ``(B, C, H, W)`` float32 fused logits.

    Raises:
        ValueError: empty or non-positive ``scales``, bad images, a window, stride or batch size
            that is not a positive integer, a stride larger than the window.

    Example:
        >>> net = nn.Conv2d(3, 4, 1)
        >>> x = torch.rand(1, 3, 40, 56)
        >>> predict_logits(net, x).shape
        torch.Size([1, 4, 40, 56])
        >>> torch.allclose(predict_logits(net, x, window=16, stride=8), predict_logits(net, x), atol=1e-5)
        True
    """
    if not scales:
        raise ValueError("`scales` must name at least one scale, got an empty sequence")
    for s in scales:
        check_number(s, "scales", low=0, low_open=True, high=8)
    if window is not None:
        window, stride = check_window(window, stride)
        check_number(batch_size, "batch_size", low=1, integer=True)
    elif stride is not None:
        raise ValueError(f"`stride` needs a `window` (sliding-window inference), got stride={stride!r} alone")
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
            logits = _logits(model, x) if window is None else _slide(model, x, window, stride, batch_size)
            del x
            if fused is None:
                fused = resize_logits(logits, (h, w)).float().contiguous()
            else:
                _max_into(fused, logits)
            del logits
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
            or is a pickle and ``allow_pickle`` is False; its config names kwargs outside
            :data:`~diga.models.registry.MODEL_FILE_KWARGS` or an encoder with a hub prefix or
            path; a weight holds NaN or infinity (the message names the file, and the key or tensor).

    A model file is data: nothing is downloaded or read besides it (``encoder_weights`` in its
    config is ignored, the model is built with ``pretrained=False``).
    """
    from diga.models import with_features
    from diga.models.registry import check_model_file_config, model_from_config

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
        config = check_model_file_config(config)
    except ValueError as err:
        raise ValueError(f"model file {path}: {err}") from None
    _check_finite_weights(state, path)
    _check_names(meta, config, path)
    try:
        inner = model_from_config(config)
        inner.load_state_dict(state)
        model = with_features(inner, mean=meta.get("mean"), std=meta.get("std"))
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"model file {path}: its weights do not fit its config ({_short(err)})") from err
    model = model.to(device).eval()  # a device error is the device's, not the file's
    info = {"config": config, "classes": meta.get("classes"), "palette": meta.get("palette"),
            "ignore_index": meta.get("ignore_index", 255), "extra": meta.get("extra", {})}
    return model, info


def _check_finite_weights(state: dict[str, Tensor], path: Path) -> None:
    """A model file whose weights hold NaN or infinity predicts class 0 everywhere: refuse it, naming the tensor."""
    for name, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise ValueError(f"model file {path}: entry {name!r} is a {type(tensor).__name__}, expected a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"model file {path}: tensor {name!r} holds {bad} non-finite value(s) (NaN or "
                             "infinity); expected finite weights (was the run diverging when it was written?)")


def _check_names(meta: dict, config: dict, path: Path) -> None:
    """Class names: one distinct string per class (results are keyed by name); a palette: one colour each."""
    count = config.get("num_classes")
    classes, palette = meta.get("classes"), meta.get("palette")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) != count:
            raise ValueError(f"model file {path}: 'classes' must be {count} names (num_classes), got {classes!r:.200}")
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        if repeated:
            raise ValueError(f"model file {path}: class name {repeated[0]!r} appears more than once; expected "
                             f"{count} distinct names")
    if palette is not None and (not isinstance(palette, list) or len(palette) != count or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette)):
        raise ValueError(f"model file {path}: 'palette' must be {count} [r, g, b] colours of 0-255 integers, "
                         f"got {palette!r:.200}")


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
