"""One model on several evaluation sets, each at its own resolution: one row per target and their mean.

The paper's domain generalisation table evaluates one GTA5-trained model on Cityscapes val (1024 x
2048), BDD100k val (720 x 1280) and Mapillary val (resized to 1080 x 1920), each at full and half
scale with the logits fused by element-wise max. :class:`EvalTarget` describes one such set,
:func:`evaluate_targets` runs :func:`~diga.engine.evaluate` on each, and :func:`paper_dg_targets`
builds the paper's three from their folders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from diga.adapter import Adapter
from diga.data import BDD100k, Cityscapes, Mapillary
from diga.data._eval_sets import EvalResize
from diga.data.batch import as_batch
from diga.engine.distributed import DistInfo
from diga.engine.evaluation import evaluate

__all__ = ["PAPER_DG_SIZES", "EvalTarget", "evaluate_targets", "paper_dg_targets"]

#: The evaluation size of each of the paper's DG targets (``evaluate_val.py``: ``crop_size``).
PAPER_DG_SIZES: dict[str, tuple[int, int]] = {
    "cityscapes": (1024, 2048),
    "bdd100k": (720, 1280),
    "mapillary": (1080, 1920),
}

_LABEL_KEYS = ("label", "pseudo_label")


def _is_dataset(obj: object) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


class _Resized(Dataset):
    """Items of ``dataset`` as dicts, image and label maps resized by :class:`EvalResize`."""

    def __init__(self, dataset: Any, size: tuple[int, int]) -> None:
        self.dataset = dataset
        self.resize = EvalResize(size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = as_batch(self.dataset[index])
        keys = [k for k in _LABEL_KEYS if isinstance(item.get(k), Tensor)]
        image, *labels = self.resize(item["image"], *(item[k] for k in keys))
        item["image"] = image
        item.update(zip(keys, labels, strict=True))
        return item


@dataclass(frozen=True)
class EvalTarget:
    """One evaluation set: a labelled dataset, the size it is evaluated at, the scales fused.

    Items are dicts with ``"image"`` ``(3, H, W)`` in ``[0, 1]`` and ``"label"``
    ``(H, W)`` training ids (any diga dataset), or ``(image, label)`` tuples.

    Args:
        name: the row's key in :func:`evaluate_targets`' result (unique among the targets).
        dataset: the dataset, or a function of no argument returning it (built when
            evaluated, so that a list of targets costs nothing until used).
        size: ``(height, width)`` every item is resized to before prediction, as the
            paper's loaders do (image bicubic, labels nearest; an item already that size is
            untouched), so IoU is counted at that size. None: each item as the dataset gives it.
        scales: resize factors of the multi-scale prediction, fused by element-wise max of
            the logits (the paper: full and half).
        classes: indices of a class subset whose mean is reported as ``"miou_subset"``
            beside the full mIoU (e.g. :data:`~diga.data.SYNTHIA13_IN_16`).
        class_names: the per-class IoU's keys; default the dataset's ``classes`` when it has
            one per model class, else ``"0"``, ``"1"``, ...

    Raises:
        ValueError: an empty ``name``, a ``dataset`` that is neither a dataset nor a
            function, a bad ``size``, empty or non-positive ``scales``, negative or repeated
            ``classes``, repeated or non-string ``class_names``.

    Example:
        >>> target = EvalTarget("val", [(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))],
        ...                     size=(4, 4))
        >>> target.scales, tuple(target.build()[0]["image"].shape)
        ((1.0, 0.5), (3, 4, 4))
    """

    name: str
    dataset: Any = field(repr=False)
    size: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0, 0.5)
    classes: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"`name` must be a non-empty string, got {self.name!r}")
        if not _is_dataset(self.dataset) and not callable(self.dataset):
            raise ValueError(
                f"`dataset` of target {self.name!r} must be a dataset (indexable, with a length) or a "
                f"function returning one, got {type(self.dataset).__name__}"
            )
        if self.size is not None:
            object.__setattr__(self, "size", EvalResize(self.size).size)
        object.__setattr__(self, "scales", _check_scales(self.scales, self.name))
        if self.classes is not None:
            object.__setattr__(self, "classes", _check_classes(self.classes, self.name))
        if self.class_names is not None:
            names = tuple(self.class_names) if not isinstance(self.class_names, str) else ()
            if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ValueError(
                    f"`class_names` of target {self.name!r} must be distinct strings, got {self.class_names!r}"
                )
            object.__setattr__(self, "class_names", names)

    def build(self) -> Any:
        """The dataset (the factory called), with items resized to ``size`` when one is set."""
        return self._wrap(self._source())

    def _source(self) -> Any:
        dataset = self.dataset if _is_dataset(self.dataset) else self.dataset()
        if not _is_dataset(dataset):
            raise ValueError(
                f"the `dataset` function of target {self.name!r} must return a dataset, got "
                f"{type(dataset).__name__}"
            )
        return dataset

    def _wrap(self, dataset: Any) -> Any:
        return dataset if self.size is None else _Resized(dataset, self.size)


def _check_scales(scales: object, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in scales)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"`scales` of target {name!r} must be positive numbers, got {scales!r}")
    return values


def _check_classes(classes: object, name: str) -> tuple[int, ...]:
    try:
        values = tuple(classes)  # type: ignore[call-overload]
    except TypeError:
        values = ()
    ok = values and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in values)
    if not ok or len(set(values)) != len(values):
        raise ValueError(
            f"`classes` of target {name!r} must be distinct non-negative class indices, got {classes!r}"
        )
    return values


def _class_names(target: EvalTarget, dataset: Any, num_classes: int) -> tuple[str, ...]:
    if target.class_names is not None:
        if len(target.class_names) != num_classes:
            raise ValueError(
                f"`class_names` of target {target.name!r} must name the model's {num_classes} classes, "
                f"got {len(target.class_names)}"
            )
        return target.class_names
    own = getattr(dataset, "classes", None)
    if isinstance(own, Sequence) and len(own) == num_classes and all(isinstance(c, str) for c in own):
        return tuple(own)
    return tuple(str(c) for c in range(num_classes))


def evaluate_targets(
    adapter: Adapter,
    targets: Sequence[EvalTarget],
    *,
    dist: DistInfo | None = None,
    amp: bool | str = False,
    num_workers: int = 0,
    show_progress: bool = False,
    which: str = "student",
) -> dict[str, Any]:
    """Evaluate one model on each target with :func:`~diga.engine.evaluate`: one row per target.

    Each target's IoU is dataset-wide (one confusion matrix per target, summed over
    ranks under ``torch.distributed``, where every rank must call this and gets the
    same result); undefined IoUs are as :func:`~diga.engine.evaluate`
    gives them: a class in neither the labels nor the predictions of a target has IoU
    NaN there and is left out of that target's mIoU. The mean over targets is the plain
    mean of their mIoUs, each target counting once whatever its size; it is NaN when a
    target's mIoU is (a target without one labelled pixel).

    Args:
        adapter: the model (its ``num_classes`` classes are evaluated).
        targets: :class:`EvalTarget` s with distinct names, evaluated in order.
        dist: this process's rank and device (default: one process, the adapter's device).
        amp: autocast (``True``, ``"bf16"``, ``"fp16"``) as for :func:`~diga.engine.evaluate`.
        num_workers: data loader workers per target.
        show_progress: a progress bar per target (main rank).
        which: ``"student"`` or ``"teacher"``.

    Returns:
        ``{"targets": {name: row}, "mean_miou": float}``; each row is ``{"miou": float,
        "iou": {class name: float}, "images": int, "size": [H, W] or None, "scales": [...]}``
        plus ``"miou_subset"`` for a target with ``classes``: plain values, ready for
        ``results.json``.

    Raises:
        ValueError: no targets, a repeated name, something that is not an
            :class:`EvalTarget`, an empty dataset, a dataset whose ``num_classes`` or
            ``class_names`` differ from the model's, ``classes`` out of range.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(4, 2, 1))
        >>> adapter = Adapter(net, num_classes=2, feature_layer="1").eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> def items(n, h, w):
        ...     return [(torch.rand(3, h, w, generator=g), torch.randint(0, 2, (h, w), generator=g))
        ...             for _ in range(n)]
        >>> result = evaluate_targets(adapter, [EvalTarget("a", items(2, 16, 16)),
        ...                                     EvalTarget("b", items(1, 24, 40), size=(16, 32))])
        >>> result["targets"]["b"]["images"], result["targets"]["b"]["size"], sorted(result["targets"]["a"]["iou"])
        (1, [16, 32], ['0', '1'])
        >>> rows = result["targets"].values()
        >>> abs(result["mean_miou"] - sum(r["miou"] for r in rows) / 2) < 1e-12
        True
    """
    if isinstance(targets, EvalTarget) or not isinstance(targets, Sequence) or not targets:
        raise ValueError(f"`targets` must be a non-empty sequence of EvalTarget, got {targets!r}")
    for i, target in enumerate(targets):
        if not isinstance(target, EvalTarget):
            raise ValueError(f"`targets[{i}]` must be an EvalTarget, got {type(target).__name__}")
    names = [t.name for t in targets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"`targets` must have distinct names, got {repeated} more than once")
    num_classes = adapter.num_classes
    rows: dict[str, dict[str, Any]] = {}
    for target in targets:
        source = target._source()
        dataset = target._wrap(source)
        if len(dataset) == 0:
            raise ValueError(f"target {target.name!r}: the dataset is empty")
        own = getattr(source, "num_classes", None)
        if isinstance(own, int) and own != num_classes:
            raise ValueError(
                f"target {target.name!r}: the dataset has {own} classes but the model {num_classes}"
            )
        class_names = _class_names(target, source, num_classes)
        if target.classes is not None and max(target.classes) >= num_classes:
            raise ValueError(
                f"`classes` of target {target.name!r} must be in [0, {num_classes}), got {list(target.classes)}"
            )
        result = evaluate(
            adapter, dataset, num_classes=num_classes, scales=target.scales, dist=dist, amp=amp,
            classes=target.classes, which=which, show_progress=show_progress, num_workers=num_workers,
        )
        row: dict[str, Any] = {"miou": result["miou"]}
        if "miou_subset" in result:
            row["miou_subset"] = result["miou_subset"]
        row["iou"] = dict(zip(class_names, result["iou"], strict=True))
        row["images"] = len(dataset)
        row["size"] = None if target.size is None else list(target.size)
        row["scales"] = list(target.scales)
        rows[target.name] = row
    mean = sum(row["miou"] for row in rows.values()) / len(rows)
    return {"targets": rows, "mean_miou": mean}


def paper_dg_targets(
    *,
    cityscapes_root: str | os.PathLike | None = None,
    bdd_root: str | os.PathLike | None = None,
    mapillary_root: str | os.PathLike | None = None,
) -> list[EvalTarget]:
    """The paper's domain generalisation targets, for the roots given, in this order.

    ``"cityscapes"``: :class:`~diga.data.Cityscapes` ``val`` at 1024 x 2048;
    ``"bdd100k"``: :class:`~diga.data.BDD100k` ``val`` at 720 x 1280 (its layout
    detected); ``"mapillary"``: :class:`~diga.data.Mapillary` ``validation`` (v1.2
    labels, grouped into the 19 classes) resized to 1080 x 1920. Each at full and
    half scale, logits fused by max, 19 classes (:data:`PAPER_DG_SIZES`). Real
    Cityscapes and BDD100k images already have their size; Mapillary's are resized
    (image bicubic, labels nearest, as the scripts' loaders). The datasets are
    built now, so a wrong root fails here.

    Raises:
        ValueError: no root given.
        FileNotFoundError / ValueError: a root that does not hold its dataset; the
            message starts with the argument's name and says what was expected.

    Example:
        >>> paper_dg_targets()
        Traceback (most recent call last):
        ...
        ValueError: give at least one of `cityscapes_root`, `bdd_root`, `mapillary_root`
    """
    builders: list[tuple[str, str, Any, Callable[[Any], Any]]] = [
        ("cityscapes", "cityscapes_root", cityscapes_root, lambda root: Cityscapes(root, "val")),
        ("bdd100k", "bdd_root", bdd_root, lambda root: BDD100k(root, "val")),
        ("mapillary", "mapillary_root", mapillary_root, lambda root: Mapillary(root, "validation")),
    ]
    if all(root is None for _, _, root, _ in builders):
        raise ValueError("give at least one of `cityscapes_root`, `bdd_root`, `mapillary_root`")
    targets = []
    for name, argument, root, build in builders:
        if root is None:
            continue
        if not isinstance(root, str | os.PathLike):
            raise ValueError(f"`{argument}` must be a folder path, got {type(root).__name__}")
        try:
            dataset = build(root)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"`{argument}`: {err}") from err
        targets.append(EvalTarget(name, dataset, size=PAPER_DG_SIZES[name], scales=(1.0, 0.5),
                                  class_names=dataset.classes))
    return targets
