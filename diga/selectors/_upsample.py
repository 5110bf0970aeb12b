"""``argmax`` of a bilinearly upsampled score map without upsampling every channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bilinear_argmax"]


def _taps(n_in: int, n_out: int, align_corners: bool, device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices ``i0, i1`` and weight ``l1`` of ``i1`` for each output index (as F.interpolate)."""
    dst = torch.arange(n_out, device=device, dtype=torch.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, (src - i0).float()


def bilinear_argmax(
    scores: Tensor, size: tuple[int, int], *, align_corners: bool = True, shortcut: bool = True
) -> Tensor:
    """``F.interpolate(scores, size, mode="bilinear").argmax(1)``, computed where it must be.

    Where the four low-resolution neighbours of an output pixel share one
    argmax class ``k``, every bilinear blend of them has ``k`` as its argmax
    too (each corner scores ``k`` highest, so their convex combination does),
    so only pixels in cells whose corners disagree need the full ``C``-channel
    blend. Exact in real arithmetic; in floating point the blend is computed in
    our own order of operations, which can differ from ``F.interpolate`` by one
    ulp and therefore only where two classes tie to within one ulp.

    The shortcut finds the disagreeing pixels with ``nonzero`` (a host sync), so
    ``shortcut=False`` (plain upsample + argmax) is the sync-free choice for CUDA.

    Args:
        scores: ``(B, C, h, w)`` float scores.
        size: output ``(H, W)``.

    Returns:
        ``(B, H, W)`` int64.

    Example:
        >>> s = torch.randn(2, 5, 4, 6, generator=torch.Generator().manual_seed(0))
        >>> full = F.interpolate(s, (16, 24), mode="bilinear", align_corners=True).argmax(1)
        >>> bool((bilinear_argmax(s, (16, 24)) == full).all())
        True
    """
    b, c, h, w = scores.shape
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return scores.argmax(dim=1)
    if not shortcut:
        up = F.interpolate(scores, size=(out_h, out_w), mode="bilinear", align_corners=align_corners)
        return up.argmax(dim=1)

    device = scores.device
    low = scores.argmax(dim=1)  # (B, h, w)
    small = low.to(torch.int16) if c < 2**15 else low
    right = torch.cat([small[:, :, 1:], small[:, :, -1:]], dim=2)
    down = torch.cat([small[:, 1:], small[:, -1:]], dim=1)
    diag = torch.cat([right[:, 1:], right[:, -1:]], dim=1)
    cell_agrees = (small == right) & (small == down) & (small == diag)  # corner (i, j) of cell (i, j)

    y0, y1, ly = _taps(h, out_h, align_corners, device)
    x0, x1, lx = _taps(w, out_w, align_corners, device)
    rows, cols = y0[:, None], x0[None, :]
    out = low[:, rows, cols]  # (B, H, W): the class of the cell's top-left corner
    todo = (~cell_agrees[:, rows, cols]).nonzero(as_tuple=True)
    if todo[0].numel():
        bi, yi, xi = todo
        sc = scores.permute(0, 2, 3, 1).float()  # (B, h, w, C), small
        ya, yb, wy = y0[yi], y1[yi], ly[yi, None]
        xa, xb, wx = x0[xi], x1[xi], lx[xi, None]
        top = (1 - wx) * sc[bi, ya, xa] + wx * sc[bi, ya, xb]
        bottom = (1 - wx) * sc[bi, yb, xa] + wx * sc[bi, yb, xb]
        out[bi, yi, xi] = ((1 - wy) * top + wy * bottom).argmax(dim=1)
    return out
