"""The datasets of each benchmark, with the paper's transforms, as a :class:`DataSpec`."""

from __future__ import annotations

import os
from pathlib import Path

from diga.data import (
    GTA5,
    SYNTHIA13_IN_16,
    Cityscapes,
    PairedCompose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    Synthia,
)
from diga.data.rcs import RareClassSampling
from diga.engine.pipeline import DataSpec
from diga.engine.recipes import Recipe, StageRecipe

__all__ = ["benchmark_data", "train_transform"]


def train_transform(recipe: Recipe, *, low_size, rescale: bool) -> PairedCompose:
    """Resize to ``low_size`` first (None: full resolution), flip, then random (re)scale + crop."""
    steps = [] if low_size is None else [Resize(low_size)]
    steps.append(RandomHorizontalFlip())
    steps.append(RandomScaleCrop(recipe.crop_size) if rescale else RandomCrop(recipe.crop_size))
    return PairedCompose(steps)


def benchmark_data(
    benchmark: str,
    recipe: Recipe,
    *,
    source_root: str | os.PathLike,
    target_root: str | os.PathLike,
    seed: int = 0,
    source_list: str | os.PathLike | None = None,
    target_list: str | os.PathLike | None = None,
    val_split: str = "val",
    rare_class_sampling: bool = False,
    work_dir: str | os.PathLike | None = None,
) -> DataSpec:
    """GTA5 -> Cityscapes or SYNTHIA -> Cityscapes datasets for :func:`~diga.engine.run_pipeline`.

    Source crops: ``batch_low`` resized to the recipe's low size, ``batch_high``
    at full resolution, each flipped, randomly rescaled (0.7-1 per axis) where
    the stage asks for it, and cropped. The target likewise, without labels, and
    with pseudo-labels in self-training. Pseudo-labels are generated on the
    full-resolution target training images; centroids on the images resized
    to ``recipe.centroid_size``; evaluation on full-resolution validation images.

    Args:
        benchmark: ``"gta5"`` or ``"synthia"``.
        rare_class_sampling: draw source crops towards rare classes (DAFormer);
            off by default, as in the paper.
    """
    if benchmark not in ("gta5", "synthia"):
        raise ValueError(f"`benchmark` must be 'gta5' or 'synthia', got {benchmark!r}")
    num_classes = recipe.num_classes
    stats = None if work_dir is None else Path(work_dir) / "rcs_stats.json"

    def source(scale: str, stage: StageRecipe):
        low = recipe.source_low_size if scale == "low" else None
        transform = train_transform(recipe, low_size=low, rescale=stage.source_rescale)
        if benchmark == "gta5":
            ds = GTA5(source_root, transform=transform, list_file=source_list, seed=seed)
        else:
            ds = Synthia(source_root, transform=transform, list_file=source_list, seed=seed)
        if rare_class_sampling:
            ds = RareClassSampling(ds, num_classes, seed=seed, stats_file=stats)
        return ds

    def target(scale: str, stage: StageRecipe, pseudo_dir: Path | None):
        low = recipe.target_low_size if scale == "low" else None
        transform = train_transform(recipe, low_size=low, rescale=stage.target_rescale)
        return Cityscapes(target_root, "train", transform=transform, labels=False,
                          pseudo_label_dir=pseudo_dir, list_file=target_list, seed=seed + 1,
                          num_classes=num_classes)

    return DataSpec(
        source=source,
        target=target,
        target_full=lambda: Cityscapes(target_root, "train", labels=False, list_file=target_list,
                                       num_classes=num_classes),
        target_centroid=lambda: Cityscapes(
            target_root, "train", labels=False, list_file=target_list, num_classes=num_classes,
            transform=None if recipe.centroid_size is None else PairedCompose([Resize(recipe.centroid_size)]),
        ),
        val=lambda: Cityscapes(target_root, val_split, num_classes=num_classes),
        classes=_classes(num_classes),
        palette=_palette(num_classes),
        eval_classes=SYNTHIA13_IN_16 if benchmark == "synthia" else None,
    )


def _classes(num_classes: int):
    from diga.data import CITYSCAPES_CLASSES, SYNTHIA16_CLASSES

    return CITYSCAPES_CLASSES if num_classes == 19 else SYNTHIA16_CLASSES


def _palette(num_classes: int):
    from diga.data import CITYSCAPES_PALETTE, SYNTHIA_PALETTE

    return CITYSCAPES_PALETTE if num_classes == 19 else SYNTHIA_PALETTE
