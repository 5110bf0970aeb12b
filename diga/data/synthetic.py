"""A built-in synthetic -> real domain shift: procedural street scenes drawn on the fly."""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from diga._checks import check_number
from diga.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

__all__ = ["CONTROL_SHIFT_KINDS", "SHIFT_KINDS", "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "SyntheticShift"]

#: The eight classes of :class:`SyntheticShift`, in Cityscapes order (a subset of its 19).
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car",
)
#: Cityscapes colours of :data:`SYNTHETIC_CLASSES` (for drawing label maps).
SYNTHETIC_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)] for name in SYNTHETIC_CLASSES
)

_ROAD, _SIDEWALK, _BUILDING, _POLE, _VEGETATION, _SKY, _PERSON, _CAR = range(8)
_UNLABELLED = 8  # material of pixels labelled ``ignore_index`` (stray props, the ego bonnet)
_DOMAINS = ("source", "target")
_MIN_SIDE = 16

# Per-domain scene statistics: object counts are inclusive ranges; building heights above the
# horizon are fractions of H; the last two are the chances of an unlabelled prop and of the bonnet.
# ``horizon`` is its row as a fraction of H, ``metre`` the pixels per metre on the bottom row as a
# fraction of W, ``road`` the road's half-width at the bottom as a fraction of W (each side).
_LAYOUT = {
    "source": {
        "cars": (0, 3), "persons": (2, 6), "poles": (2, 5), "trees": (1, 3),
        "building_height": (0.16, 0.42), "unlabelled_prop": 0.5, "bonnet": 0.0,
        "horizon": (0.36, 0.48), "metre": 0.09, "road": (0.35, 0.55),
    },
    "target": {
        "cars": (2, 6), "persons": (1, 3), "poles": (0, 2), "trees": (1, 4),
        "building_height": (0.08, 0.28), "unlabelled_prop": 0.0, "bonnet": 0.5,
        "horizon": (0.36, 0.48), "metre": 0.09, "road": (0.35, 0.55),
    },
    # Another city seen from another car: a higher horizon over a narrower road, a closer camera
    # (everything larger), dense traffic and crowds, tall buildings, almost no trees or poles.
    "crowded": {
        "cars": (4, 9), "persons": (5, 11), "poles": (0, 1), "trees": (0, 1),
        "building_height": (0.30, 0.55), "unlabelled_prop": 0.0, "bonnet": 0.0,
        "horizon": (0.22, 0.32), "metre": 0.13, "road": (0.22, 0.34),
    },
}

# The kinds of target domain: (layout, colours, finish). The source domain is one for all of them.
_SHIFTS = {
    "appearance": ("target", "target", "camera"),
    "sensor": ("source", "source", "sensor"),
    "layout": ("crowded", "source", "plain"),
    "weather": ("source", "source", "weather"),
}
#: The kinds of shift :class:`SyntheticShift` draws (its ``shift`` argument): the benchmark's suite.
SHIFT_KINDS: tuple[str, ...] = tuple(_SHIFTS)
_CONTROLS = {"null": ("source", "source", "plain"), "layout_weather": ("crowded", "source", "weather")}
#: Control targets :class:`SyntheticShift` also draws, outside :data:`SHIFT_KINDS` (the suite):
#: ``"null"``, drawn exactly as the source (other scenes), and ``"layout_weather"``, layout's city in
#: weather's fog or dusk. They tell what a method costs where there is nothing to adapt, and what it
#: gains once a content shift also changes the look.
CONTROL_SHIFT_KINDS: tuple[str, ...] = tuple(_CONTROLS)
_SHIFTS.update(_CONTROLS)

# Colours (RGB in [0, 1]). Source: saturated "game engine" colours; target: muted, real-world ones.
_SOURCE_COLOURS = {
    "sky": [(0.30, 0.58, 0.98)],
    "building": [(0.88, 0.55, 0.28), (0.92, 0.82, 0.42), (0.78, 0.32, 0.26), (0.72, 0.46, 0.62)],
    "vegetation": [(0.16, 0.74, 0.12)],
    "trunk": [(0.52, 0.30, 0.10)],
    "road": [(0.30, 0.30, 0.35)],
    "sidewalk": [(0.80, 0.66, 0.56)],
    "pole": [(0.58, 0.58, 0.64)],
    "clothes": [(0.92, 0.14, 0.14), (0.14, 0.30, 0.92), (0.95, 0.85, 0.10), (0.85, 0.20, 0.80)],
    "skin": [(0.96, 0.76, 0.60)],
    "car": [(0.88, 0.08, 0.08), (0.88, 0.08, 0.08), (0.10, 0.20, 0.88), (0.10, 0.20, 0.88),
            (0.95, 0.80, 0.10)],
    "window": [(0.10, 0.12, 0.30)],
    "wheel": [(0.05, 0.05, 0.05)],
    "prop": [(0.10, 0.85, 0.85), (0.95, 0.50, 0.05), (0.60, 0.10, 0.90)],
}
_TARGET_COLOURS = {
    "sky": [(0.30, 0.55, 0.95), (0.40, 0.60, 0.92), (0.62, 0.72, 0.90)],
    "building": [(0.62, 0.50, 0.40), (0.70, 0.65, 0.50), (0.55, 0.38, 0.34), (0.56, 0.48, 0.52),
                 (0.50, 0.49, 0.48)],
    "vegetation": [(0.22, 0.45, 0.14), (0.30, 0.48, 0.18)],
    "trunk": [(0.26, 0.21, 0.16)],
    "road": [(0.36, 0.36, 0.40)],
    "sidewalk": [(0.56, 0.54, 0.53)],
    "pole": [(0.22, 0.22, 0.24), (0.40, 0.40, 0.43)],
    "clothes": [(0.10, 0.10, 0.12), (0.20, 0.22, 0.32), (0.38, 0.32, 0.26), (0.52, 0.52, 0.54),
                (0.55, 0.22, 0.22), (0.26, 0.32, 0.56)],
    "skin": [(0.72, 0.56, 0.46)],
    "car": [(0.50, 0.50, 0.52), (0.10, 0.10, 0.11), (0.86, 0.86, 0.86), (0.68, 0.68, 0.70),
            (0.16, 0.19, 0.30), (0.42, 0.14, 0.13)],
    "window": [(0.16, 0.18, 0.22)],
    "wheel": [(0.07, 0.07, 0.07)],
    "prop": [(0.30, 0.30, 0.30)],
}


class _Draw:
    """Scalar draws from one ``torch.Generator`` (per-object choices; pixels use tensor ops)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.g))

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in ``[low, high]`` (both ends included)."""
        return int(torch.randint(low, high + 1, (), generator=self.g))

    def chance(self, p: float) -> bool:
        return float(torch.rand((), generator=self.g)) < p

    def colour(self, options: Sequence[tuple[float, float, float]], jitter: float = 0.0) -> Tensor:
        base = torch.tensor(options[self.integer(0, len(options) - 1)])
        if jitter > 0:
            base = base + jitter * (2 * torch.rand(3, generator=self.g) - 1)
        return base.clamp(0, 1)


def _item_seed(seed: int, domain: str, index: int) -> int:
    """A 63-bit generator seed for ``(seed, domain, index)`` (stable across runs and platforms)."""
    digest = hashlib.blake2b(f"diga-synthetic:{seed}:{domain}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class _Canvas:
    """A material map ``(H, W)`` and a colour image ``(3, H, W)`` painted back to front."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.material = torch.full((height, width), _SKY, dtype=torch.int64)
        self.image = torch.zeros(3, height, width)
        self.horizon = 0.5 * height

    def box(self, top: float, bottom: float, left: float, right: float):
        """Integer bounds clipped to the canvas and pixel-centre coordinates inside, or None."""
        y0, y1 = max(int(math.floor(top)), 0), min(int(math.ceil(bottom)), self.h)
        x0, x1 = max(int(math.floor(left)), 0), min(int(math.ceil(right)), self.w)
        if y1 <= y0 or x1 <= x0:
            return None
        ys = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5
        xs = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5
        return (y0, y1, x0, x1), ys, xs

    def paint(self, bounds, mask: Tensor, material: int | None, colour: Tensor) -> None:
        y0, y1, x0, x1 = bounds
        if material is not None:
            self.material[y0:y1, x0:x1].masked_fill_(mask, material)
        view = self.image[:, y0:y1, x0:x1]
        view.copy_(torch.where(mask, colour[:, None, None], view))

    def ellipse(self, cy, cx, ry, rx, material, colour) -> None:
        ry, rx = max(ry, 0.5), max(rx, 0.5)
        found = self.box(cy - ry, cy + ry, cx - rx, cx + rx)
        if found is not None:
            bounds, ys, xs = found
            self.paint(bounds, ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1, material, colour)

    def rect(self, top, bottom, left, right, material, colour, radius: float = 0.0) -> None:
        found = self.box(top, bottom, left, right)
        if found is None:
            return
        bounds, ys, xs = found
        if radius <= 0:
            mask = torch.ones(ys.shape[0], xs.shape[1], dtype=torch.bool)
        else:  # rounded corners: distance to the rectangle shrunk by the radius
            dy = (torch.maximum(top + radius - ys, ys - (bottom - radius))).clamp(min=0)
            dx = (torch.maximum(left + radius - xs, xs - (right - radius))).clamp(min=0)
            mask = dy**2 + dx**2 <= radius**2
        self.paint(bounds, mask, material, colour)


def _smooth_noise(g: torch.Generator, height: int, width: int, cells: int, channels: int = 1) -> Tensor:
    """``(channels, H, W)`` value noise in ``[-1, 1]``: a coarse random grid upsampled bilinearly."""
    ch = max(2, round(cells * height / max(height, width)) + 1)
    cw = max(2, round(cells * width / max(height, width)) + 1)
    coarse = 2 * torch.rand(1, channels, ch, cw, generator=g) - 1
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)[0]


def _blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius 2, replicate border) from shifted slices: deterministic."""
    taps = torch.exp(-torch.arange(-2, 3, dtype=torch.float32) ** 2 / (2 * sigma**2))
    taps = (taps / taps.sum()).tolist()
    h, w = image.shape[-2:]
    padded = F.pad(image[None], (2, 2, 0, 0), mode="replicate")[0]
    image = sum(t * padded[..., :, k : k + w] for k, t in enumerate(taps))
    padded = F.pad(image[None], (0, 0, 2, 2), mode="replicate")[0]
    return sum(t * padded[..., k : k + h, :] for k, t in enumerate(taps))


class SyntheticShift(Dataset):
    """Procedural street scenes with dense labels in two domains, synthetic-like and real-like.

    A stand-in for GTA5 -> Cityscapes that needs no files: every item is drawn
    on the fly from a ``torch.Generator`` seeded by ``(seed, domain, index)``,
    so two datasets built with the same arguments return bit-identical items.
    Each scene has sky, a horizon, a skyline of buildings, a road trapezoid in
    perspective with sidewalks beside it, building fronts beyond the sidewalks,
    trees, poles, persons on the sidewalks and cars on the road, all sized by
    their distance below the horizon and painted back to front. ``data[i]`` is
    the item dict every diga dataset returns: ``"image"`` ``(3, H, W)`` float32
    RGB in ``[0, 1]``, ``"label"`` ``(H, W)`` int64 holding indices into
    :attr:`classes` or ``ignore_index``, and ``"name"``, the zero-padded index.
    Both domains share the geometry and layout statistics (shapes and context
    transfer); they differ the way synthetic and real images do:

    - colour: source classes have flat, saturated colours (cars mostly red or
      blue, bright clothes, grey poles, salmon sidewalks) under a mild
      per-image brightness; target colours are muted and vary per image
      (grey/black/white cars, dark clothes and poles, sidewalks close to the
      road), then desaturated, with a per-image colour cast (white balance),
      brightness and gamma;
    - texture: target buildings have window grids, vegetation leaf noise, the
      road grain and lane marks, sidewalks tile joints, the sky clouds, plus
      sensor noise everywhere; source is flat with mild noise;
    - lighting: target has a vertical illumination gradient and vignetting;
    - blur: target is slightly blurred (camera optics), source sharp;
    - class frequencies: the target has more cars and trees, fewer persons
      and poles, and lower buildings;
    - ignore (255, rare): half the source images hold a small unlabelled prop
      on a sidewalk; half the target images show the ego car's bonnet at the
      bottom (void, as in Cityscapes).

    The global colour cast, brightness, gradient and vignetting are
    low-frequency, so Fourier amplitude transfer
    (:class:`~diga.FourierTranslator`) reaches them; desaturation, per-class
    colours, textures, noise and blur it does not. What models score on it
    (source-only, Fourier, DiGA, target labels) is measured in docs/benchmarks.md.

    Args:
        domain: ``"source"`` (synthetic-like, labelled for training) or
            ``"target"`` (real-like).
        shift: the kind of target (the source is one for all): one of
            :data:`SHIFT_KINDS` (``"appearance"``, the real-like target above;
            ``"sensor"``, ``"layout"``, ``"weather"``: docs/findings.md, "Which kinds of
            shift does the benchmark draw?") or a control of :data:`CONTROL_SHIFT_KINDS`.
        size: ``(H, W)`` of every item, each at least 16.
        length: number of items, at least 1.
        seed: non-negative integer; datasets with different seeds hold
            different scenes, and so do the two domains for one seed.

    Attributes:
        classes: the class names, :data:`SYNTHETIC_CLASSES` (a subset of
            Cityscapes', in its order).
        palette: their Cityscapes RGB colours, :data:`SYNTHETIC_PALETTE`.
        num_classes: 8.
        ignore_index: 255, the label of unlabelled pixels.

    Raises:
        ValueError: on a bad ``domain``, ``shift``, ``size``, ``length`` or ``seed``.
        IndexError: on an index outside ``[0, length)`` (negative ones too).
        TypeError: on an index that is not an integer.

    Example:
        >>> data = SyntheticShift("target", size=(64, 96), length=4, seed=0)
        >>> item = data[0]
        >>> image, label = item["image"], item["label"]
        >>> image.shape, image.dtype, label.shape, label.dtype
        (torch.Size([3, 64, 96]), torch.float32, torch.Size([64, 96]), torch.int64)
        >>> len(data), data.num_classes, data.classes[0]
        (4, 8, 'road')
        >>> bool(torch.equal(image, SyntheticShift("target", length=4)[0]["image"]))
        True
    """

    classes: tuple[str, ...] = SYNTHETIC_CLASSES
    palette: tuple[tuple[int, int, int], ...] = SYNTHETIC_PALETTE
    num_classes: int = len(SYNTHETIC_CLASSES)
    ignore_index: int = 255

    def __init__(
        self,
        domain: str = "source",
        *,
        shift: str = "appearance",
        size: tuple[int, int] = (64, 96),
        length: int = 512,
        seed: int = 0,
    ) -> None:
        if domain not in _DOMAINS:
            raise ValueError(f"`domain` must be 'source' or 'target', got {domain!r}")
        if shift not in _SHIFTS:
            raise ValueError(f"`shift` must be one of {SHIFT_KINDS + CONTROL_SHIFT_KINDS}, got {shift!r}")
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            or min(size) < _MIN_SIDE
        ):
            raise ValueError(f"`size` must be a pair of integers (H, W), each >= {_MIN_SIDE}, got {size!r}")
        check_number(length, "length", low=1, integer=True)
        check_number(seed, "seed", low=0, integer=True)
        self.domain = domain
        self.shift = shift
        self.size = (int(size[0]), int(size[1]))
        self.length = int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"`index` must be an integer, got {type(index).__name__}") from None
        if not 0 <= index < self.length:
            raise IndexError(f"`index` must be in [0, {self.length}), got {index}")
        key = self.domain if self.shift == "appearance" or self.domain == "source" else f"{self.domain}-{self.shift}"
        g = torch.Generator().manual_seed(_item_seed(self.seed, key, index))
        canvas = self._scene(_Draw(g))
        finish = self._kind[2]
        if finish == "camera":
            image = self._camera(canvas, g)
        elif finish == "sensor":
            image = self._sensor(self._plain(canvas, g), g)
        elif finish == "weather":
            image = self._weather(self._plain(canvas, g), canvas, g)
        else:
            image = self._plain(canvas, g)
        label = canvas.material.masked_fill(canvas.material == _UNLABELLED, self.ignore_index)
        return {"image": image.contiguous(), "label": label, "name": f"{index:06d}"}

    @property
    def _kind(self) -> tuple[str, str, str]:
        """``(layout, colours, finish)`` of this domain."""
        return ("source", "source", "plain") if self.domain == "source" else _SHIFTS[self.shift]

    def extra_repr(self) -> str:
        return (f"domain={self.domain!r}, shift={self.shift!r}, size={self.size}, length={self.length}, "
                f"seed={self.seed}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- scene layout: shared by both domains, with per-domain object statistics ---------------

    def _scene(self, r: _Draw) -> _Canvas:
        h, w = self.size
        layout_name, colour_name, _ = self._kind
        layout = _LAYOUT[layout_name]
        colours = _SOURCE_COLOURS if colour_name == "source" else _TARGET_COLOURS
        jitter = 0.04 if colour_name == "source" else 0.07
        canvas = _Canvas(h, w)
        canvas.image.copy_(r.colour(colours["sky"], jitter)[:, None, None].expand(3, h, w))

        horizon = h * r.uniform(*layout["horizon"])
        canvas.horizon = horizon
        vanish = w * r.uniform(0.4, 0.6)
        road_top = w * r.uniform(0.01, 0.04)  # half-width of the road at the horizon
        road_left, road_right = w * r.uniform(*layout["road"]), w * r.uniform(*layout["road"])
        walk_left, walk_right = w * r.uniform(0.12, 0.28), w * r.uniform(0.12, 0.28)
        metre = layout["metre"] * w  # pixels per metre on the bottom row; scales with depth below

        def depth(y: float) -> float:
            return max(y - horizon, 0.0) / (h - horizon)

        def edges(y: float) -> tuple[float, float, float, float]:
            d = depth(y)
            left, right = vanish - road_top - d * road_left, vanish + road_top + d * road_right
            return left - d * walk_left - 0.5 * road_top, left, right, right + d * walk_right + 0.5 * road_top

        # Skyline: buildings left to right, taller towards the image sides (nearer).
        low, high = layout["building_height"]
        skyline = torch.full((w,), horizon)
        fronts = torch.zeros(w, dtype=torch.int64)
        x = -w * r.uniform(0.0, 0.1)
        building_colours = []
        while x < w:
            width = w * r.uniform(0.08, 0.24)
            centre = min(max(x + width / 2, 0), w)
            top = horizon - h * r.uniform(low, high) * (0.6 + 1.2 * abs(centre - vanish) / w)
            x0, x1 = max(int(round(x)), 0), min(int(round(x + width)), w)
            if x1 > x0:
                skyline[x0:x1] = top
                fronts[x0:x1] = len(building_colours)
                building_colours.append(r.colour(colours["building"], jitter))
            x += width
        palette = torch.stack(building_colours)  # (N, 3)

        # Ground and buildings in one vectorised pass over the pixel grid.
        ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
        xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
        d = ((ys - horizon) / (h - horizon)).clamp(min=0)
        road_l = vanish - road_top - d * road_left
        road_r = vanish + road_top + d * road_right
        walk_l = road_l - d * walk_left - 0.5 * road_top
        walk_r = road_r + d * walk_right + 0.5 * road_top
        ground = ys >= horizon
        on_road = ground & (xs >= road_l) & (xs < road_r)
        on_walk = ground & ~on_road & (xs >= walk_l) & (xs < walk_r)
        building = (ys >= skyline[None, :]) & ~on_road & ~on_walk
        material = canvas.material
        material[building] = _BUILDING
        material[on_walk] = _SIDEWALK
        material[on_road] = _ROAD
        front_colour = palette[fronts].t()[:, None, :].expand(3, h, w)  # (3, H, W) per column
        image = canvas.image
        image.copy_(torch.where(building, front_colour, image))
        image.copy_(torch.where(on_walk, r.colour(colours["sidewalk"], jitter)[:, None, None], image))
        image.copy_(torch.where(on_road, r.colour(colours["road"], jitter)[:, None, None], image))

        # Objects, each standing on a ground row ``base``; drawn far (small base) to near.
        objects: list[tuple[float, str, float]] = []

        def ground_row(near: float = 0.95) -> float:
            return horizon + (h - horizon) * r.uniform(0.12, near)

        for kind in ("cars", "persons", "poles", "trees"):
            lo, hi = layout[kind]
            for _ in range(r.integer(lo, hi)):
                base = ground_row(1.05 if kind == "cars" else 0.95)
                if kind == "persons":
                    base = max(base, ground_row(0.95))  # persons tend to stand nearer
                objects.append((base, kind, r.uniform(0.0, 1.0)))
        if r.chance(layout["unlabelled_prop"]):
            objects.append((ground_row(0.9), "prop", r.uniform(0.0, 1.0)))
        objects.sort(key=lambda o: o[0])

        for base, kind, u in objects:
            m = metre * depth(base)
            wl, rl, rr, wr = edges(base)
            left_side = u < 0.5
            if kind == "cars":
                length = m * r.uniform(1.8, 4.5)
                cx = rl + length / 2 + (rr - rl - length) * r.uniform(0.0, 1.0)
                height = m * r.uniform(1.3, 1.7)
                self._car(canvas, r, colours, jitter, base, cx, length, height)
            elif kind == "persons":
                cx = r.uniform(wl, rl) if left_side else r.uniform(rr, wr)
                self._person(canvas, r, colours, jitter, base, cx, m)
            elif kind == "poles":
                cx = (wl + 0.15 * (rl - wl)) if left_side else (wr - 0.15 * (wr - rr))
                cx += m * r.uniform(-0.3, 0.3)
                half = max(m * r.uniform(0.07, 0.12), 0.5)
                top = base - m * r.uniform(4.5, 8.0)
                canvas.rect(top, base, cx - half, cx + half, _POLE, r.colour(colours["pole"], jitter))
            elif kind == "trees":
                cx = (wl + 0.1 * (rl - wl)) if left_side else (wr - 0.1 * (wr - rr))
                cx += m * r.uniform(-1.0, 0.3) * (1 if left_side else -1)
                trunk = m * r.uniform(1.5, 3.0)
                half = max(m * 0.12, 0.5)
                canvas.rect(base - trunk, base, cx - half, cx + half, _VEGETATION,
                            r.colour(colours["trunk"], jitter))
                ry, rx = m * r.uniform(1.5, 3.0), m * r.uniform(1.5, 3.0)
                canvas.ellipse(base - trunk - 0.7 * ry, cx, ry, rx, _VEGETATION,
                               r.colour(colours["vegetation"], jitter))
            else:  # an unlabelled prop (bin, kiosk, billboard) on a sidewalk
                cx = r.uniform(wl, rl) if left_side else r.uniform(rr, wr)
                half, height = m * r.uniform(0.4, 1.0), m * r.uniform(0.8, 2.0)
                canvas.rect(base - height, base, cx - half, cx + half, _UNLABELLED,
                            r.colour(colours["prop"], jitter))

        if r.chance(layout["bonnet"]):  # the ego car's bonnet: void, as in Cityscapes
            found = canvas.box(h * 0.88, h, 0, w)
            if found is not None:
                bounds, by, bx = found
                curve = h * (0.93 - r.uniform(0.0, 0.03)) + h * 0.08 * ((bx - w / 2) / (w / 2)) ** 2
                canvas.paint(bounds, by >= curve, _UNLABELLED, r.colour(colours["wheel"], 0.02))
        return canvas

    @staticmethod
    def _car(canvas: _Canvas, r: _Draw, colours, jitter, base, cx, length, height) -> None:
        top, left, right = base - height, cx - length / 2, cx + length / 2
        body = r.colour(colours["car"], jitter)
        canvas.rect(top + 0.35 * height, base - 0.12 * height, left, right, _CAR, body, radius=0.2 * height)
        cabin_l, cabin_r = left + 0.18 * length, right - 0.18 * length
        canvas.rect(top, top + 0.45 * height, cabin_l, cabin_r, _CAR, body, radius=0.15 * height)
        canvas.rect(top + 0.08 * height, top + 0.4 * height, cabin_l + 0.08 * length,
                    cabin_r - 0.08 * length, _CAR, r.colour(colours["window"], jitter))
        wheel = r.colour(colours["wheel"], 0.0)
        for wx in (left + 0.2 * length, right - 0.2 * length):
            canvas.ellipse(base - 0.14 * height, wx, 0.15 * height, min(0.12 * length, 0.15 * height) + 0.3,
                           _CAR, wheel)

    @staticmethod
    def _person(canvas: _Canvas, r: _Draw, colours, jitter, base, cx, m) -> None:
        tall = m * r.uniform(1.7, 2.1)
        canvas.ellipse(base - 0.42 * tall, cx, 0.42 * tall, max(0.2 * tall, 0.7), _PERSON,
                       r.colour(colours["clothes"], jitter))
        head = max(0.08 * tall, 0.6)
        canvas.ellipse(base - 0.86 * tall, cx, head, head, _PERSON, r.colour(colours["skin"], jitter))

    # -- finishes: what the domain's camera and world do to the painted scene ---------------------

    @staticmethod
    def _plain(canvas: _Canvas, g: torch.Generator) -> Tensor:
        """The source's look: the flat painted scene, a per-image brightness and mild noise."""
        noise = 0.005 + 0.025 * float(torch.rand((), generator=g))
        light = 0.85 + 0.2 * float(torch.rand((), generator=g))  # time of day
        return (canvas.image * light + noise * torch.randn(canvas.image.shape, generator=g)).clamp(0, 1)

    def _sensor(self, image: Tensor, g: torch.Generator) -> Tensor:
        """Another camera on the same world: colour filters that mix the channels, a lower
        resolution, a tone curve, and strong signal-dependent noise with row banding."""
        h, w = self.size
        r = _Draw(g)
        # Colour: each output channel takes a share of the next one (cyclic), with per-channel gains.
        mix = r.uniform(0.25, 0.5)
        matrix = (1 - mix) * torch.eye(3) + mix * torch.eye(3).roll(1, dims=1)
        gains = torch.tensor([r.uniform(0.8, 1.15) for _ in range(3)])
        image = torch.einsum("ij,jhw->ihw", gains[:, None] * matrix, image)
        # Resolution: a sensor with half (or a third of) the pixels, upsampled back.
        factor = 2 if r.chance(0.5) else 3
        small = F.avg_pool2d(image[None], factor, ceil_mode=True)
        image = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
        # Tone curve (lifted shadows) and noise: shot noise grows with the signal, plus row banding.
        image = image.clamp(0, 1) ** r.uniform(0.55, 0.8)
        shot = r.uniform(0.04, 0.08) * image.sqrt() * torch.randn(3, h, w, generator=g)
        bands = r.uniform(0.01, 0.03) * torch.randn(1, h, 1, generator=g)
        return (image + shot + bands).clamp(0, 1).to(torch.float32)

    def _weather(self, image: Tensor, canvas: _Canvas, g: torch.Generator) -> Tensor:
        """The same world in fog (contrast fading with distance towards a grey airlight) or at
        dusk (dark, blue, with a warm glow of street lights and more sensor noise); half each."""
        h, w = self.size
        r = _Draw(g)
        ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
        below = ((ys - canvas.horizon) / (h - canvas.horizon)).clamp(min=0.04)  # (H, 1), 1 at the bottom
        if r.chance(0.5):  # fog: transmission exp(-density x distance), distance ~ 1 / depth below horizon
            density = r.uniform(0.08, 0.16)
            far = (canvas.material == _SKY) | (canvas.material == _BUILDING)
            distance = torch.where(far, torch.full_like(image[0], 1 / 0.06), (1 / below).expand(h, w))
            transmission = torch.exp(-density * distance)[None]
            airlight = r.uniform(0.65, 0.85) * torch.tensor([1.0, 1.0, 1.03])[:, None, None]
            image = image * transmission + airlight * (1 - transmission)
            noise = 0.01
        else:  # dusk: low light, blue cast, warm pools of light from above, noisy sensor
            image = image * r.uniform(0.18, 0.32) * torch.tensor([0.8, 0.9, 1.25])[:, None, None]
            glow = _smooth_noise(g, h, w, 4)[0].clamp(min=0) * (1 - below)
            image = image + r.uniform(0.1, 0.25) * glow * torch.tensor([1.0, 0.7, 0.35])[:, None, None]
            noise = r.uniform(0.02, 0.04)
        image = image + noise * torch.randn(3, h, w, generator=g)
        return image.clamp(0, 1).to(torch.float32)

    # -- the target's camera: textures, colour, lighting, optics, noise ---------------------------

    def _camera(self, canvas: _Canvas, g: torch.Generator) -> Tensor:
        h, w = self.size
        r = _Draw(g)
        image, material = canvas.image, canvas.material
        scale = min(h, w) / 64  # texture periods and blur grow with resolution
        ys = torch.arange(h, dtype=torch.float32)[:, None]
        xs = torch.arange(w, dtype=torch.float32)[None, :]
        fine = 2 * torch.rand(h, w, generator=g) - 1
        shade = torch.ones(h, w)

        # Building windows: a dark (or sky-reflecting) grid with per-image period.
        py, px = max(3.0, scale * r.uniform(4.0, 7.0)), max(3.0, scale * r.uniform(4.0, 8.0))
        oy, ox = r.uniform(0, py), r.uniform(0, px)
        windows = (((ys + oy) % py) < 0.55 * py) & (((xs + ox) % px) < 0.55 * px)
        shade = torch.where((material == _BUILDING) & windows, shade * r.uniform(0.65, 0.85), shade)
        # Leaf noise on vegetation, grain on road, tile joints on sidewalks.
        leaves = 0.5 * fine + 0.5 * _smooth_noise(g, h, w, max(4, w // 6))[0]
        shade = torch.where(material == _VEGETATION, shade * (1 + 0.25 * leaves), shade)
        shade = torch.where(material == _ROAD, shade * (1 + 0.10 * fine), shade)
        tile = max(3.0, scale * r.uniform(3.0, 5.0))
        joints = ((ys % tile) < 1) | (((xs + 0.5 * ys) % (2 * tile)) < 1)
        shade = torch.where((material == _SIDEWALK) & joints, shade * 0.8, shade)
        stains = _smooth_noise(g, h, w, 6)[0]
        solid = (material == _BUILDING) | (material == _ROAD) | (material == _SIDEWALK)
        shade = torch.where(solid, shade * (1 + 0.12 * stains), shade)
        image = image * shade
        # Lane marks (still road) and clouds.
        if r.chance(0.7):
            dash = ((ys * 0.35 / scale) % 2 < 1) & ((xs - self._lane_x(canvas)).abs() < 0.6 * scale)
            image = torch.where((material == _ROAD) & dash, image.new_tensor(0.8), image)
        clouds = _smooth_noise(g, h, w, 5)[0].clamp(min=0)
        image = torch.where(material == _SKY, image + (0.9 - image) * 0.3 * clouds, image)

        # Colour: desaturate, white balance (colour cast), brightness and gamma.
        luma = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
        image = luma + r.uniform(0.6, 0.9) * (image - luma)
        warm = r.uniform(-1.0, 1.0)
        cast = torch.tensor([1 + 0.18 * warm, 1 + r.uniform(-0.07, 0.07), 1 - 0.18 * warm])
        image = image * cast[:, None, None] * r.uniform(0.7, 1.05)
        image = image.clamp(0, 1) ** r.uniform(0.85, 1.2)
        # Lighting: vertical gradient and vignetting.
        gradient = 1 + r.uniform(-0.3, 0.1) * ((ys + 0.5) / h - 0.5)
        radius = (((ys + 0.5) / h - 0.5) ** 2 + ((xs + 0.5) / w - 0.5) ** 2) / 0.5
        image = image * (gradient * (1 - r.uniform(0.1, 0.3) * radius))
        # Optics and sensor.
        image = _blur(image, scale * r.uniform(0.5, 0.9))
        image = image + r.uniform(0.01, 0.03) * torch.randn(3, h, w, generator=g)
        image = image + 0.01 * torch.randn(1, h, w, generator=g)
        return image.clamp(0, 1).to(torch.float32)

    def _lane_x(self, canvas: _Canvas) -> Tensor:
        """``(H, 1)`` x of the road's centre line on each row."""
        h, w = self.size
        road = canvas.material == _ROAD
        cols = torch.arange(w, dtype=torch.float32)[None, :]
        count = road.sum(dim=1, keepdim=True).clamp(min=1)
        return (cols * road).sum(dim=1, keepdim=True) / count
