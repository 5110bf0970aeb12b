"""Mean teacher: an exponential moving average of the student's weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diga._checks import check_number

__all__ = ["EMATeacher", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> unwrap_model(nn.parallel.DataParallel(net)) is net
        True
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.parallel.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class EMATeacher(nn.Module):
    """A frozen copy of the student that follows it by exponential moving average.

    ``update(student)`` sets every teacher parameter to
    ``alpha * teacher + (1 - alpha) * student`` with the paper's "true average"
    ramp ``alpha = min(1 - 1 / (step + 1), momentum)`` (the first update copies the
    student, the next ones average all students so far until ``momentum`` takes
    over), as one fused multi-tensor ``_foreach_lerp_``. Buffers (batch-norm
    statistics) are copied from the student. The step counter is part of
    ``state_dict``.

    The teacher is kept in eval mode (dropout off, batch-norm running
    statistics); ``train_mode=True`` keeps it in train mode whenever its parent
    trains, as the paper's script does (there for the ablation).

    Args:
        student: the student model; DDP, DataParallel and ``torch.compile`` wrappers are unwrapped.
        momentum: the EMA's ceiling ``alpha`` (0.999 in the paper).
        train_mode: keep the teacher in train mode like the paper's script.

    Example:
        >>> student = nn.Linear(3, 2)
        >>> teacher = EMATeacher(student, momentum=0.999)
        >>> with torch.no_grad():
        ...     _ = student.weight.add_(1.0)
        >>> teacher.update(student)  # step 0: alpha = 0, a plain copy
        >>> bool(torch.equal(teacher.model.weight, student.weight)), teacher.step
        (True, 1)
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, *, train_mode: bool = False):
        super().__init__()
        if not isinstance(student, nn.Module):
            raise ValueError(f"`student` must be an nn.Module, got {type(student).__name__}")
        check_number(momentum, "momentum", low=0, high=1)
        self.momentum = float(momentum)
        self.train_mode = bool(train_mode)
        self.model = copy.deepcopy(unwrap_model(student))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.step = 0
        self.train(student.training)

    def train(self, mode: bool = True) -> EMATeacher:
        self.training = mode
        self.model.train(mode and self.train_mode)
        return self

    def alpha(self, step: int | None = None) -> float:
        """The EMA weight of the teacher at ``step`` (the current step by default)."""
        step = self.step if step is None else step
        return min(1.0 - 1.0 / (step + 1), self.momentum)

    def _pairs(self, student: nn.Module):
        src = unwrap_model(student)
        t_params = list(self.model.parameters())
        s_params = list(src.parameters())
        t_bufs = list(self.model.buffers())
        s_bufs = list(src.buffers())
        if len(t_params) != len(s_params) or any(
            a.shape != b.shape for a, b in zip(t_params, s_params, strict=True)
        ):
            raise ValueError(
                "`student` must have the teacher's architecture: parameter lists differ "
                f"({len(s_params)} vs {len(t_params)} tensors)"
            )
        if len(t_bufs) != len(s_bufs):
            raise ValueError(
                f"`student` must have the teacher's buffers: got {len(s_bufs)}, expected {len(t_bufs)}"
            )
        return t_params, s_params, t_bufs, s_bufs

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards ``student`` (call after the optimiser step, once per step)."""
        t_params, s_params, t_bufs, s_bufs = self._pairs(student)
        weight = 1.0 - self.alpha()
        by_dtype: dict[tuple[torch.dtype, torch.device], tuple[list, list]] = {}
        for t, s in zip(t_params, s_params, strict=True):
            group = by_dtype.setdefault((t.dtype, t.device), ([], []))
            group[0].append(t)
            group[1].append(s.detach().to(dtype=t.dtype, device=t.device))
        for ts, ss in by_dtype.values():
            if ts[0].is_floating_point():
                torch._foreach_lerp_(ts, ss, weight)
            else:
                torch._foreach_copy_(ts, ss)
        if t_bufs:
            torch._foreach_copy_(t_bufs, [b.detach() for b in s_bufs])
        self.step += 1

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The teacher's forward, without gradient."""
        return self.model(*args, **kwargs)

    def get_extra_state(self) -> dict:
        return {"step": self.step, "momentum": self.momentum}

    def set_extra_state(self, state: dict) -> None:
        self.step = int(state["step"])

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, train_mode={self.train_mode}, step={self.step}"
