"""Pictures: label colouring, image grids (``torchvision.utils.make_grid``, with row labels) and line
plots (matplotlib, the optional extra ``pip install diga[plots]``; PIL draws a plain fallback that
says matplotlib is missing)."""

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


def image_grid(
    rows: Mapping[str, Tensor], *, pad: int = 2, labels: bool = False, scale: int = 1
) -> Image.Image:
    """Stack rows of ``(N, 3, H, W)`` images in [0, 1] (every row the same N, H, W) into one picture.

    Each row is one :func:`torchvision.utils.make_grid` (``pad`` white pixels between
    and around the tiles), the rows one under the other.

    Args:
        rows: row name -> images.
        pad: white border, in pixels.
        labels: write each row's name in a white column on the left.
        scale: enlarge every tile by this integer factor (nearest), so small images can be read.

    Example:
        >>> img = image_grid({"source": torch.rand(2, 3, 8, 8), "target": torch.rand(2, 3, 8, 8)}, pad=1)
        >>> img.size
        (19, 20)
        >>> image_grid({"source": torch.rand(2, 3, 8, 8)}, labels=True, scale=2).size[0] > 2 * 2 * 8
        True
    """
    from torchvision.utils import make_grid

    if not rows:
        raise ValueError("`rows` must hold at least one row of images, got none")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be a whole number >= 1, got {scale!r}")
    tiles = []
    for batch in rows.values():
        batch = batch.detach().float().cpu().clamp(0, 1)
        if scale > 1:
            batch = torch.nn.functional.interpolate(batch, scale_factor=scale, mode="nearest")
        if batch.shape[0] == 1:  # make_grid returns a lone image as it is: give it the same border
            tiles.append(torch.nn.functional.pad(batch[0], (pad, pad, pad, pad), value=1.0))
        else:
            tiles.append(make_grid(batch, nrow=batch.shape[0], padding=pad, pad_value=1.0))
    grid = torch.cat(tiles, dim=-2)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    if not labels:
        return image
    draw = ImageDraw.Draw(image)
    width = max(int(draw.textlength(name)) for name in rows) + 8
    out = Image.new("RGB", (image.width + width, image.height), "white")
    out.paste(image, (width, 0))
    draw = ImageDraw.Draw(out)
    row_h = image.height / len(rows)
    for k, name in enumerate(rows):
        draw.text((4, int(k * row_h + row_h / 2) - 5), name, fill="black")
    return out


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
    """A line plot, one line and legend entry per series (NaN values leave gaps).

    Drawn with matplotlib (``pip install diga[plots]``); without it, a plain PIL
    fallback that says so in its corner.

    Args:
        series: name -> (xs, ys).
        title, xlabel, ylabel: the axes' text (give the units the tables use).
        size: ``(width, height)`` in pixels.

    Example:
        >>> img = line_plot({"mIoU": ([0, 1, 2], [0.1, 0.3, 0.4])}, title="t")
        >>> img.size
        (640, 400)
    """
    plt = _matplotlib()
    if plt is None:
        return _pil_line_plot(series, title=title, xlabel=xlabel, ylabel=ylabel, size=size)
    import io

    w, h = size
    fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
    try:
        for name, (xs, ys) in series.items():
            ax.plot(list(xs), [float(y) for y in ys], marker="o", markersize=3, label=name)
        if not series or not any(len(xs) for xs, _ in series.values()):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _matplotlib():
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed."""
    import sys

    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:  # keep a backend the user chose
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _pil_line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int],
) -> Image.Image:
    """The fallback of :func:`line_plot` without matplotlib: polylines and a legend on PIL."""
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
    draw.text((w - 250, 8), "matplotlib missing: pip install diga[plots]", fill=(127, 127, 127))
    return img
