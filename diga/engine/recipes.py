"""Training recipes: the paper's GTA5/SYNTHIA -> Cityscapes settings, and tiny CPU presets.

Every number of the ``paper`` presets is read from the public DiGA scripts
(fy-vision/DiGA, ``domain_adaptation/{GTA5,Synthia}/train_DiGA_*.py``,
``pseudolabel_generator.py``, ``calc_centroids.py``); docs/recipes.md lists
them beside the paper's reported mIoU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from diga.engine.optim import OptimConfig

__all__ = ["Recipe", "StageRecipe", "get_recipe", "list_recipes"]


@dataclass(frozen=True)
class StageRecipe:
    """One training stage: length, batch composition, loss weight and augmentation strength.

    The paper builds each batch from crops of two source scales: ``batch_low``
    images first resized to ``Recipe.source_low_size`` and ``batch_high`` at full
    resolution, each then randomly rescaled and cropped to ``Recipe.crop_size``
    (the target likewise).
    """

    steps: int
    batch_low: int
    batch_high: int
    kd_weight: float
    beta: float
    jitter_p: float = 0.5
    grayscale_p: float = 0.3
    source_rescale: bool = True
    target_rescale: bool = True

    @property
    def batch_size(self) -> int:
        return self.batch_low + self.batch_high


@dataclass(frozen=True)
class Recipe:
    """A whole DiGA run: warm-up, then ``rounds`` of (pseudo-labels, centroids, self-training)."""

    name: str
    num_classes: int
    crop_size: tuple[int, int]
    source_low_size: tuple[int, int] | None
    target_low_size: tuple[int, int] | None
    warmup: StageRecipe
    self_training: StageRecipe
    rounds: int = 2
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher_momentum: float = 0.999
    teacher_ramp: float = 1.0  # the paper's true average (the Adapter's default is 0.1: see its docstring)
    teacher_buffers: str = "ema"
    select_with: str = "teacher"  # the paper's: the selection reads the EMA teacher (Adapter's select_with)
    mixed_view_ce: bool = False  # the paper's warm-up loss: CE on the clean view only (AblationOptions)
    centroid_momentum: float = 1e-4
    fourier_beta: float = 0.01
    scales: tuple[float, ...] = (1.0, 0.5)
    eval_size: tuple[int, int] | None = (1024, 2048)
    centroid_size: tuple[int, int] | None = (512, 1024)
    eval_every: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    image_every: int = 500
    paper_miou: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_steps(self, warmup: int | None = None, self_training: int | None = None) -> Recipe:
        """A copy with other stage lengths (``None`` keeps the recipe's)."""
        return replace(
            self,
            warmup=replace(self.warmup, steps=warmup or self.warmup.steps),
            self_training=replace(self.self_training, steps=self_training or self.self_training.steps),
        )


_PAPER_OPTIM = OptimConfig(optimizer="sgd", lr=2.5e-4, head_lr_mult=10.0, momentum=0.9,
                           weight_decay=5e-4, power=0.9)

# GTA5 -> Cityscapes: train_DiGA_gta2city_warm_up.py / _self_training.py.
GTA5_PAPER = Recipe(
    name="gta5_paper",
    num_classes=19,
    crop_size=(512, 896),
    source_low_size=(720, 1280),
    target_low_size=(512, 1024),
    warmup=StageRecipe(steps=80_000, batch_low=1, batch_high=2, kd_weight=0.5, beta=0.4,
                       jitter_p=0.5, grayscale_p=0.3, source_rescale=True, target_rescale=False),
    self_training=StageRecipe(steps=80_000, batch_low=2, batch_high=1, kd_weight=0.25, beta=0.3,
                              jitter_p=0.5, grayscale_p=0.3),
    optim=_PAPER_OPTIM,
    paper_miou=74.3,
)

# SYNTHIA -> Cityscapes: train_DiGA_synthia2city_warm_up.py / _self_training.py (16 classes).
SYNTHIA_PAPER = Recipe(
    name="synthia_paper",
    num_classes=16,
    crop_size=(512, 896),
    source_low_size=(760, 1280),
    target_low_size=(512, 1024),
    warmup=StageRecipe(steps=60_000, batch_low=1, batch_high=3, kd_weight=0.25, beta=0.4,
                       jitter_p=0.7, grayscale_p=0.1, source_rescale=False, target_rescale=False),
    self_training=StageRecipe(steps=80_000, batch_low=1, batch_high=2, kd_weight=0.25, beta=0.3,
                              jitter_p=0.5, grayscale_p=0.3),
    optim=_PAPER_OPTIM,
    paper_miou=67.9,
)


def _tiny(base: Recipe) -> Recipe:
    """Every stage for a few steps at small crops: checks a whole pipeline on CPU in minutes."""
    return replace(
        base,
        name=base.name.replace("paper", "tiny"),
        crop_size=(64, 96),
        source_low_size=(96, 160),
        target_low_size=(64, 128),
        warmup=replace(base.warmup, steps=4, batch_low=1, batch_high=1),
        self_training=replace(base.self_training, steps=4, batch_low=1, batch_high=1),
        eval_size=(64, 128),
        centroid_size=(64, 128),
        checkpoint_every=2,
        log_every=1,
        image_every=2,
        optim=replace(base.optim, lr=1e-3),
    )


_RECIPES = {
    "gta5": {"paper": GTA5_PAPER, "tiny": _tiny(GTA5_PAPER)},
    "synthia": {"paper": SYNTHIA_PAPER, "tiny": _tiny(SYNTHIA_PAPER)},
}


def list_recipes() -> list[str]:
    """``benchmark/preset`` names.

    Example:
        >>> list_recipes()
        ['gta5/paper', 'gta5/tiny', 'synthia/paper', 'synthia/tiny']
    """
    return [f"{b}/{p}" for b in sorted(_RECIPES) for p in sorted(_RECIPES[b])]


def get_recipe(benchmark: str, preset: str = "paper") -> Recipe:
    """The recipe of a benchmark (``gta5``, ``synthia``) and preset (``paper``, ``tiny``).

    Example:
        >>> r = get_recipe("gta5")
        >>> r.warmup.steps, r.warmup.kd_weight, r.self_training.kd_weight, r.optim.lr
        (80000, 0.5, 0.25, 0.00025)
    """
    if benchmark not in _RECIPES:
        raise ValueError(f"`benchmark` must be one of {sorted(_RECIPES)}, got {benchmark!r}")
    if preset not in _RECIPES[benchmark]:
        raise ValueError(f"`preset` must be one of {sorted(_RECIPES[benchmark])}, got {preset!r}")
    return _RECIPES[benchmark][preset]
