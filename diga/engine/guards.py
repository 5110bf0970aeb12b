"""What keeps a run safe: one run per work dir, and a stop when the loss diverges.

A run holds ``<work_dir>/.diga.lock`` with an advisory ``flock`` for as long as
it lives: a second run on the same folder stops at once, and a killed run
leaves nothing stuck (the system drops the lock with the process).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from torch import Tensor

__all__ = ["LOCK_FILE", "DivergenceGuard", "TrainingDiverged", "WorkDirBusy", "work_dir_lock"]

LOCK_FILE = ".diga.lock"


class WorkDirBusy(RuntimeError):
    """Another live run holds the work dir."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (or, under fp16 AMP, too many steps in a row were skipped)."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[Path | None]:
    """Hold ``<work_dir>/.diga.lock`` for the ``with`` block (creating ``work_dir``).

    Args:
        work_dir: the run's folder.
        enabled: False (ranks other than 0) makes this a no-op.

    Raises:
        WorkDirBusy: a live process holds the lock (the message gives its pid).
        ValueError: ``work_dir`` cannot be created or written (names it and the reason).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with work_dir_lock(d) as lock:
        ...     lock.name
        '.diga.lock'
    """
    if not enabled:
        yield None
        return
    work_dir = Path(work_dir)
    path = work_dir / LOCK_FILE
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ValueError(f"--work-dir {work_dir} is not writable: {err.strerror or err}; expected a folder "
                         "diga can create files in") from err
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, no guard
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise WorkDirBusy(
                    f"--work-dir {work_dir} is in use by another live diga run (pid {holder}); wait for it "
                    "to end or choose another --work-dir"
                ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing drops the flock; the file stays (removing it would race a waiting run)


class DivergenceGuard:
    """Stops a stage whose loss is no longer finite, naming the stage and step.

    Without a gradient scaler one NaN or infinite loss stops the run (before
    any checkpoint holds the broken weights). Under fp16 AMP the scaler skips
    a step whose gradients overflow and lowers its scale, which is normal now
    and then: those skipped steps are counted, and only ``max_skipped`` in a
    row stop the run.

    Args:
        stage: the stage's name, for the message.
        scaler: the ``torch.amp.GradScaler`` in use, or None.
        max_skipped: consecutive skipped steps that count as divergence.

    Example:
        >>> guard = DivergenceGuard("warmup")
        >>> guard.check(1, torch.tensor(0.5))
        >>> guard.check(2, torch.tensor(float("nan")))
        Traceback (most recent call last):
        ...
        diga.engine.guards.TrainingDiverged: stage 'warmup' diverged at step 2: the loss is nan...
    """

    def __init__(self, stage: str, *, scaler=None, max_skipped: int = 25) -> None:
        if max_skipped < 1:
            raise ValueError(f"`max_skipped` must be >= 1, got {max_skipped}")
        self.stage = stage
        self.scaler = scaler
        self.max_skipped = int(max_skipped)
        self.skipped = 0  # consecutive skipped steps
        self.skipped_total = 0
        self._scale = None if scaler is None else float(scaler.get_scale())

    def check(self, step: int, loss: Tensor) -> None:
        """Call after the optimiser step of step ``step`` (counted from 1) with its loss."""
        if self.scaler is not None:
            scale = float(self.scaler.get_scale())
            if scale < self._scale:  # the scaler found inf/NaN gradients and skipped this step
                self.skipped += 1
                self.skipped_total += 1
            else:
                self.skipped = 0
            self._scale = scale
            if self.skipped >= self.max_skipped:
                raise TrainingDiverged(
                    f"stage {self.stage!r} diverged at step {step}: the gradient scaler skipped the last "
                    f"{self.skipped} steps (inf/NaN gradients; scale now {scale:g}). The last checkpoint, "
                    "written before, is intact: lower --lr or check the data, then rerun with --resume"
                )
            return
        value = float(loss.detach().float())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"stage {self.stage!r} diverged at step {step}: the loss is {value}. The last checkpoint, "
                "written before, is intact: lower --lr or check the data, then rerun with --resume"
            )
