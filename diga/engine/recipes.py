"""Training recipes: the paper's three settings as its scripts run them, and tiny CPU presets.

* ``gta5``, ``synthia``: unsupervised adaptation to Cityscapes (``domain_adaptation/{GTA5,Synthia}/``);
* ``gta5_dg``: domain generalisation, trained on GTA5 alone and evaluated on Cityscapes, BDD100k
  and Mapillary (``domain_generalization/train_DiGA_DG.py``, ``evaluate_val.py``);
* ``cityscapes_ssl``: semi-supervised Cityscapes, 1/16 of the training images labelled by
  default, HRNet-W48 + OCR (``semi-supervised_segmentation/train_DiGA_semiseg_*.py``).

Every number of the ``paper`` presets is read from the public DiGA scripts
(fy-vision/DiGA); docs/recipes.md lists them beside the paper's values and says
where we deliberately differ. ``gta5`` and ``gta5_dg`` also have a ``dinov2`` preset:
DiGA's stages with a DINOv2 ViT-B/14 (timm, through :class:`~diga.models.TimmSegmenter`)
trained the way VFM-UDA (tue-mps/vfm-uda) trains one (AdamW, layer-wise lr decay,
linear warm-up and decay, sliding-window inference); ``dinov2_tiny`` is its CPU twin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

from diga.engine.optim import LR_SCHEDULES, OptimConfig
from diga.inference import check_window

__all__ = ["PRESETS", "Recipe", "StageRecipe", "get_recipe", "list_presets", "list_recipes", "recipe_model"]


@dataclass(frozen=True)
class StageRecipe:
    """One training stage: length, batch composition, loss weight and augmentation strength.

    The paper builds each batch from crops of two source scales: ``batch_low``
    images first resized to ``Recipe.source_low_size`` and ``batch_high`` at full
    resolution, each then randomly rescaled and cropped to ``Recipe.crop_size``
    (the target likewise). ``lr_schedule``: ``"poly"`` (the scripts' decay) or ``"rise"``
    (linear from 0 to the learning rate over the whole stage: what the SYNTHIA warm-up
    script runs, :func:`~diga.engine.optim.make_optimizer`).
    """

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"`lr_schedule` must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

    steps: int
    batch_low: int
    batch_high: int
    kd_weight: float
    beta: float
    jitter_p: float = 0.5
    grayscale_p: float = 0.3
    sharpness_p: float = 0.3
    source_rescale: bool = True
    target_rescale: bool = True
    lr_schedule: str = "poly"

    @property
    def batch_size(self) -> int:
        return self.batch_low + self.batch_high


@dataclass(frozen=True)
class Recipe:
    """A whole DiGA run: warm-up, then ``rounds`` of (pseudo-labels, centroids, self-training).

    ``setting`` is the Adapter's (``"uda"``, ``"dg"``: the warm-up alone, ``rounds=0``;
    ``"ssl"``: the labelled split is the source, the unlabelled split the target);
    ``model``/``encoder`` the scripts' network; ``seg_loss`` ``"ce"`` or ``"ohem"``
    (:class:`~diga.OhemCELoss`, threshold 0.7, 100000 pixels kept at least);
    ``aux_weight`` the auxiliary head's weight for models with one; ``labelled_fraction``
    the semi-supervised split (``"1/16"``).

    ``model_kwargs`` go to :func:`~diga.models.create_model` with ``model`` and ``encoder``
    (:func:`recipe_model` builds the network). ``eval_window`` / ``eval_stride``: sliding-window
    inference, ``(h, w)`` windows every ``(h, w)`` pixels (stride None: half the window), for
    evaluation and pseudo-labels (:func:`~diga.engine.evaluate`'s ``window`` / ``stride``); None:
    whole images (and HRDA's windows above the whole-image bound).
    """

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
    setting: str = "uda"
    model: str = "deeplabv2"
    encoder: str = "resnet101"
    seg_loss: str = "ce"
    aux_weight: float = 0.1
    labelled_fraction: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_window: tuple[int, int] | None = None
    eval_stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.eval_window is None and self.eval_stride is not None:
            raise ValueError(f"`eval_stride` needs an `eval_window`, got eval_stride={self.eval_stride!r} alone")
        if self.eval_window is not None:
            try:
                check_window(self.eval_window, self.eval_stride)
            except ValueError as err:
                raise ValueError(f"`eval_window` / `eval_stride`: {err}") from None
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"`model_kwargs` must be a dict, got {type(self.model_kwargs).__name__}")
        if self.seg_loss not in ("ce", "ohem"):
            raise ValueError(f"`seg_loss` must be 'ce' or 'ohem', got {self.seg_loss!r}")
        if self.setting not in ("uda", "dg", "ssl"):
            raise ValueError(f"`setting` must be 'uda', 'dg' or 'ssl', got {self.setting!r}")
        if self.setting == "dg" and self.rounds != 0:
            raise ValueError(f"`rounds` must be 0 for setting='dg' (the warm-up alone), got {self.rounds}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_steps(self, warmup: int | None = None, self_training: int | None = None) -> Recipe:
        """A copy with other stage lengths (``None`` keeps the recipe's)."""
        return replace(
            self,
            warmup=replace(self.warmup, steps=self.warmup.steps if warmup is None else warmup),
            self_training=replace(self.self_training,
                                  steps=self.self_training.steps if self_training is None else self_training),
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
                       jitter_p=0.7, grayscale_p=0.1, source_rescale=False, target_rescale=False,
                       lr_schedule="rise"),  # poly_lr_scheduler_warm(base_lr, i_iter, 60000, 0.9): see docs/recipes.md
    self_training=StageRecipe(steps=80_000, batch_low=1, batch_high=2, kd_weight=0.25, beta=0.3,
                              jitter_p=0.5, grayscale_p=0.3),
    optim=_PAPER_OPTIM,
    seg_loss="ohem",  # OhemCrossEntropy() in both stages
    paper_miou=67.9,
)

# GTA5 -> {Cityscapes, BDD100k, Mapillary} generalisation: domain_generalization/train_DiGA_DG.py. The warm-up
# alone: 2 crops from GTA5 resized to 720 x 1280 + 2 from full resolution, both rescaled 0.7-1 and cropped to
# 512 x 896; the DG script's extra_aug has no sharpness step.
GTA5_DG_PAPER = Recipe(
    name="gta5_dg_paper",
    setting="dg",
    num_classes=19,
    crop_size=(512, 896),
    source_low_size=(720, 1280),
    target_low_size=None,
    warmup=StageRecipe(steps=80_000, batch_low=2, batch_high=2, kd_weight=0.5, beta=0.4,
                       jitter_p=0.5, grayscale_p=0.3, sharpness_p=0.0, source_rescale=True, target_rescale=False),
    self_training=StageRecipe(steps=0, batch_low=0, batch_high=0, kd_weight=0.0, beta=0.4),  # none: DG
    rounds=0,
    optim=_PAPER_OPTIM,
    eval_size=None,  # each target at the scripts' own size (diga.engine.PAPER_DG_SIZES)
    centroid_size=None,
)

# Semi-supervised Cityscapes: semi-supervised_segmentation/train_DiGA_semiseg_{warm_up,self_training}.py. HRNet-W48
# + OCR, lr 1e-3 on every parameter (no 10x head), poly power 1.0; per loader 1 image resized to 512 x 1024 and 2
# crops of 512 x 1024 from 1024 x 2048; the unlabelled crops of self-training are rescaled first; one round.
CITYSCAPES_SSL_PAPER = Recipe(
    name="cityscapes_ssl_paper",
    setting="ssl",
    num_classes=19,
    crop_size=(512, 1024),
    source_low_size=(512, 1024),
    target_low_size=(512, 1024),
    warmup=StageRecipe(steps=80_000, batch_low=1, batch_high=2, kd_weight=0.5, beta=0.4, jitter_p=0.5,
                       grayscale_p=0.3, sharpness_p=0.3, source_rescale=False, target_rescale=False),
    self_training=StageRecipe(steps=80_000, batch_low=1, batch_high=2, kd_weight=0.5, beta=0.4, jitter_p=0.5,
                              grayscale_p=0.3, sharpness_p=0.3, source_rescale=False, target_rescale=True),
    rounds=1,
    optim=OptimConfig(optimizer="sgd", lr=1e-3, head_lr_mult=1.0, momentum=0.9, weight_decay=5e-4, power=1.0),
    model="hrnet_ocr",
    encoder="hrnet_w48",
    labelled_fraction="1/16",
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
        self_training=replace(base.self_training, steps=4 if base.rounds else 0, batch_low=1 if base.rounds else 0,
                              batch_high=1 if base.rounds else 0),
        eval_size=(64, 128),
        centroid_size=(64, 128),
        checkpoint_every=2,
        log_every=1,
        image_every=2,
        optim=replace(base.optim, lr=1e-3),
        encoder={"resnet101": "resnet18", "hrnet_w48": "hrnet_w18_small"}.get(base.encoder, base.encoder),
    )


#: VFM-UDA's learning rate (uda_vit_generic.py): 5e-5 x sqrt(batch) for the head, 0.1 x that for the ViT's blocks.
VFM_UDA_HEAD_LR_PER_SQRT_BATCH = 5e-5


def _dinov2(base: Recipe) -> Recipe:
    """DiGA's stages and batches with a DINOv2 ViT-B/14, trained as VFM-UDA trains one (docs/recipes.md).

    AdamW (weight decay 0.01), the head at 10x the encoder, VFM-UDA's rate rule applied to this
    recipe's batch (``5e-5 * sqrt(batch)`` for the head), linear warm-up over 1500 iterations from
    1e-3 x the rate, then linear decay to 0 (poly, power 1); layer-wise decay 0.9 (ours: VFM-UDA's
    default is 1.0, none). Crops of 504 x 896 (36 x 64 patches of 14: DiGA's 512 x 896 rounded down to
    the patch grid, so a 512-row target image needs no padding); evaluation and pseudo-labels slide
    windows of the training crop's size with half-window strides, as VFM-UDA does.
    """
    batch = max(base.warmup.batch_size, base.self_training.batch_size)
    head_lr = VFM_UDA_HEAD_LR_PER_SQRT_BATCH * math.sqrt(batch)
    crop = (504, 896)
    return replace(
        base,
        name=base.name.replace("paper", "dinov2"),
        crop_size=crop,
        model="timm",
        encoder="vit_base_patch14_dinov2",
        model_kwargs={},
        optim=OptimConfig(optimizer="adamw", lr=head_lr / 10.0, head_lr_mult=10.0, weight_decay=0.01, power=1.0,
                          schedule="poly", layer_decay=0.9, warmup_steps=1500),
        eval_window=crop,
        eval_stride=(crop[0] // 2, crop[1] // 2),
        paper_miou=None,
    )


def _dinov2_tiny(base: Recipe) -> Recipe:
    """The ``dinov2`` preset's CPU twin: the same structure and optimiser at tiny crops and steps, with timm's DINOv2
    ViT/14 cut to 3 blocks of width 96 (ViT-S/14's is 384: a step, a checkpoint and the test stay fast on CPU)."""
    dino = _dinov2(base)
    tiny = _tiny(base)
    crop = (56, 84)  # multiples of the patch (14) inside the tiny low sizes
    return replace(
        tiny,
        name=dino.name.replace("dinov2", "dinov2_tiny"),
        crop_size=crop,
        model=dino.model,
        encoder="vit_small_patch14_dinov2",
        model_kwargs={"depth": 3, "embed_dim": 96, "img_size": 56},
        optim=replace(dino.optim, lr=1e-4, warmup_steps=2),
        eval_window=crop,
        eval_stride=(crop[0] // 2, crop[1] // 2),
    )


_RECIPES = {
    "cityscapes_ssl": {"paper": CITYSCAPES_SSL_PAPER, "tiny": _tiny(CITYSCAPES_SSL_PAPER)},
    "gta5": {"paper": GTA5_PAPER, "tiny": _tiny(GTA5_PAPER), "dinov2": _dinov2(GTA5_PAPER),
             "dinov2_tiny": _dinov2_tiny(GTA5_PAPER)},
    "gta5_dg": {"paper": GTA5_DG_PAPER, "tiny": _tiny(GTA5_DG_PAPER), "dinov2": _dinov2(GTA5_DG_PAPER),
                "dinov2_tiny": _dinov2_tiny(GTA5_DG_PAPER)},
    "synthia": {"paper": SYNTHIA_PAPER, "tiny": _tiny(SYNTHIA_PAPER)},
}

#: Every preset name of some benchmark (the CLI's ``--preset`` choices); :func:`list_presets` has a benchmark's own.
PRESETS: tuple[str, ...] = tuple(sorted({p for presets in _RECIPES.values() for p in presets}))


def list_presets(benchmark: str) -> tuple[str, ...]:
    """The presets of one benchmark, sorted.

    Example:
        >>> list_presets("gta5"), list_presets("synthia")
        (('dinov2', 'dinov2_tiny', 'paper', 'tiny'), ('paper', 'tiny'))
        >>> PRESETS
        ('dinov2', 'dinov2_tiny', 'paper', 'tiny')
    """
    if benchmark not in _RECIPES:
        raise ValueError(f"`benchmark` must be one of {sorted(_RECIPES)}, got {benchmark!r}")
    return tuple(sorted(_RECIPES[benchmark]))


def list_recipes() -> list[str]:
    """``benchmark/preset`` names.

    Example:
        >>> list_recipes()  # doctest: +NORMALIZE_WHITESPACE
        ['cityscapes_ssl/paper', 'cityscapes_ssl/tiny', 'gta5/dinov2', 'gta5/dinov2_tiny', 'gta5/paper', 'gta5/tiny',
         'gta5_dg/dinov2', 'gta5_dg/dinov2_tiny', 'gta5_dg/paper', 'gta5_dg/tiny', 'synthia/paper', 'synthia/tiny']
    """
    return [f"{b}/{p}" for b in sorted(_RECIPES) for p in sorted(_RECIPES[b])]


def recipe_model(recipe: Recipe, *, pretrained: bool = False) -> nn.Module:
    """The recipe's network: :func:`~diga.models.create_model` of its ``model``, ``encoder`` and ``model_kwargs``.

    Nothing is downloaded unless ``pretrained=True`` (then the encoder's weights: ImageNet for the
    paper's ResNet-101, DINOv2's LVD-142M for the ``dinov2`` presets, through timm).

    Example:
        >>> net = recipe_model(get_recipe("gta5", "dinov2_tiny"))
        >>> type(net).__name__, net.encoder_name, len(net.encoder.model.blocks)
        ('TimmSegmenter', 'vit_small_patch14_dinov2', 3)
    """
    from diga.models import create_model

    return create_model(recipe.model, num_classes=recipe.num_classes, encoder_name=recipe.encoder,
                        pretrained=pretrained, **recipe.model_kwargs)


def get_recipe(benchmark: str, preset: str = "paper") -> Recipe:
    """The recipe of a benchmark (``gta5``, ``synthia``, ``gta5_dg``, ``cityscapes_ssl``) and preset (``paper``,
    ``tiny``; ``dinov2``, ``dinov2_tiny`` for ``gta5`` and ``gta5_dg``: :func:`list_presets`).

    Example:
        >>> r = get_recipe("gta5")
        >>> r.warmup.steps, r.warmup.kd_weight, r.self_training.kd_weight, r.optim.lr
        (80000, 0.5, 0.25, 0.00025)
        >>> d = get_recipe("gta5", "dinov2")
        >>> d.encoder, d.crop_size, d.optim.optimizer, d.optim.layer_decay, d.eval_window, d.eval_stride
        ('vit_base_patch14_dinov2', (504, 896), 'adamw', 0.9, (504, 896), (252, 448))
    """
    if benchmark not in _RECIPES:
        raise ValueError(f"`benchmark` must be one of {sorted(_RECIPES)}, got {benchmark!r}")
    if preset not in _RECIPES[benchmark]:
        raise ValueError(f"`preset` must be one of {sorted(_RECIPES[benchmark])}, got {preset!r}")
    return _RECIPES[benchmark][preset]
