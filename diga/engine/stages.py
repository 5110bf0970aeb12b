"""One DiGA training stage (source-only, warm-up, self-training) on the shared resumable loop.

The stage's optimiser lives in :mod:`diga.engine.optim`, its batches in :mod:`diga.data.batch`,
evaluation and pseudo-labels in :mod:`diga.engine.evaluation`; their names are re-exported here.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from diga._checks import check_number
from diga.adapter import Adapter, StepOutput
from diga.data.batch import as_batch, concat_batches, to_device
from diga.engine.checkpoint import atomic_save
from diga.engine.distributed import DistInfo, step_generator
from diga.engine.evaluation import evaluate, generate_pseudo_labels
from diga.engine.guards import DivergenceGuard, TrainingDiverged
from diga.engine.log import scalars
from diga.engine.loop import ResumableLoop, stage_checkpoint
from diga.engine.optim import OptimConfig, autocast_context, make_optimizer, optimizer_step
from diga.engine.plots import colorize, image_grid, save_png
from diga.engine.sampling import infinite_loader

__all__ = [
    "CollapseError",
    "CollapseWarning",
    "OptimConfig",
    "as_batch",
    "autocast_context",
    "concat_batches",
    "evaluate",
    "generate_pseudo_labels",
    "make_optimizer",
    "optimizer_step",
    "run_step",
    "stage_checkpoint",
    "train_stage",
]

STAGES = ("source_only", "warmup", "self_training")


class CollapseWarning(UserWarning):
    """Self-training looks collapsed: a class the warm-up predicted often has all but vanished."""


class CollapseError(TrainingDiverged):
    """Raised by :func:`train_stage` with ``stop_on_collapse=True`` when it sees a collapse (``diga``
    ends such a run with its one-line message and exit status 1, as a diverged loss)."""


def collapse_message(stage: str, step: int, values: Mapping[str, float]) -> str:
    """The one-line report of a collapse seen in a step's logged values."""
    ratio = values.get("class_perplexity_ratio", float("nan"))
    return (
        f"{stage} step {step}: self-training looks collapsed: the teacher's target predictions now spread over "
        f"{ratio:.2f} times as many effective classes as the warm-up model's did (see 'class_perplexity_ratio', "
        "'share_ratio_min' and 'kept/<k>' in log.jsonl). Lower the learning rate, train longer in warm-up, or use "
        "offline pseudo-labels; stop_on_collapse / --stop-on-collapse stops the run here."
    )


def _sources(data: Dataset | Sequence[tuple[Dataset, int]] | None, batch_size: int | None, name: str):
    """Normalise a dataset or a batch composition ``[(dataset, per_step), ...]`` to the latter."""
    if data is None:
        return []
    if isinstance(data, Dataset):
        if batch_size is None:
            raise ValueError(f"`batch_size` is required when `{name}` is one dataset")
        return [(data, batch_size)]
    parts = list(data)
    if not parts or not all(isinstance(d, Dataset) and isinstance(n, int) and n > 0 for d, n in parts):
        raise ValueError(
            f"`{name}` must be a Dataset or a non-empty list of (Dataset, batch size > 0) pairs, got {data!r}"
        )
    return parts


def run_step(adapter: Adapter, stage: str, src: dict, tgt: dict | None, generator) -> StepOutput:
    """One forward of ``stage`` (``source_only``, ``warmup``, ``self_training``) on batch dicts."""
    if stage == "source_only":
        return adapter.source_only_step(src["image"], src["label"])
    if stage == "warmup":
        return adapter.warmup_step(
            src["image"], src["label"], None if tgt is None else tgt["image"], generator=generator
        )
    if tgt is None:
        raise ValueError("self-training needs a target dataset, got None")
    return adapter.self_training_step(
        src["image"], src["label"], tgt["image"], tgt.get("pseudo_label"),
        target_labels=tgt.get("label"), generator=generator,
    )


def _save_images(out: StepOutput, path: Path, palette, ignore_index: int, max_items: int = 4) -> None:
    rows = {}
    for name, tensor in out.images.items():
        t = tensor[:max_items]
        if t.ndim == 4 and t.shape[1] == 3:
            rows[name] = t.float()
        elif t.ndim == 3 and not t.is_floating_point() and t.dtype != torch.bool and palette is not None:
            rows[name] = colorize(t, palette, ignore_index=ignore_index)
    if rows:
        n = min(r.shape[0] for r in rows.values())
        save_png(image_grid({k: v[:n] for k, v in rows.items()}, labels=True), path)


def train_stage(
    adapter: Adapter,
    *,
    stage: str,
    steps: int,
    source: Dataset | Sequence[tuple[Dataset, int]],
    target: Dataset | Sequence[tuple[Dataset, int]] | None = None,
    batch_size: int | None = None,
    optim: OptimConfig,
    work_dir: str | os.PathLike,
    name: str | None = None,
    seed: int = 0,
    dist: DistInfo | None = None,
    amp: bool | str = False,
    num_workers: int = 0,
    log_every: int = 10,
    checkpoint_every: int = 100,
    eval_fn: Callable[[Adapter], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    image_every: int = 0,
    palette: Sequence[Sequence[int]] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool = True,
    config: Mapping[str, Any] | None = None,
    stop_on_collapse: bool = False,
) -> dict[str, Any]:
    """Train one stage (``source_only``, ``warmup`` or ``self_training``) for ``steps`` steps, resumably.

    Every batch is a pure function of ``(seed, step, rank)`` (step-indexed
    sampling, per-step generators for augmentations and masks) and the global
    RNG is checkpointed, so a killed run resumed from its last checkpoint ends
    with the same weights as an uninterrupted one (on CPU; CUDA kernels may
    differ in the last bits). Rank 0 writes checkpoints (atomically), logs
    (``<work_dir>/log.jsonl``) and image grids; every rank trains its shard.

    The optimiser and poly schedule are built here from ``optim`` (encoder at
    ``lr``, the rest at ``lr x head_lr_mult``). After each optimiser step the
    teacher takes one EMA step. When ``eval_fn`` is given and ``eval_every`` > 0,
    the model is evaluated periodically; the best checkpoint by that metric is
    kept as ``<stage>_best.pt`` and reported as best-by-validation, never as the
    result. On completion ``<stage>_final.pt`` holds the adapter's state.

    Args:
        source, target: a dataset (``batch_size`` items per step), or the paper's
            batch composition: ``[(dataset, n), ...]``, ``n`` items from each,
            concatenated (e.g. low-scale and full-scale crops).
        name: names the checkpoints and log records (default: ``stage``), so the
            same kind of stage can run twice (two self-training rounds).
        stop_after: stop (as if killed) after this many steps in this call, leaving the
            last checkpoint: for tests of resume.
        config: the resolved run configuration, stored in checkpoints.
        stop_on_collapse: in self-training, raise :class:`CollapseError` at the first logged
            step whose ``collapse`` part is set (the Adapter's :class:`~diga.ClassShareMonitor`);
            the last checkpoint stays as it was. Otherwise a :class:`CollapseWarning` is issued
            once per stage and each such step's log record has ``collapse: 1``.

    Returns:
        ``{"step": last step, "history": [eval records], "best": best eval record or None}``.
    """
    if stage not in STAGES:
        raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}")
    check_number(steps, "steps", low=1, integer=True)
    if batch_size is not None:
        check_number(batch_size, "batch_size", low=1, integer=True)
    source_parts = _sources(source, batch_size, "source")
    target_parts = _sources(target, batch_size, "target")
    name = name or stage
    dist = dist or DistInfo(0, 1, 0, next(adapter.parameters()).device)
    device = dist.device
    work_dir = Path(work_dir)
    best_path = stage_checkpoint(work_dir, name, "best")

    optimizer, scheduler = make_optimizer(adapter.student, optim, steps)
    autocast, scaler = autocast_context(device, amp)
    history, best = [], None

    def state(step: int, rng: Any) -> dict[str, Any]:
        return {"stage": name, "step": step, "adapter": adapter.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(), "rng": rng,
                "history": history, "best": best, "config": dict(config or {})}

    loop = ResumableLoop(name, steps=steps, work_dir=work_dir, dist=dist, state=state, resume=resume,
                         log_every=log_every, checkpoint_every=checkpoint_every, stop_after=stop_after,
                         show_progress=show_progress)
    start, ckpt = loop.start, loop.checkpoint
    if ckpt is not None:
        adapter.load_state_dict(ckpt["adapter"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        history, best = ckpt.get("history", []), ckpt.get("best")

    def loaders(parts, stream: int):
        return [
            infinite_loader(
                ds, batch_size=n, seed=seed * 31 + stream * 7 + k, start_step=start, rank=dist.rank,
                world_size=dist.world_size, num_workers=num_workers, pin_memory=device.type == "cuda",
            )
            for k, (ds, n) in enumerate(parts)
        ]

    def next_batch(iters) -> dict[str, Any] | None:
        if not iters:
            return None
        return to_device(concat_batches([as_batch(next(it)) for it in iters]), device)

    src_iters = loaders(source_parts, 0)
    tgt_iters = loaders(target_parts, 1)
    logger = loop.open_logger()

    # The global RNG (dropout, ...) is set last: building the loaders above draws from it.
    if not loop.restore_rng():
        # Each stage starts from its own seed, so a run resumed at any stage boundary repeats
        # the uninterrupted run (dropout and other global-RNG draws included).
        stage_seed = step_generator(seed, 0, stream=zlib.crc32(name.encode()) % 10_007, rank=dist.rank)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=stage_seed)))
    adapter.train()
    guard = DivergenceGuard(name, scaler=scaler)
    warned = False
    out: StepOutput | None = None

    def train(step: int) -> None:
        nonlocal out
        src = next_batch(src_iters)
        tgt = next_batch(tgt_iters)
        gen = step_generator(seed, step, stream=zlib.crc32(name.encode()) % 10_007, rank=dist.rank)
        with autocast:
            out = run_step(adapter, stage, src, tgt, gen)
        optimizer_step(out.loss, optimizer, scheduler, scaler)
        guard.check(step + 1, out.loss)  # a NaN loss stops the stage before a checkpoint holds it
        adapter.update_teacher()

    def report(done: int) -> None:
        nonlocal warned, best
        if loop.should_log(done):
            values = scalars(out.parts)
            values["lr"] = optimizer.param_groups[0]["lr"]
            logger.log(done, values)
            loop.bar.set_postfix(loss=f"{values.get('loss', float('nan')):.3f}")
            if values.get("collapse", 0) > 0:
                message = collapse_message(name, done, values)
                if stop_on_collapse:
                    logger.close()
                    raise CollapseError(message)
                if not warned:
                    warnings.warn(message, CollapseWarning, stacklevel=4)
                    warned = True
        if image_every and dist.is_main and (done % image_every == 0 or done == 1):
            _save_images(out, work_dir / "images" / f"{name}_{done:06d}.png", palette, adapter.ignore_index)
        if eval_fn is not None and eval_every and (done % eval_every == 0 or done == steps):
            adapter.eval()
            metrics = dict(eval_fn(adapter))
            adapter.train()
            record = {"stage": name, "step": done, **scalars(metrics)}
            history.append(record)
            logger.log(done, {f"val/{k}": v for k, v in scalars(metrics).items()})
            if best is None or record.get("miou", -1) > best.get("miou", -1):
                best = record
                if dist.is_main:
                    atomic_save({"adapter": adapter.state_dict(), "record": record,
                                 "note": "best by validation mIoU: not an unbiased result",
                                 "config": dict(config or {})}, best_path)

    stopped = loop.run(train, report)
    if stopped is not None:
        return {"step": stopped, "history": history, "best": best, "stopped": True}
    loop.finish({"adapter": adapter.state_dict(), "stage": name, "step": steps,
                 "history": history, "best": best, "config": dict(config or {})})
    return {"step": steps, "history": history, "best": best}
