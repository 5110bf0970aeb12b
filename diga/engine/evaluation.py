"""Evaluation (dataset-wide mIoU of multi-scale predictions) and pseudo-label generation, streamed.

Both predict whole images, or in sliding windows (:func:`diga.inference.predict_logits`) when given
``window`` / ``stride``, when run inside :func:`inference_window` (how the trainers' ``--slide`` /
``--stride`` reach them), or for an image above :data:`~diga.inference.WHOLE_IMAGE_MAX_PIXELS`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from diga import _dist
from diga._ops import class_argmax
from diga._wrap import unwrap_model
from diga.adapter import Adapter
from diga.data.batch import as_batch, to_device
from diga.engine.distributed import DistInfo
from diga.engine.log import progress
from diga.engine.optim import autocast_context
from diga.inference import WHOLE_IMAGE_MAX_PIXELS, predict_logits, resolve_window
from diga.metrics import ConfusionMatrix

__all__ = ["evaluate", "generate_pseudo_labels", "inference_window"]

_WINDOW: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar("diga_window", default=None)


@contextlib.contextmanager
def inference_window(window: int | Sequence[int] | None, stride: int | Sequence[int] | None = None
                     ) -> Iterator[None]:
    """Sliding-window inference in every :func:`evaluate` / :func:`generate_pseudo_labels` call of the
    block that is given no window of its own (``window=None``: no change).

    Example:
        >>> with inference_window((1024, 1024), (512, 512)):
        ...     pass
    """
    if window is None:
        if stride is not None:
            raise ValueError(f"`stride` needs a `window` (sliding-window inference), got stride={stride!r} alone")
        yield
        return
    token = _WINDOW.set(resolve_window((1, 1), window, stride))
    try:
        yield
    finally:
        _WINDOW.reset(token)


class _Predictor:
    """``adapter``'s multi-scale prediction, whole or slid, with one warning when the pixel bound slides it."""

    def __init__(self, adapter: Adapter, scales: Sequence[float], which: str, window, stride,
                 window_batch: int) -> None:
        if window is None and stride is None and _WINDOW.get() is not None:
            window, stride = _WINDOW.get()
        resolve_window((1, 1), window, stride)  # checks the values now
        self.adapter, self.scales, self.which = adapter, scales, which
        self.window, self.stride, self.window_batch = window, stride, window_batch
        self.warned = False

    def __call__(self, images):
        window, stride = resolve_window(images.shape[-2:], self.window, self.stride)
        if window is None:
            return self.adapter.predict(images, self.scales, which=self.which)
        if self.window is None and not self.warned:
            warnings.warn(f"images of {images.shape[-2]} x {images.shape[-1]} pixels are above the whole-image bound "
                          f"({WHOLE_IMAGE_MAX_PIXELS} pixels): predicted in {window[0]} x {window[1]} windows, stride "
                          f"{stride[0]} x {stride[1]}", stacklevel=3)
            self.warned = True
        which = self.which
        if which not in ("student", "teacher"):
            raise ValueError(f"`which` must be 'student' or 'teacher', got {which!r}")
        model = unwrap_model(self.adapter.student) if which == "student" else self.adapter.teacher.model
        return predict_logits(model, images, self.scales, window=window, stride=stride, batch_size=self.window_batch)


# ------------------------------------------------------------------- pseudo-labels
@torch.no_grad()
def generate_pseudo_labels(
    adapter: Adapter,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    *,
    scales: Sequence[float] = (1.0, 0.5),
    dist: DistInfo | None = None,
    amp: bool | str = False,
    palette: Sequence[Sequence[int]] | None = None,
    show_progress: bool = True,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    window_batch: int = 4,
) -> int:
    """Label every target image with the student's multi-scale max fusion and write it to disk.

    Streams one image at a time (host memory does not grow with the set; the
    paper's script holds a float64 array of the whole set). Each rank writes
    the items ``i`` with ``i % world_size == rank``; files are written atomically
    as ``<out_dir>/<name>.png`` (uint8 train ids); existing files that are whole
    PNGs of the image's size are kept, so a killed run resumes (a truncated or
    foreign file is written again: :func:`~diga.data.pseudo.label_file_fits`).
    Items are ``(image, ...)`` tuples or dicts with ``"image"`` (and ``"name"``,
    else the index names the file). ``window`` / ``stride`` (default: :func:`inference_window`'s,
    else whole images up to the pixel bound) slide ``window_batch`` crops per forward.

    Returns:
        The number of files this rank wrote.
    """
    from diga.data.io import save_label
    from diga.data.pseudo import item_name, label_file_fits

    dist = dist or DistInfo(0, 1, 0, next(adapter.parameters()).device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast, _ = autocast_context(dist.device, amp)
    predict = _Predictor(adapter, scales, "student", window, stride, window_batch)
    indices = range(dist.rank, len(dataset), dist.world_size)
    written = 0
    for i in progress(indices, desc="pseudo-labels", enabled=show_progress and dist.is_main):
        item = dataset[i]
        name = item_name(item, i)
        path = out_dir / f"{name}.png"
        image = as_batch(item)["image"].unsqueeze(0).to(dist.device)
        if label_file_fits(path, image.shape[-2:]):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with autocast:
            logits = predict(image)
        save_label(path, class_argmax(logits)[0].to(torch.uint8).cpu(), palette=palette)
        written += 1
    _dist.barrier()
    return written


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    adapter: Adapter,
    dataset: Dataset,
    *,
    num_classes: int,
    scales: Sequence[float] = (1.0, 0.5),
    batch_size: int = 1,
    dist: DistInfo | None = None,
    amp: bool | str = False,
    classes: Sequence[int] | None = None,
    which: str = "student",
    show_progress: bool = False,
    num_workers: int = 0,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    window_batch: int = 4,
) -> dict[str, Any]:
    """Dataset-wide per-class IoU and mIoU of multi-scale predictions (ranks share the set).

    ``window`` / ``stride`` (default: :func:`inference_window`'s, else whole images up to the
    pixel bound) slide ``window_batch`` crops per forward.

    Returns:
        ``{"miou": float, "iou": [C floats, NaN where a class is absent], "miou_subset": float}``
        (the last only with ``classes``, e.g. SYNTHIA's 13).
    """
    dist = dist or DistInfo(0, 1, 0, next(adapter.parameters()).device)
    subset = torch.utils.data.Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    cm = ConfusionMatrix(num_classes, ignore_index=adapter.ignore_index).to(dist.device)
    autocast, _ = autocast_context(dist.device, amp)
    predict = _Predictor(adapter, scales, which, window, stride, window_batch)
    for batch in progress(loader, desc="evaluate", enabled=show_progress and dist.is_main):
        batch = to_device(as_batch(batch), dist.device)
        if "label" not in batch:
            raise ValueError("evaluation needs labelled items (a 'label' entry), got none")
        with autocast:
            logits = predict(batch["image"])
        cm.update(class_argmax(logits), batch["label"])
    out = cm.compute()
    result = {"miou": float(out["miou"]), "iou": out["iou"].tolist()}
    if classes is not None:
        result["miou_subset"] = float(cm.compute(classes=classes)["miou"])
    return result

