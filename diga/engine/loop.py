"""The resumable training loop both trainers run (the DiGA stages and the translator), as step functions.

What it owns: the stage's ``<name>_last.pt`` (loaded on resume, written every
``checkpoint_every`` steps with the global RNG of every rank, atomically, by
rank 0, then a barrier), the JSON-lines logger that keeps the records written
before the checkpoint, the progress bar, the step range and the early stop
of the resume tests, the poly schedule and the backward / optimiser step.
What a trainer owns: its models, optimisers and batches (the step function),
what it logs and draws (the report function) and what its checkpoints hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diga import _dist
from diga._checks import check_number
from diga.engine.checkpoint import atomic_save, get_rng_state, load_checkpoint, set_rng_state
from diga.engine.distributed import DistInfo
from diga.engine.log import JsonlLogger, progress

__all__ = ["WARMUP_START", "ResumableLoop", "backward_step", "poly_schedule", "stage_checkpoint", "warmup_factor"]


def stage_checkpoint(work_dir: str | os.PathLike, stage: str, kind: str = "last") -> Path:
    """``<work_dir>/checkpoints/<stage>_<kind>.pt`` (kind: last, final, best)."""
    return Path(work_dir) / "checkpoints" / f"{stage}_{kind}.pt"


#: Where a linear learning-rate warm-up starts, as a fraction of the rate (VFM-UDA's ``start_warmup_lr``).
WARMUP_START = 1e-3


def warmup_factor(step: int, warmup_steps: int, start: float = WARMUP_START) -> float:
    """The linear warm-up's multiplier: ``start`` at step 0, rising linearly to 1 at ``warmup_steps``, then 1.

    Example:
        >>> [warmup_factor(s, 4, start=0.0) for s in (0, 1, 4, 9)], warmup_factor(3, 0)
        ([0.0, 0.25, 1.0, 1.0], 1.0)
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * step / warmup_steps


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float, *, warmup_steps: int = 0):
    """The poly learning-rate decay ``(1 - step / total) ** power`` (clamped at 0 after ``total``).

    ``warmup_steps > 0`` multiplies it by :func:`warmup_factor` (a linear rise from
    :data:`WARMUP_START` x the rate over the first ``warmup_steps`` steps), as ViT fine-tuning
    recipes do; 0 (default) leaves the decay alone.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = poly_schedule(opt, 4, 1.0)
        >>> lrs = []
        >>> for _ in range(3):
        ...     opt.step(); sched.step(); lrs.append(round(sched.get_last_lr()[0], 2))
        >>> lrs
        [0.75, 0.5, 0.25]
    """
    total = max(1, total_steps)
    check_number(warmup_steps, "warmup_steps", low=0, integer=True)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: max(0.0, 1.0 - min(step, total) / total) ** power * warmup_factor(step, warmup_steps),
    )


def backward_step(loss: Tensor, optimizer: torch.optim.Optimizer, scaler=None, *, update_scaler: bool = True) -> None:
    """Backward (scaled when fp16 AMP gives a ``scaler``) and one optimiser step; gradients cleared after.

    ``update_scaler=False`` leaves ``scaler.update()`` to the caller, for steps that run
    several optimisers under one scaler (the translator's critics, then generators).
    """
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        if update_scaler:
            scaler.update()
    else:
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class ResumableLoop:
    """One stage's resumable loop: ``run(step_fn, report_fn)`` over steps ``[start, steps)``.

    ``start`` is 0, or the step of ``<work_dir>/checkpoints/<name>_last.pt``
    when ``resume`` and that file exists (:attr:`checkpoint` holds it, loaded
    onto this rank's device, for the trainer to restore its state from). Each
    step the loop calls ``step_fn(step)`` (the training step), advances the
    bar, calls ``report_fn(done)`` (logging, images, evaluation) and every
    ``checkpoint_every`` steps writes the last checkpoint (:meth:`save_last`).

    Args:
        name: the stage's name (checkpoint files, log records, the bar).
        steps: the stage's length.
        work_dir: the run folder.
        dist: this process's place.
        resume: continue from the last checkpoint when it exists.
        state: ``state(step, rng) -> dict`` the last checkpoint holds (``rng``: every rank's RNG).
        log_every: :meth:`should_log` interval (0: never).
        checkpoint_every: last-checkpoint interval (0: only at the end).
        stop_after: stop (as if killed) after this many steps in this call: for tests of resume.
        show_progress: a tqdm bar on rank 0.

    Example:
        >>> import tempfile
        >>> seen = []
        >>> one = DistInfo(0, 1, 0, torch.device("cpu"))
        >>> loop = ResumableLoop("demo", steps=3, work_dir=tempfile.mkdtemp(), dist=one,
        ...                      state=lambda step, rng: {"step": step, "rng": rng}, show_progress=False)
        >>> loop.run(seen.append, lambda done: None), seen
        (None, [0, 1, 2])
    """

    def __init__(
        self,
        name: str,
        *,
        steps: int,
        work_dir: str | os.PathLike,
        dist: DistInfo,
        state: Callable[[int, Any], Mapping[str, Any]],
        resume: bool = True,
        log_every: int = 0,
        checkpoint_every: int = 0,
        stop_after: int | None = None,
        show_progress: bool = True,
    ) -> None:
        check_number(steps, "steps", low=1, integer=True)
        for arg, value in (("log_every", log_every), ("checkpoint_every", checkpoint_every)):
            check_number(value, arg, low=0, integer=True)
        if stop_after is not None:
            check_number(stop_after, "stop_after", low=0, integer=True)
        self.name, self.steps, self.dist, self.state = name, int(steps), dist, state
        self.work_dir = Path(work_dir)
        self.log_every, self.checkpoint_every, self.stop_after = log_every, checkpoint_every, stop_after
        self.show_progress = show_progress
        self.last_path = stage_checkpoint(self.work_dir, name, "last")
        self.final_path = stage_checkpoint(self.work_dir, name, "final")
        self.checkpoint: Mapping[str, Any] | None = None
        if resume and self.last_path.exists():
            self.checkpoint = load_checkpoint(self.last_path, map_location=dist.device)
        self.start = int(self.checkpoint["step"]) if self.checkpoint is not None else 0
        self.logger: JsonlLogger | None = None
        self.bar = None

    def open_logger(self) -> JsonlLogger:
        """``<work_dir>/log.jsonl`` for this stage, keeping the records up to the checkpointed step
        (they were written before the checkpoint) and dropping later ones."""
        self.logger = JsonlLogger(self.work_dir / "log.jsonl", enabled=self.dist.is_main, stage=self.name,
                                  resume_step=self.start + 1 if self.start > 0 else None,
                                  tensorboard=self.work_dir / "tensorboard")
        return self.logger

    def restore_rng(self) -> bool:
        """Set the global RNG to this rank's state in the checkpoint; False when starting fresh."""
        if self.checkpoint is None:
            return False
        rng = self.checkpoint["rng"]
        set_rng_state(rng[self.dist.rank] if isinstance(rng, list) else rng)
        return True

    def should_log(self, done: int) -> bool:
        """Whether the step that made ``done`` steps is logged (every ``log_every``, and the last)."""
        return bool(self.log_every) and (done % self.log_every == 0 or done == self.steps)

    def save_last(self, step: int) -> None:
        """Write ``<name>_last.pt`` (rank 0, atomically) with every rank's global RNG; all ranks wait."""
        rng = get_rng_state()
        if self.dist.world_size > 1:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if self.dist.is_main:
            atomic_save(dict(self.state(step, rng)), self.last_path)
        _dist.barrier()

    def run(self, step_fn: Callable[[int], Any], report_fn: Callable[[int], Any]) -> int | None:
        """Train from ``start`` to ``steps``; returns None when done, or the step ``stop_after`` stopped at."""
        self.bar = progress(total=self.steps, desc=self.name, enabled=self.show_progress and self.dist.is_main,
                            initial=self.start)
        try:
            for step in range(self.start, self.steps):
                if self.stop_after is not None and step - self.start >= self.stop_after:
                    return step
                step_fn(step)
                self.bar.update(1)
                done = step + 1
                report_fn(done)
                if self.checkpoint_every and done % self.checkpoint_every == 0 and done < self.steps:
                    self.save_last(done)
        finally:
            self.bar.close()
        return None

    def finish(self, final: Mapping[str, Any]) -> None:
        """Close the log, write the last checkpoint at ``steps`` and ``final`` as ``<name>_final.pt``."""
        if self.logger is not None:
            self.logger.close()
        self.save_last(self.steps)
        if self.dist.is_main:
            atomic_save(dict(final), self.final_path)
        _dist.barrier()
