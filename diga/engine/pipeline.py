"""The whole DiGA run every reference trainer makes: stages in order, each resumable on its own."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from diga._wrap import unwrap_model
from diga.adapter import Adapter, setting_defaults
from diga.augment import StrongPhotometric
from diga.engine.checkpoint import atomic_save, atomic_write_json, load_checkpoint
from diga.engine.distributed import DistInfo, wrap_ddp
from diga.engine.evaluation import inference_window
from diga.engine.plots import line_plot, save_png
from diga.engine.recipes import Recipe, StageRecipe
from diga.engine.stages import evaluate, generate_pseudo_labels, stage_checkpoint, train_stage
from diga.engine.targets import EvalTarget, evaluate_targets
from diga.inference import export_model
from diga.losses import OhemCELoss

#: The model file a run leaves in its work dir (safetensors: weights and metadata, no code).
MODEL_FILE = "model.safetensors"

__all__ = ["MODEL_FILE", "DataSpec", "build_adapter", "device_name", "run_pipeline", "versions"]


@dataclass
class DataSpec:
    """Every dataset a run needs, built on demand (pseudo-label folders exist only later).

    Attributes:
        source: ``(scale, stage) -> dataset`` with the stage's training transform;
            scale is ``"low"`` (resized to the recipe's low size first) or ``"high"``,
            stage the :class:`StageRecipe` being trained.
        target: ``(scale, stage, pseudo_label_dir or None) -> dataset`` of unlabelled
            target training crops (with pseudo-labels when a folder is given); None for
            domain generalisation (no target images). In the semi-supervised setting the
            source is the labelled split and the target the unlabelled one.
        target_full: the target training images at full size, no random
            transform (pseudo-labels are generated on these, named by item); None without a target.
        target_centroid: the target training images at the centroid pass's size (semi-supervised:
            every training image, labelled or not, as the scripts); None without a target.
        val: labelled target validation images at full size, or None.
        classes: class names; palette: their colours.
        eval_classes: a subset whose mean is reported too (SYNTHIA's 13).
        eval_targets: ``() -> [EvalTarget, ...]``: several labelled evaluation sets, each at its own
            size (domain generalisation: Cityscapes, BDD100k, Mapillary); when given, each stage is
            evaluated on every one (one row per target and their mean, :func:`~diga.engine.evaluate_targets`)
            instead of on ``val``.
    """

    source: Callable[[str, StageRecipe], Dataset]
    target: Callable[[str, StageRecipe, Path | None], Dataset] | None
    target_full: Callable[[], Dataset] | None
    target_centroid: Callable[[], Dataset] | None
    val: Callable[[], Dataset] | None
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    eval_classes: Sequence[int] | None = None
    eval_targets: Callable[[], Sequence[EvalTarget]] | None = None


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import segmentation_models_pytorch as smp
    import timm

    import diga

    out = {"diga": diga.__version__, "torch": str(torch.__version__), "smp": smp.__version__,
           "timm": timm.__version__, "python": platform.python_version()}
    try:
        import kornia

        out["kornia"] = kornia.__version__
    except ImportError:  # pragma: no cover - kornia is a dependency
        pass
    return out


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (read from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _augment(stage: StageRecipe) -> StrongPhotometric:
    return StrongPhotometric(beta=stage.beta, jitter_p=stage.jitter_p, grayscale_p=stage.grayscale_p,
                             sharpness_p=stage.sharpness_p)


def build_adapter(model: nn.Module, recipe: Recipe, *, translator=None, dist: DistInfo | None = None,
                  **adapter_kwargs: Any) -> Adapter:
    """An :class:`Adapter` set up with a recipe's setting, weights, loss, momenta and augmentations, on
    ``dist.device`` (DDP-wrapped for training when there is more than one rank). The recipe's
    ``mixed_view_ce`` replaces that of an ``ablation`` given in ``adapter_kwargs`` (default: the setting's);
    outside ``"uda"`` there is no cross-domain mix (nothing is translated)."""
    ablation = adapter_kwargs.pop("ablation", None) or setting_defaults(recipe.setting)["ablation"]
    changes: dict[str, Any] = {"mixed_view_ce": recipe.mixed_view_ce}
    if recipe.setting != "uda":
        changes["cross_domain_mix"] = False
    adapter_kwargs["ablation"] = replace(ablation, **changes)
    if recipe.seg_loss == "ohem":
        adapter_kwargs.setdefault("seg_loss", OhemCELoss(threshold=0.7, min_kept=100_000))
    self_trains = recipe.rounds > 0
    adapter = Adapter(
        model, recipe.num_classes, setting=recipe.setting, translator=translator,
        augment=_augment(recipe.warmup), st_augment=_augment(recipe.self_training) if self_trains else None,
        kd_weight=recipe.warmup.kd_weight, st_kd_weight=recipe.self_training.kd_weight if self_trains else None,
        aux_weight=recipe.aux_weight,
        teacher_momentum=recipe.teacher_momentum, teacher_ramp=recipe.teacher_ramp,
        teacher_buffers=recipe.teacher_buffers, centroid_momentum=recipe.centroid_momentum,
        select_with=recipe.select_with, **adapter_kwargs,
    )
    if dist is not None:
        adapter.to(dist.device)
        if dist.world_size > 1:
            adapter.distribute(lambda m: wrap_ddp(m, dist))
    return adapter


def _optim(recipe: Recipe, stage: StageRecipe):
    """The recipe's optimiser with the stage's learning-rate schedule."""
    return replace(recipe.optim, schedule=stage.lr_schedule)


def _composition(make: Callable[[str], Dataset], stage: StageRecipe) -> list[tuple[Dataset, int]]:
    """The paper's batch: ``batch_low`` low-scale crops then ``batch_high`` full-scale crops."""
    return [(make(scale), n) for scale, n in (("low", stage.batch_low), ("high", stage.batch_high)) if n]


def _evaluate(adapter: Adapter, data: DataSpec, recipe: Recipe, dist: DistInfo, amp, num_workers: int,
              show_progress: bool):
    if data.eval_targets is not None:
        result = evaluate_targets(adapter, data.eval_targets(), dist=dist, amp=amp, num_workers=num_workers,
                                  show_progress=show_progress and dist.is_main)
        return {"miou": result["mean_miou"], **result}  # "miou": the mean over targets, for the stage plot
    if data.val is None:
        return None
    result = evaluate(
        adapter, data.val(), num_classes=recipe.num_classes, scales=recipe.scales, dist=dist, amp=amp,
        classes=data.eval_classes, show_progress=show_progress and dist.is_main, num_workers=num_workers,
    )
    result["iou_by_class"] = dict(zip(data.classes, result["iou"], strict=True))
    return result


def _centroids(adapter: Adapter, data: DataSpec, path: Path, dist: DistInfo, num_workers: int,
               show_progress: bool) -> None:
    if path.exists():
        adapter.centroids.load_state_dict(load_checkpoint(path, map_location=dist.device))
        adapter.stage = "centroids"  # as init_centroids leaves it: the next round starts afresh
        return
    dataset = data.target_centroid()
    shard = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(shard, batch_size=1, shuffle=False, num_workers=num_workers)
    adapter.init_centroids(loader, progress=show_progress and dist.is_main)
    if dist.is_main:
        atomic_save(adapter.centroids.state_dict(), path)


def _in_eval_window(fn):
    """Run ``fn(recipe, data, ...)`` inside the recipe's sliding window, where it sets one."""

    @functools.wraps(fn)
    def wrapper(recipe: Recipe, data: DataSpec, **kwargs: Any) -> dict[str, Any]:
        window = (contextlib.nullcontext() if recipe.eval_window is None
                  else inference_window(recipe.eval_window, recipe.eval_stride))
        with window:
            return fn(recipe, data, **kwargs)

    return wrapper


@_in_eval_window
def run_pipeline(
    recipe: Recipe,
    data: DataSpec,
    *,
    model: nn.Module,
    work_dir: str | os.PathLike,
    translator=None,
    dist: DistInfo | None = None,
    seed: int = 0,
    amp: bool | str = False,
    num_workers: int = 0,
    resume: bool = True,
    show_progress: bool = True,
    config: dict[str, Any] | None = None,
    adapter_kwargs: dict[str, Any] | None = None,
    stop_on_collapse: bool = False,
) -> dict[str, Any]:
    """Warm-up, then ``recipe.rounds`` x (pseudo-labels, centroids, self-training), then evaluation.

    Domain generalisation (``recipe.setting == "dg"``): the warm-up alone, on the source alone
    (``data.target`` is None), evaluated on every target of ``data``. Semi-supervised
    (``"ssl"``): ``data.source`` is the labelled split and ``data.target`` the unlabelled one.

    Every stage leaves its product in ``work_dir`` (``checkpoints/warmup_final.pt``,
    ``pseudo_round<r>/``, ``checkpoints/centroids_round<r>.pt``,
    ``checkpoints/self_training_<r>_final.pt``): a restarted run skips finished
    stages and resumes the one that was interrupted from its last checkpoint.
    Rank 0 writes ``config.json`` first, then after each stage ``model.safetensors``
    (the student, safe to share, rebuildable by :func:`diga.inference.load_model` /
    ``diga predict``), ``results.json`` (per-class IoU and mIoU, config,
    versions, device, seed) and ``miou.png`` (mIoU after each stage).

    ``stop_on_collapse`` stops a self-training stage at the first logged step whose
    collapse watch fired (:class:`~diga.engine.CollapseError`); otherwise a warning is
    issued and the log records it.

    A recipe with ``eval_window`` predicts in sliding windows for pseudo-labels and evaluation
    (:func:`~diga.engine.evaluation.inference_window`; it wins over a window set around the call).

    Returns:
        The results dictionary written to ``results.json``.
    """
    if (data.target is None) != (recipe.rounds == 0 and recipe.setting == "dg"):
        raise ValueError(f"`data.target` must be None exactly for domain generalisation (setting='dg'); got "
                         f"{'None' if data.target is None else 'a target'} for setting={recipe.setting!r}")
    dist = dist or DistInfo(0, 1, 0, torch.device("cpu"))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    run_info = {
        "recipe": recipe.to_dict(), "seed": seed, "device": str(dist.device),
        "device_name": device_name(dist.device), "world_size": dist.world_size, "amp": amp,
        "versions": versions(), **(config or {}),
    }
    if dist.is_main:
        atomic_write_json(work_dir / "config.json", run_info)
    results: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"), "config": run_info, "stages": {},
    }
    adapter = build_adapter(model, recipe, translator=translator, dist=dist, **(adapter_kwargs or {}))
    common = dict(
        work_dir=work_dir, seed=seed, dist=dist, amp=amp, num_workers=num_workers,
        log_every=recipe.log_every, checkpoint_every=recipe.checkpoint_every,
        image_every=recipe.image_every, palette=data.palette, resume=resume,
        show_progress=show_progress, config=run_info,
    )

    def export(name: str) -> None:
        """``model.safetensors`` (what ``diga predict`` loads) of the latest stage, when the model allows it."""
        if not dist.is_main or getattr(unwrap_model(adapter.student).model, "diga_config", None) is None:
            return
        export_model(adapter.student, work_dir / MODEL_FILE, classes=data.classes, palette=data.palette,
                     ignore_index=adapter.ignore_index, extra={"stage": name, "recipe": recipe.name})

    def record(name: str) -> None:
        res = _evaluate(adapter, data, recipe, dist, amp, num_workers, show_progress)
        if res is None:
            export(name)
            return
        results["stages"][name] = res
        results["final"] = {"stage": name, **res}
        export(name)
        if dist.is_main:
            atomic_write_json(work_dir / "results.json", results)
            names = list(results["stages"])
            points = [float(results["stages"][n]["miou"]) for n in names]
            img = line_plot({"mIoU": (list(range(len(names))), points)}, title=" -> ".join(names),
                            xlabel="stage", ylabel="mIoU")
            save_png(img, work_dir / "miou.png")

    # Stage 1: warm-up (distil to generalise).
    final = stage_checkpoint(work_dir, "warmup", "final")
    if resume and final.exists():
        adapter.load_state_dict(load_checkpoint(final, map_location=dist.device)["adapter"])
    else:
        train_stage(
            adapter, stage="warmup", name="warmup", steps=recipe.warmup.steps, optim=_optim(recipe, recipe.warmup),
            source=_composition(lambda s: data.source(s, recipe.warmup), recipe.warmup),
            target=None if data.target is None else _composition(
                lambda s: data.target(s, recipe.warmup, None), recipe.warmup),
            **common,
        )
    record("warmup")

    for r in range(1, recipe.rounds + 1):
        # Stage 2: pseudo-labels (streamed to disk, resumable file by file).
        pseudo_dir = work_dir / f"pseudo_round{r}"
        generate_pseudo_labels(adapter, data.target_full(), pseudo_dir, scales=recipe.scales, dist=dist,
                               amp=amp, palette=None, show_progress=show_progress)
        # Stage 3: class centroids from the current model on the target.
        _centroids(adapter, data, work_dir / "checkpoints" / f"centroids_round{r}.pt", dist, num_workers,
                   show_progress)
        # Stage 4: self-training with dynamic selection.
        name = f"self_training_{r}"
        final = stage_checkpoint(work_dir, name, "final")
        if resume and final.exists():
            adapter.load_state_dict(load_checkpoint(final, map_location=dist.device)["adapter"])
        else:
            train_stage(  # its first step restarts the teacher from the student (Adapter docstring)
                adapter, stage="self_training", name=name, steps=recipe.self_training.steps,
                optim=_optim(recipe, recipe.self_training),
                stop_on_collapse=stop_on_collapse,
                source=_composition(lambda s: data.source(s, recipe.self_training), recipe.self_training),
                target=_composition(
                    lambda s, d=pseudo_dir: data.target(s, recipe.self_training, d), recipe.self_training
                ),
                **common,
            )
        record(name)

    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["log"] = str(work_dir / "log.jsonl")
    results["note"] = (
        "'final' is the last stage's model on the validation set; no checkpoint was chosen on it."
    )
    if dist.is_main:
        atomic_write_json(work_dir / "results.json", results)
    return results
