"""A stage's optimiser (the paper's SGD groups and poly schedule), its step, and mixed precision."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diga._checks import check_number
from diga.engine.loop import backward_step, poly_schedule, warmup_factor
from diga.models import param_groups

__all__ = ["LR_SCHEDULES", "OptimConfig", "autocast_context", "make_optimizer", "optimizer_step", "rise_schedule"]

#: Learning-rate schedules of a stage: the poly decay, or a linear rise over the whole stage.
LR_SCHEDULES = ("poly", "rise")


@dataclass
class OptimConfig:
    """Optimiser and schedule of one stage (the paper: SGD 2.5e-4, momentum 0.9, wd 5e-4, poly 0.9,
    head at 10x). ``schedule``: ``"poly"`` or ``"rise"`` (:data:`LR_SCHEDULES`).

    ``layer_decay`` (in ``(0, 1]``; None: off) gives each encoder layer of a ViT
    ``lr * layer_decay ** (top - layer)`` (:func:`~diga.models.param_groups`);
    ``warmup_steps`` (0: off) multiplies the schedule by a linear rise from
    ``1e-3`` x the rate over a stage's first steps (:func:`~diga.engine.loop.warmup_factor`).

    Example:
        >>> OptimConfig(optimizer="adamw", lr=1e-5, weight_decay=0.01, layer_decay=0.9, warmup_steps=1500).power
        0.9
    """

    optimizer: str = "sgd"
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    schedule: str = "poly"
    layer_decay: float | None = None
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in LR_SCHEDULES:
            raise ValueError(f"`schedule` must be one of {LR_SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"`optimizer` must be 'sgd', 'adam' or 'adamw', got {self.optimizer!r}")
        check_number(self.lr, "lr", low=0, low_open=True)
        check_number(self.head_lr_mult, "head_lr_mult", low=0, low_open=True)
        check_number(self.power, "power", low=0)
        if self.layer_decay is not None:
            check_number(self.layer_decay, "layer_decay", low=0, high=1, low_open=True)
        check_number(self.warmup_steps, "warmup_steps", low=0, integer=True)


def rise_schedule(optimizer: torch.optim.Optimizer, total_steps: int, *, warmup_steps: int = 0):
    """A linear rise from 0 to the learning rate over the whole stage: ``lr * step / total``.

    What the SYNTHIA warm-up script runs: it calls ``poly_lr_scheduler_warm(base_lr, i_iter,
    60000, 0.9)``, whose positional parameters are ``(base_lr, iter, warmup, max_iter, power)``,
    so its "warm-up" lasts the whole 60000 iterations (docs/recipes.md). ``warmup_steps``
    multiplies it by :func:`~diga.engine.loop.warmup_factor`, as for :func:`poly_schedule`.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = rise_schedule(opt, 4)
        >>> [round(g["lr"], 2) for g in opt.param_groups], sched.get_last_lr()
        ([0.0], [0.0])
        >>> for _ in range(2):
        ...     opt.step(); sched.step()
        >>> sched.get_last_lr()
        [0.5]
    """
    total = max(1, total_steps)
    check_number(warmup_steps, "warmup_steps", low=0, integer=True)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(step, total) / total * warmup_factor(step, warmup_steps)
    )


def make_optimizer(model: nn.Module, cfg: OptimConfig, total_steps: int):
    """Optimiser over the encoder (lr; per layer with ``cfg.layer_decay``) and the rest (lr x head_lr_mult),
    with ``cfg.schedule``'s schedule and ``cfg.warmup_steps`` of linear warm-up.

    Example:
        >>> from diga.models import create_model
        >>> vit = create_model("timm", num_classes=2, encoder_name="vit_small_patch14_dinov2", depth=3)
        >>> cfg = OptimConfig(optimizer="adamw", lr=1.0, head_lr_mult=10.0, layer_decay=0.5, warmup_steps=2)
        >>> opt, sched = make_optimizer(vit, cfg, 10)
        >>> [g["initial_lr"] for g in opt.param_groups], sched.get_last_lr()[-1]  # 10 x 1e-3 at step 0
        ([0.125, 0.25, 0.5, 1.0, 10.0], 0.01)
    """
    groups = param_groups(model, cfg.lr, head_lr_mult=cfg.head_lr_mult, layer_decay=cfg.layer_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "rise":
        return opt, rise_schedule(opt, total_steps, warmup_steps=cfg.warmup_steps)
    return opt, poly_schedule(opt, total_steps, cfg.power, warmup_steps=cfg.warmup_steps)


def autocast_context(device: torch.device, amp: bool | str):
    """``torch.autocast`` for ``amp`` (True: bf16 where supported, else fp16; or 'bf16'/'fp16')."""
    if not amp:
        return contextlib.nullcontext(), None
    if amp is True:
        if device.type == "cuda":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            amp = "bf16"
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"`amp` must be True, False, 'bf16' or 'fp16', got {amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if (amp == "fp16" and device.type == "cuda") else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


def optimizer_step(loss: Tensor, optimizer, scheduler, scaler=None) -> None:
    """Backward (scaled when fp16 AMP gives a ``scaler``), optimiser and schedule step, gradients cleared."""
    backward_step(loss, optimizer, scaler)
    scheduler.step()
