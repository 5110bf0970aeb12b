"""Evaluation (dataset-wide mIoU of multi-scale predictions) and pseudo-label generation, streamed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from diga import _dist
from diga._ops import class_argmax
from diga.adapter import Adapter
from diga.data.batch import as_batch, to_device
from diga.engine.distributed import DistInfo
from diga.engine.log import progress
from diga.engine.optim import autocast_context
from diga.metrics import ConfusionMatrix

__all__ = ["evaluate", "generate_pseudo_labels"]


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
) -> int:
    """Label every target image with the student's multi-scale max fusion and write it to disk.

    Streams one image at a time (host memory does not grow with the set; the
    paper's script holds a float64 array of the whole set). Each rank writes
    the items ``i`` with ``i % world_size == rank``; files are written atomically
    as ``<out_dir>/<name>.png`` (uint8 train ids); existing files that are whole
    PNGs of the image's size are kept, so a killed run resumes (a truncated or
    foreign file is written again: :func:`~diga.data.pseudo.label_file_fits`).
    Items are ``(image, ...)`` tuples or dicts with ``"image"`` (and ``"name"``,
    else the index names the file).

    Returns:
        The number of files this rank wrote.
    """
    from diga.data.io import save_label
    from diga.data.pseudo import item_name, label_file_fits

    dist = dist or DistInfo(0, 1, 0, next(adapter.parameters()).device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast, _ = autocast_context(dist.device, amp)
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
            logits = adapter.predict(image, scales)
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
) -> dict[str, Any]:
    """Dataset-wide per-class IoU and mIoU of multi-scale predictions (ranks share the set).

    Returns:
        ``{"miou": float, "iou": [C floats, NaN where a class is absent], "miou_subset": float}``
        (the last only with ``classes``, e.g. SYNTHIA's 13).
    """
    dist = dist or DistInfo(0, 1, 0, next(adapter.parameters()).device)
    subset = torch.utils.data.Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    cm = ConfusionMatrix(num_classes, ignore_index=adapter.ignore_index).to(dist.device)
    autocast, _ = autocast_context(dist.device, amp)
    for batch in progress(loader, desc="evaluate", enabled=show_progress and dist.is_main):
        batch = to_device(as_batch(batch), dist.device)
        if "label" not in batch:
            raise ValueError("evaluation needs labelled items (a 'label' entry), got none")
        with autocast:
            logits = adapter.predict(batch["image"], scales, which=which)
        cm.update(class_argmax(logits), batch["label"])
    out = cm.compute()
    result = {"miou": float(out["miou"]), "iou": out["iou"].tolist()}
    if classes is not None:
        result["miou_subset"] = float(cm.compute(classes=classes)["miou"])
    return result

