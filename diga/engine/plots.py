"""Pictures without matplotlib: label colouring, image grids and line plots on PIL."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["colorize", "image_grid", "line_plot", "save_png"]

_LINE_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def colorize(labels: Tensor, palette: Sequence[Sequence[int]], *, ignore_index: int = 255) -> Tensor:
    """``(..., H, W)`` class indices -> ``(..., 3, H, W)`` RGB floats in [0, 1].

    ``ignore_index`` and any value outside the palette are black.

    Example:
        >>> colorize(torch.tensor([[0, 255]]), [(255, 0, 0)])[0].tolist()
        [[1.0, 0.0]]
    """
    n = len(palette)
    table = torch.zeros(n + 1, 3)
    table[:n] = torch.tensor(palette, dtype=torch.float32) / 255
    labels = labels.long().cpu()
    inside = (labels >= 0) & (labels < n) & (labels != ignore_index)
    idx = torch.where(inside, labels, torch.full_like(labels, n))
    return table[idx].movedim(-1, -3)


def image_grid(rows: Mapping[str, Tensor], *, pad: int = 2) -> Image.Image:
    """Stack rows of ``(N, 3, H, W)`` images in [0, 1] (every row the same N, H, W) into one picture."""
    tiles = []
    for batch in rows.values():
        batch = batch.detach().float().cpu().clamp(0, 1)
        row = torch.cat([torch.nn.functional.pad(x, (pad, pad, pad, pad), value=1.0) for x in batch], dim=-1)
        tiles.append(row)
    grid = torch.cat(tiles, dim=-2)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save a PIL image atomically."""
    import io

    from diga.engine.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
) -> Image.Image:
    """A plain line plot (one polyline and legend entry per series), drawn with PIL.

    Args:
        series: name -> (xs, ys).

    Example:
        >>> img = line_plot({"mIoU": ([0, 1, 2], [0.1, 0.3, 0.4])}, title="t")
        >>> img.size
        (640, 400)
    """
    w, h = size
    left, right, top, bottom = 60, 20, 30, 45
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [y for _, ys in series.values() for y in ys if y == y]
    if not xs_all or not ys_all:
        draw.text((left, top), "no data", fill="black")
        return img
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all), max(ys_all)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    margin = 0.05 * (y1 - y0)
    y0, y1 = y0 - margin, y1 + margin

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        py = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
        return px, py

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, yv)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{yv:.3g}", fill="black")
        xv = x0 + (x1 - x0) * i / 4
        px, _ = to_px(xv, y0)
        draw.line([px, h - bottom, px, h - bottom + 4], fill="black")
        draw.text((px - 10, h - bottom + 6), f"{xv:.3g}", fill="black")
    for k, (name, (xs, ys)) in enumerate(series.items()):
        colour = _LINE_COLOURS[k % len(_LINE_COLOURS)]
        points = [to_px(x, y) for x, y in zip(xs, ys, strict=True) if y == y]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((left + 8, top + 6 + 14 * k), name, fill=colour)
    draw.text((left, 8), title, fill="black")
    draw.text((w // 2 - 20, h - 18), xlabel, fill="black")
    draw.text((4, top - 22), ylabel, fill="black")
    return img
