"""Run logs: a JSON-lines file of every logged step (rank 0 writes), TensorBoard when installed, progress bars."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diga._io import WriteError, strict_json

__all__ = ["JsonlLogger", "progress", "scalars"]


def scalars(parts: Mapping[str, Any]) -> dict[str, float]:
    """Tensors and numbers -> plain floats (one host read per value: call only when logging)."""
    out = {}
    for k, v in parts.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def _summary_writer(log_dir: str | os.PathLike, purge_step: int | None) -> Any:
    """A TensorBoard writer, or None where the ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package, an optional extra
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=30)


class JsonlLogger:
    """Appends one JSON object per line; on resume, lines past the resumed step are dropped.

    With ``tensorboard`` set and the ``tensorboard`` package installed, every
    scalar also goes to TensorBoard as ``<stage>/<name>`` (events past the
    resumed step are purged there too); without the package, nothing changes.

    Args:
        path: the ``.jsonl`` file.
        enabled: False on every rank but 0.
        resume_step: when resuming, keep only records with ``step < resume_step`` of this stage.
        stage: written into every record.
        tensorboard: folder for TensorBoard event files (None: no TensorBoard).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        enabled: bool = True,
        stage: str = "",
        resume_step: int | None = None,
        tensorboard: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.stage = stage
        self.writer = _summary_writer(tensorboard, resume_step) if enabled and tensorboard is not None else None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.exists():
                kept = [
                    line for line in self.path.read_text().splitlines()
                    if line.strip() and not self._after(json.loads(line), resume_step)
                ]
                from diga.engine.checkpoint import atomic_write_text

                atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def _after(self, record: dict, step: int) -> bool:
        return record.get("stage") == self.stage and record.get("step", -1) >= step

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        numbers = scalars(values)
        record = {"stage": self.stage, "step": int(step), **numbers}
        try:
            with self.path.open("a") as f:
                f.write(strict_json(record) + "\n")  # a NaN loss is logged as null: every JSON reader reads it
        except OSError as err:  # a full disk: the one-line "stopped" error, naming the file
            raise WriteError(err.errno, f"cannot write {self.path}: {err.strerror or err} (its earlier lines are "
                                        "intact)") from err
        if self.writer is not None:
            for key, value in numbers.items():
                self.writer.add_scalar(f"{self.stage}/{key}" if self.stage else key, value, int(step))

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the JSON lines are written as they come)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict]:
        path = Path(path)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar (disabled on non-main ranks or when ``enabled`` is False)."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial,
                dynamic_ncols=True, leave=False)
