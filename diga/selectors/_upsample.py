"""``argmax`` of a bilinearly upsampled score map without upsampling every channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diga._ops import class_argmax

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

    Bilinear interpolation is separable. The map is first interpolated along x
    at low height (``T``, ``(B, h, W, C)``: an eighth of the full upsample at
    stride 8), then each output pixel blends two rows of ``T`` along y. Where
    those two rows have the same argmax class ``k``, every blend of them has
    ``k`` as its argmax too (both score ``k`` highest, so their convex
    combination does), so only the other pixels, near class boundaries, need
    the ``C``-channel blend. Exact in real arithmetic; in floating point the
    blend is computed in our own order of operations, which can differ from
    ``F.interpolate`` by one ulp and therefore only where two classes tie to
    within one ulp.

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
        return class_argmax(scores)
    if not shortcut:
        up = F.interpolate(scores, size=(out_h, out_w), mode="bilinear", align_corners=align_corners)
        return class_argmax(up)

    device = scores.device
    y0, y1, ly = _taps(h, out_h, align_corners, device)
    x0, x1, lx = _taps(w, out_w, align_corners, device)
    # Along x first, at low height: T (B, h, W, C) is an eighth of the full upsample at stride 8.
    sc = (scores if scores.dtype == torch.float64 else scores.float()).permute(0, 2, 3, 1).contiguous()
    lx, ly = lx.to(sc.dtype), ly.to(sc.dtype)
    rows = sc.index_select(2, x0).lerp_(sc.index_select(2, x1), lx[:, None])
    row_best = rows.max(dim=-1).indices  # (B, h, W); max(...).indices: the first maximum, as argmax
    small = row_best.to(torch.int16) if c < 2**15 else row_best
    # A pixel blends rows y0 and y1 of T. Where both rows' argmax agree, so does any blend of them
    # (each row scores that class highest); only the others need the C-channel blend.
    top = small.index_select(1, y0)
    out = top.long()  # (B, H, W)
    todo = (top != small.index_select(1, y1)).nonzero(as_tuple=True)
    if todo[0].numel():
        bi, yi, xi = todo
        flat = rows.reshape(b * h * out_w, c)
        base = bi * (h * out_w) + xi
        blend = flat.index_select(0, base + y0[yi] * out_w).lerp_(
            flat.index_select(0, base + y1[yi] * out_w), ly[yi, None]
        )
        out[bi, yi, xi] = blend.max(dim=1).indices
    return out
