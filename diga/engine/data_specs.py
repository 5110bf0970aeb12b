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

__all__ = ["benchmark_data", "cityscapes_split_lists", "dg_data", "ssl_data", "train_transform"]


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


def dg_data(
    recipe: Recipe,
    *,
    source_root: str | os.PathLike,
    cityscapes_root: str | os.PathLike | None = None,
    bdd_root: str | os.PathLike | None = None,
    mapillary_root: str | os.PathLike | None = None,
    seed: int = 0,
    source_list: str | os.PathLike | None = None,
    rare_class_sampling: bool = False,
    work_dir: str | os.PathLike | None = None,
) -> DataSpec:
    """GTA5 -> {Cityscapes, BDD100k, Mapillary} generalisation: the source alone for training, and every
    target whose root is given for evaluation (:func:`~diga.engine.paper_dg_targets`: the scripts'
    sizes, or ``recipe.eval_size`` for every target when the recipe sets one, as the tiny preset).

    Raises:
        ValueError: no target root given; a root that does not hold its dataset (named by its argument).
    """
    from diga.engine.targets import EvalTarget, paper_dg_targets

    targets = paper_dg_targets(cityscapes_root=cityscapes_root, bdd_root=bdd_root, mapillary_root=mapillary_root)
    if recipe.eval_size is not None:
        targets = [EvalTarget(t.name, t.dataset, size=tuple(recipe.eval_size), scales=recipe.scales) for t in targets]
    stats = None if work_dir is None else Path(work_dir) / "rcs_stats.json"

    def source(scale: str, stage: StageRecipe):
        low = recipe.source_low_size if scale == "low" else None
        ds = GTA5(source_root, transform=train_transform(recipe, low_size=low, rescale=stage.source_rescale),
                  list_file=source_list, seed=seed)
        return RareClassSampling(ds, recipe.num_classes, seed=seed, stats_file=stats) if rare_class_sampling else ds

    return DataSpec(source=source, target=None, target_full=None, target_centroid=None, val=None,
                    classes=_classes(recipe.num_classes), palette=_palette(recipe.num_classes),
                    eval_targets=lambda: targets)


def cityscapes_split_lists(
    root: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    fraction: str | float = "1/16",
    seed: int = 0,
    labelled_list: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write the semi-supervised split of Cityscapes' training images to ``<work_dir>/split/``.

    ``labelled.txt`` and ``unlabelled.txt`` name the images (relative paths under
    ``leftImg8bit/train``): ``labelled_list`` (a published list, e.g. the scripts'
    ``train_image_labeled_1-16.txt``; ``fraction`` and ``seed`` are then unused) or a seeded
    :func:`~diga.data.splits.labelled_split`. Written atomically; the same arguments write the
    same files, so a resumed run trains on the same split.

    Returns:
        The paths of ``labelled.txt`` and ``unlabelled.txt``.
    """
    from diga.data.splits import labelled_split
    from diga.engine.checkpoint import atomic_write_text

    everything = Cityscapes(root, "train", labels=False)
    names = [everything.samples[i].name for i in range(len(everything))]
    if labelled_list is not None:
        chosen = Cityscapes(root, "train", labels=False, list_file=labelled_list)
        picked = {s.name for s in chosen.samples}
        if not picked:
            raise ValueError(f"--labelled-list {labelled_list} names no image; expected one training image per line")
        labelled = [n for n in names if n in picked]
    else:
        ids, _ = labelled_split(len(names), fraction, seed=seed)
        labelled = [names[i] for i in ids]
    chosen_set = set(labelled)
    unlabelled = [n for n in names if n not in chosen_set]
    if not unlabelled:
        raise ValueError(f"the semi-supervised split of {root} leaves no unlabelled training image; expected a "
                         "labelled fraction below 1")
    out = Path(work_dir) / "split"
    paths = out / "labelled.txt", out / "unlabelled.txt"
    for path, lines in zip(paths, (labelled, unlabelled), strict=True):
        text = "".join(f"{line}\n" for line in lines)
        if not (path.is_file() and path.read_text() == text):
            atomic_write_text(path, text)
    return paths


def ssl_data(
    recipe: Recipe,
    *,
    root: str | os.PathLike,
    work_dir: str | os.PathLike,
    seed: int = 0,
    fraction: str | float | None = None,
    labelled_list: str | os.PathLike | None = None,
) -> DataSpec:
    """Semi-supervised Cityscapes: the labelled split plays the source, the unlabelled split the target.

    The split (:func:`cityscapes_split_lists`, ``fraction`` default the recipe's) is written to
    ``<work_dir>/split/``. Labelled crops: flipped and cropped (no rescale, as the scripts); unlabelled
    crops of self-training are rescaled first; pseudo-labels on the unlabelled images at full size;
    centroids over every training image (labelled or not) at ``recipe.centroid_size``; evaluation on
    ``val`` at full size.
    """
    labelled, unlabelled = cityscapes_split_lists(
        root, work_dir, fraction=fraction or recipe.labelled_fraction or "1/16", seed=seed,
        labelled_list=labelled_list)
    n = recipe.num_classes

    def source(scale: str, stage: StageRecipe):
        low = recipe.source_low_size if scale == "low" else None
        return Cityscapes(root, "train", transform=train_transform(recipe, low_size=low, rescale=stage.source_rescale),
                          list_file=labelled, seed=seed, num_classes=n)

    def target(scale: str, stage: StageRecipe, pseudo_dir: Path | None):
        low = recipe.target_low_size if scale == "low" else None
        return Cityscapes(root, "train", transform=train_transform(recipe, low_size=low, rescale=stage.target_rescale),
                          labels=False, pseudo_label_dir=pseudo_dir, list_file=unlabelled, seed=seed + 1,
                          num_classes=n)

    return DataSpec(
        source=source,
        target=target,
        target_full=lambda: Cityscapes(root, "train", labels=False, list_file=unlabelled, num_classes=n),
        target_centroid=lambda: Cityscapes(
            root, "train", labels=False, num_classes=n,
            transform=None if recipe.centroid_size is None else PairedCompose([Resize(recipe.centroid_size)])),
        val=lambda: Cityscapes(root, "val", num_classes=n),
        classes=_classes(n),
        palette=_palette(n),
    )
