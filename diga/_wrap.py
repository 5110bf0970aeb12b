"""``unwrap_model``: the plain module inside DDP / DataParallel / ``torch.compile`` wrappers (private)."""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap_model"]


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

