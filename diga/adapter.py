"""Adapter: DiGA's warm-up step and self-training step around any segmentation model."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from diga._checks import (
    check_images,
    check_labels,
    check_number,
    check_same_batch,
    check_same_spatial,
    value_checks,
)
from diga._ops import class_argmax
from diga._wrap import unwrap_model
from diga.augment import CrossDomainMix, StrongPhotometric, class_mix_mask, mix_by_mask
from diga.losses import MaskedConsistency, SegmentationCELoss, SymmetricKDLoss, resize_logits
from diga.metrics import pseudo_label_precision
from diga.models import FeatureSegmenter, with_features
from diga.selectors import (
    ClassCentroids,
    ClassShareMonitor,
    DynamicPseudoLabelSelector,
    init_centroids,
    kept_fractions,
)
from diga.teacher import EMATeacher
from diga.translation import Translator

__all__ = ["SETTINGS", "AblationOptions", "Adapter", "StepOutput", "setting_defaults"]


@dataclass(frozen=True)
class AblationOptions:
    """The warm-up's ablation switches and the paper script's choices.

    The defaults are what ``Adapter()`` runs: DiGA as the paper describes it, except
    ``mixed_view_ce`` (on: a deliberate difference, below). Each switch gives one row
    of the ablation in docs/benchmarks.md, or reproduces what the paper's script does
    differently from its text; ``AblationOptions(mixed_view_ce=False)`` is the paper's
    warm-up loss, which the paper recipes use.

    Attributes:
        cross_domain_mix: False makes the second source view the strongly augmented source
            alone (no translated background, no paste), in warm-up and in self-training's KD
            (the ``"dg"`` and ``"ssl"`` settings: there is no translation to mix with).
        augment_background: also strongly augment the mix's translated background (a
            second draw), so the whole mixed view is augmented. Off by default (the paper's
            mix). Added while the built-in benchmarks' Fourier band was empty, when it
            recovered most of what the untranslated mix cost the weather shift. With the
            translation running it lifts the built-in warm-up on three kinds of four, every
            seed, and lowers it on layout; after self-training it is ahead on weather only
            (docs/findings.md, "What does each part buy").
        mixed_view_ce: also train the warm-up's second (cross-domain mixed) view with CE on
            the source labels, which hold there (same geometry). On by default: the paper
            trains that view only through KD, from a teacher that is itself learning; with
            CE on both views the warm-up is above the paper's loss on three of the four
            built-in shifts, on every seed (not on layout, which has no appearance gap;
            the numbers: docs/findings.md, "What does each part buy"). False: the paper's loss.
            With ``kd_weight=0``: the "augmentation without distillation" baseline.
        target_bn_leak: the paper script's warm-up leak: the student runs on the target
            batch in train mode (no gradient), so target batch-norm statistics enter the
            "source-only" warm-up. Off by default: on the built-in shifts it lifts the
            warm-up where the target differs in look (by 1.4 to 6.1) and cuts it by 17.6 on
            layout, where the target differs in content (docs/findings.md, "What does each part
            buy").
        teacher_train_mode: keep the teacher in train mode (dropout on) like the paper's
            script; within about 1.6 of the default on the built-in shifts.
        kd_mask_ignore: leave source ignore pixels out of the KD terms (the paper keeps
            every pixel).

    Example:
        >>> AblationOptions(mixed_view_ce=False)  # the paper's warm-up loss
        AblationOptions(cross_domain_mix=True, mixed_view_ce=False, target_bn_leak=False, \
teacher_train_mode=False, kd_mask_ignore=False, augment_background=False)
    """

    cross_domain_mix: bool = True
    mixed_view_ce: bool = True
    target_bn_leak: bool = False
    teacher_train_mode: bool = False
    kd_mask_ignore: bool = False
    augment_background: bool = False

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}")


@dataclass
class StepOutput:
    """What one Adapter step returns.

    Attributes:
        loss: the scalar to call ``backward()`` on.
        parts: detached scalar tensors: every loss term, and in self-training the
            kept fraction of pseudo-labels overall (``kept``) and per class
            (``kept/<k>``), the collapse watch (``collapse``: 1.0 when the
            :class:`~diga.ClassShareMonitor` sees the teacher's target predictions
            narrow to under half the warm-up's effective number of classes,
            ``class_perplexity_ratio``; ``share_ratio_min``: the smallest running /
            reference share of a class), plus pseudo-label precision before
            and after selection when target labels were given for monitoring.
            Tensors stay on device: read them (``float(v)``) only when you log.
        images: detached tensors built during the step, for visualisation.
    """

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    images: dict[str, Tensor] = field(default_factory=dict)


def _is_feature_model(model: nn.Module) -> bool:
    return isinstance(unwrap_model(model), FeatureSegmenter)


#: What each of DiGA's three settings fixes (``Adapter(setting=...)``); every argument given to the
#: Adapter overrides its entry. Read from the public scripts (fy-vision/DiGA): ``uda``
#: ``domain_adaptation/``, ``dg`` ``domain_generalization/train_DiGA_DG.py``, ``ssl``
#: ``semi-supervised_segmentation/train_DiGA_semiseg_*.py``.
SETTINGS: dict[str, dict[str, Any]] = {
    # Unsupervised domain adaptation: labelled source, unlabelled target; the library's defaults.
    "uda": {
        "ablation": AblationOptions(), "kd_weight": 0.5, "st_kd_weight": 0.25,
        "augment": {"beta": 0.4}, "st_augment": {"beta": 0.3}, "self_training": True, "target": True,
    },
    # Domain generalisation: the warm-up alone on the source; the second view is the strongly augmented
    # source (0.4 * augmented + 0.6 * clean; the script's sharpness is commented out), the loss the script's
    # CE on the clean view + 0.5 x symmetric KD. No target, no translator, no self-training.
    "dg": {
        "ablation": AblationOptions(cross_domain_mix=False, mixed_view_ce=False), "kd_weight": 0.5,
        "st_kd_weight": 0.0, "augment": {"beta": 0.4, "sharpness_p": 0.0}, "st_augment": None,
        "self_training": False, "target": False,
    },
    # Semi-supervised: the labelled target images play the source, the unlabelled ones the target; no
    # translator or cross-domain mix; KD 0.5 in both stages, beta 0.4 in both (the scripts' constants).
    "ssl": {
        "ablation": AblationOptions(cross_domain_mix=False, mixed_view_ce=False), "kd_weight": 0.5,
        "st_kd_weight": 0.5, "augment": {"beta": 0.4}, "st_augment": {"beta": 0.4}, "self_training": True,
        "target": True,
    },
}


def setting_defaults(setting: str) -> dict[str, Any]:
    """What ``Adapter(setting=setting)`` uses for the arguments left at None.

    Example:
        >>> d = setting_defaults("dg")
        >>> d["kd_weight"], d["ablation"].cross_domain_mix, d["self_training"]
        (0.5, False, False)
    """
    if setting not in SETTINGS:
        raise ValueError(f"`setting` must be one of {sorted(SETTINGS)}, got {setting!r}")
    return dict(SETTINGS[setting])


class Adapter(nn.Module):
    """DiGA around a segmentation model: one warm-up step, one self-training step.

    Owns the student (wrapped with :func:`diga.models.with_features`, so it takes
    RGB in ``[0, 1]`` and returns ``(logits, features)``), the EMA teacher, the
    cross-domain mix, the strong augmentations, the KD loss, the class centroids
    and the pseudo-label selector. It owns no optimiser, data loading or
    logging: the user's loop is

    .. code-block:: python

        out = adapter.warmup_step(src_img, src_lbl, tgt_img)        # stage 1
        out.loss.backward(); opt.step(); opt.zero_grad(); adapter.update_teacher()
        adapter.init_centroids(target_loader)                       # stage 3
        out = adapter.self_training_step(src_img, src_lbl, tgt_img, tgt_pseudo)  # stage 4
        out.loss.backward(); opt.step(); opt.zero_grad(); adapter.update_teacher()

    ``tgt_pseudo`` may be None (online mode): the labels are then made batch by
    batch by a frozen labeller (multi-scale, ``online_scales``): a copy of the
    model self-training started from, which is what offline mode caches. The
    selector reads the EMA teacher's features against centroids that follow them
    by EMA, as the paper (``select_with="labeller"``: the labeller's features
    against the centroid pass's centroids, a selection fixed for the stage). With
    ``labeller_refresh=N`` a copy of the teacher replaces the
    labeller after ``N`` steps and at each doubling of the stage's length (N, 2N, 4N,
    ... steps): online rounds of the paper's "pseudo-labels again from the self-trained
    model" (off by default: docs/findings.md has what it gained and lost). Nothing else is needed
    between the stages: the first self-training step after :meth:`init_centroids`
    restarts the teacher from the student and sets the collapse watch's
    reference (the centroid pass's class shares).

    Settings (``setting``, :data:`SETTINGS`): ``"uda"`` (the default) adapts from a labelled
    source to an unlabelled target, as above. ``"dg"`` (domain generalisation) is the warm-up
    alone on the source: no target argument anywhere, no translator, the second view the
    strongly augmented source, the scripts' loss (CE on the clean view + 0.5 x KD); the
    self-training methods raise a ``ValueError``. ``"ssl"`` (semi-supervised) takes the
    labelled target images as the source and the unlabelled ones as the target: no translator
    or cross-domain mix, KD weight 0.5 in both stages, self-training with the dynamic
    selection on the unlabelled images and the labelled images' classes pasted onto them.
    Every argument given explicitly overrides the setting's value.

    Auxiliary heads: a model with an auxiliary output (a dict ``{"out", "aux"}`` or a tuple
    ``(logits, aux)``, e.g. :class:`~diga.models.HRNetOCR`; see
    :meth:`~diga.models.FeatureSegmenter.forward`) gets every CE term and the KD term once more
    on its auxiliary logits, weighted ``aux_weight`` (the scripts' 0.1):
    ``CE + 0.1 CE_aux + lambda (KD + 0.1 KD_aux)``; its parts appear as ``ce_aux`` /
    ``kd_aux``. Inference, centroids and selection use the main output only.

    Device: the adapter's own state (teacher, centroids, collapse watch) is made on
    the model's device, so ``Adapter(model.cuda(), C)`` is ready on the GPU;
    ``adapter.to(device)`` moves all of it later, like any module.

    Teacher: an EMA of the student, updated by :meth:`update_teacher` after each
    optimiser step. In warm-up its averaging window grows as ``teacher_ramp`` x
    the steps so far (0.1: about the last tenth of the run), capped at
    ``1 / (1 - teacher_momentum)`` steps, and its batch-norm statistics are
    averaged with the same weights (``teacher_buffers="ema"``), so it is about as
    good as the student at every step of a run of any length, from scratch or
    pretrained. The paper's ramp (``teacher_ramp=1``: the true average of every
    student since the first, 0.999 after 1000 steps) averages in the random
    initial students for the whole of a short run. Self-training restarts it from
    the warm-up student with the paper's true average: that start is worth
    keeping. With ``teacher_ramp=1`` the construction copy counts as the paper's
    iteration-0 update, so calling :meth:`update_teacher` after each optimiser
    step reproduces the paper's sequence exactly.

    Checks: each step checks its inputs (shapes; label range and pixel range
    with one read-back each, unless :func:`diga.set_value_checks` is off) and
    runs its internals with value checks off, since everything they see was
    built from checked inputs: no host sync mid-step on CUDA. The model's
    outputs are not checked for NaN (a diverged loss shows as NaN, and AMP's
    scaler skips such steps).

    Args:
        model: any segmentation model (smp, :class:`~diga.models.TimmSegmenter`,
            :class:`~diga.models.DeepLabV2`, or yours with ``feature_layer``), or
            an already wrapped ``FeatureSegmenter``.
        num_classes: ``C``.
        setting: ``"uda"`` (default), ``"dg"`` or ``"ssl"``: see above and :data:`SETTINGS`.
            The arguments below that default to None take the setting's value.
        translator: source -> target :class:`~diga.Translator` (identity if None); the
            ``"dg"`` setting has no target to translate to and refuses one.
        augment: warm-up strong augmentation (default ``StrongPhotometric(beta=0.4)``;
            ``"dg"``: without the sharpness step, as the script).
        st_augment: self-training strong augmentation for the target and the
            source mixture (default ``StrongPhotometric(beta=0.3)``, the paper's; ``"ssl"``:
            ``beta=0.4``).
        kd_weight: lambda of the KD term in warm-up (paper 0.5, every setting).
        st_kd_weight: lambda of the KD term in self-training (paper 0.25; ``"ssl"``: 0.5).
        aux_weight: weight of the auxiliary head's CE and KD terms (the scripts' 0.1),
            for models with an auxiliary output; ignored otherwise.
        masked_consistency: a :class:`~diga.MaskedConsistency` (MIC) to add to every self-training
            step: the target, strongly augmented on its own draw and block-masked, joins the student's
            forward and learns the EMA teacher's prediction of the clean target, weighted by its
            quality (part ``mic``). None (default): DiGA as the paper.
        seg_loss: the supervised segmentation loss ``(logits, labels) -> scalar`` of every
            CE term (default :class:`~diga.SegmentationCELoss`; the SYNTHIA recipe passes
            :class:`~diga.OhemCELoss`, as its scripts).
        teacher_momentum: EMA ceiling (paper 0.999).
        teacher_ramp: warm-up teacher's averaging window as a fraction of the steps
            so far (paper 1.0: the true average); see above.
        teacher_buffers: ``"ema"`` (average batch-norm statistics with the weights) or
            ``"copy"`` (the student's: the earlier default). The paper's script never updates
            the teacher's (its DeepLabV2 keeps the ImageNet statistics it loaded, with frozen
            batch-norm affine weights); a from-scratch model has no such statistics to keep.
        centroid_momentum: centroid EMA weight (paper 1e-4).
        ignore_index: label value that carries no label.
        feature_layer: for models smp/timm/DeepLabV2 do not cover, the dotted name
            of the layer whose output is the feature.
        feature_dim: ``D``; read from the wrapped model, or found by one dry forward.
        selector: pseudo-label selector; default :class:`~diga.DynamicPseudoLabelSelector`
            on this adapter's centroids. Threshold baselines work too.
        ablation: the warm-up's ablation switches and the paper script's choices
            (:class:`AblationOptions`); default the setting's: ``AblationOptions()`` for
            ``"uda"`` (CE on both warm-up views; the paper: the clean view only,
            ``mixed_view_ce=False``), no cross-domain mix and CE on the clean view for ``"dg"``
            and ``"ssl"``.
        online_scales: scales of the online labeller's fused prediction (the paper's
            pseudo-labels: full and half resolution).
        labeller_refresh: online mode, with ``select_with="teacher"`` (default): self-training steps
            before the labeller is first replaced by a copy of the teacher; it is replaced
            again each time the stage's length doubles. None (default) keeps the first
            labeller for the whole stage (one round of labels, as offline mode). For more
            rounds at the paper's pace, call :meth:`init_centroids` between them: the next
            step starts a new stage, labeller and centroids included.
        select_with: whose features (and logits) the selector reads. ``"teacher"`` (default,
            the paper's): the EMA teacher's at every step, the centroids following them by EMA
            from the selected target labels and the source's mixed view. ``"labeller"``: the
            frozen labeller's (a copy of the stage's starting model, the one whose labels
            offline mode caches; made in offline mode too), with the centroids left as
            :meth:`init_centroids` made them, so each target pixel's selection is fixed for
            the stage and the student's training cannot feed back into which labels it is
            trained on. That was the default while the Fourier band was empty at small
            sizes: weather's pseudo-labels were then 68% precise and the teacher's selection
            fed back on itself (one seed ended below its warm-up); with the band they are 91%
            precise and the paper's selection is level or better on every built-in kind but
            one (docs/findings.md has both measured). ``"labeller"`` keeps one more frozen copy
            of the model and, offline, costs one no-grad forward of the target batch a step;
            it needs ``labeller_refresh=None`` and centroids from the same model
            (``init_centroids(which="student")``, the default, run just before the stage).

    Example:
        >>> import segmentation_models_pytorch as smp
        >>> net = smp.Unet("resnet18", encoder_weights=None, classes=4, encoder_depth=3,
        ...                decoder_channels=(32, 16, 8))
        >>> adapter = Adapter(net, num_classes=4)
        >>> g = torch.Generator().manual_seed(0)
        >>> src, tgt = torch.rand(2, 2, 3, 32, 32, generator=g)
        >>> lbl = torch.randint(0, 4, (2, 32, 32), generator=g)
        >>> out = adapter.warmup_step(src, lbl, tgt, generator=g)
        >>> out.loss.backward()
        >>> sorted(out.parts)
        ['ce', 'kd', 'loss']
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        setting: str = "uda",
        translator: Translator | None = None,
        augment: nn.Module | None = None,
        st_augment: nn.Module | None = None,
        kd_weight: float | None = None,
        st_kd_weight: float | None = None,
        aux_weight: float = 0.1,
        seg_loss: nn.Module | None = None,
        masked_consistency: MaskedConsistency | None = None,
        teacher_momentum: float = 0.999,
        teacher_ramp: float = 0.1,
        teacher_buffers: str = "ema",
        centroid_momentum: float = 1e-4,
        ignore_index: int = 255,
        feature_layer: str | None = None,
        feature_dim: int | None = None,
        selector: nn.Module | None = None,
        ablation: AblationOptions | None = None,
        online_scales: Sequence[float] = (1.0, 0.5),
        labeller_refresh: int | None = None,
        select_with: str = "teacher",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
        defaults = setting_defaults(setting)
        self.setting = setting
        kd_weight = defaults["kd_weight"] if kd_weight is None else kd_weight
        st_kd_weight = defaults["st_kd_weight"] if st_kd_weight is None else st_kd_weight
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(kd_weight, "kd_weight", low=0)
        check_number(st_kd_weight, "st_kd_weight", low=0)
        check_number(aux_weight, "aux_weight", low=0)
        check_number(ignore_index, "ignore_index", integer=True)
        if translator is not None and not callable(translator):
            raise ValueError(f"`translator` must be callable (source, target) -> images, got {translator!r}")
        if translator is not None and not defaults["target"]:
            raise ValueError(f"`translator` must be None with setting={setting!r}: it trains on the source alone, "
                             "with no target images to translate to")
        if seg_loss is not None and not callable(seg_loss):
            raise ValueError(f"`seg_loss` must be callable (logits, labels) -> loss, got {seg_loss!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.kd_weight = float(kd_weight)
        self.st_kd_weight = float(st_kd_weight)
        self.aux_weight = float(aux_weight)
        if ablation is not None and not isinstance(ablation, AblationOptions):
            raise ValueError(f"`ablation` must be an AblationOptions, got {type(ablation).__name__}")
        self.ablation = ablation if ablation is not None else defaults["ablation"]
        self.seg_loss = seg_loss if seg_loss is not None else SegmentationCELoss(ignore_index=ignore_index)
        if masked_consistency is not None and not isinstance(masked_consistency, MaskedConsistency):
            raise ValueError(f"`masked_consistency` must be a MaskedConsistency or None, got "
                             f"{type(masked_consistency).__name__}")
        self.masked_consistency = masked_consistency

        self.student = model if _is_feature_model(model) else with_features(model, feature_layer)
        self.teacher = EMATeacher(self.student, momentum=teacher_momentum, ramp=teacher_ramp, buffers=teacher_buffers,
                                  train_mode=self.ablation.teacher_train_mode)
        self.teacher.update(self.student)  # the paper's iteration-0 copy: see the class docstring
        self.stage = "warmup"
        self.translator = translator
        self.augment = augment if augment is not None else StrongPhotometric(**defaults["augment"])
        if st_augment is None and defaults["st_augment"] is not None:
            st_augment = StrongPhotometric(**defaults["st_augment"])
        self.st_augment = st_augment
        self.mix = CrossDomainMix(ignore_index=ignore_index, num_classes=num_classes)
        self.kd = SymmetricKDLoss(augmented_weight=0.5, ignore_index=ignore_index)
        dim = feature_dim if feature_dim is not None else self._feature_dim()
        self.centroids = ClassCentroids(
            num_classes, dim, momentum=centroid_momentum, ignore_index=ignore_index
        )
        if selector is None:
            # Shares this adapter's centroid bank; kept out of the module tree so the bank is not
            # saved twice and adapters with different selectors load each other's state.
            self.__dict__["selector"] = DynamicPseudoLabelSelector(self.centroids, ignore_index=ignore_index)
        else:
            self.selector = selector
        self.monitor = ClassShareMonitor(num_classes, ignore_index=ignore_index)
        if not online_scales:
            raise ValueError("`online_scales` must name at least one scale, got an empty sequence")
        for scale in online_scales:
            check_number(scale, "online_scales", low=0, low_open=True)
        self.online_scales = tuple(float(x) for x in online_scales)
        if labeller_refresh is not None:
            check_number(labeller_refresh, "labeller_refresh", low=1, integer=True)
        self.labeller_refresh = None if labeller_refresh is None else int(labeller_refresh)
        if select_with not in ("teacher", "labeller"):
            raise ValueError(f"`select_with` must be 'teacher' or 'labeller', got {select_with!r}")
        if select_with == "labeller" and self.labeller_refresh is not None:
            raise ValueError(
                "`labeller_refresh` must be None with select_with='labeller' (got "
                f"{self.labeller_refresh}): a refreshed labeller's features no longer match the centroids; "
                "pass select_with='teacher' to refresh, or call init_centroids between rounds"
            )
        self.select_with = select_with
        self.labeller: nn.Module | None = None
        self.stage_step = 0  # self-training steps taken in the current stage
        self.step = 0
        param = next(self.student.parameters(), None)
        if param is not None and param.device.type != "cpu":  # a model already on the GPU brings its adapter
            self.to(param.device)

    # ------------------------------------------------------------- helpers
    def _feature_dim(self) -> int:
        dim = getattr(unwrap_model(self.student), "feature_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
        model = unwrap_model(self.student)
        was_training = model.training
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model.eval()
        try:
            with torch.no_grad():
                _, feats = model(torch.zeros(1, 3, 64, 64, device=device))
        finally:
            model.train(was_training)
        return int(feats.shape[1])

    def _translate(self, source: Tensor, target: Tensor | None) -> Tensor:
        if self.translator is None or target is None:
            return source
        with torch.no_grad():
            out = self.translator(source, target)
        if not isinstance(out, Tensor) or out.shape != source.shape:
            raise ValueError(
                f"`translator` must return images shaped like the source {tuple(source.shape)}, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out.detach().to(source.dtype)

    def _check_source(self, images: Tensor, labels: Tensor) -> None:
        check_images(images, "source_images")
        check_labels(labels, "source_labels", num_classes=self.num_classes, ignore_index=self.ignore_index)
        check_same_batch(images, labels, "source_images", "source_labels")
        check_same_spatial(images, labels, "source_images", "source_labels")

    def _kd(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        size = labels.shape[-2:]
        return self.kd(
            resize_logits(student_logits, size),
            resize_logits(teacher_logits, size),
            labels if self.ablation.kd_mask_ignore else None,
        )

    def _resize_once(self, logits: Tensor | None, size: tuple[int, int]) -> Tensor | None:
        """The student's logits at the labels' ``size`` once, for the CE and KD terms that would each
        resize them the same way (the default CE and the KD: bilinear, ``align_corners=True``): one
        upsample and one upsample backward instead of one per term. As given for another ``seg_loss``."""
        if logits is None or type(self.seg_loss) is not SegmentationCELoss or not self.seg_loss.align_corners:
            return logits
        return resize_logits(logits, size)

    def _check_aux(self, aux: Tensor | None, logits: Tensor) -> Tensor | None:
        """The auxiliary logits, when the model has them and they are weighted; checked once per step."""
        if aux is None or self.aux_weight == 0:
            return None
        if aux.shape[:2] != logits.shape[:2]:
            raise ValueError(f"`model`'s auxiliary output must be (B, C, h, w) = ({logits.shape[0]}, "
                             f"{logits.shape[1]}, h, w) like its logits, got {tuple(aux.shape)}")
        return aux

    def _supervised(self, parts: dict[str, Tensor], name: str, logits: Tensor, aux: Tensor | None,
                    labels: Tensor) -> Tensor:
        """``seg_loss`` on the logits (+ ``aux_weight`` x on the auxiliary logits), parts recorded."""
        loss = self.seg_loss(logits, labels)
        parts[name] = loss.detach()
        if aux is not None:
            aux_loss = self.seg_loss(aux, labels)
            parts[f"{name}_aux"] = aux_loss.detach()
            loss = loss + self.aux_weight * aux_loss
        return loss

    def _distil(self, parts: dict[str, Tensor], student: tuple[Tensor, Tensor | None],
                teacher: tuple[Tensor, Tensor | None], labels: Tensor) -> Tensor:
        """Symmetric KD on the logits (+ ``aux_weight`` x on the auxiliary logits), parts recorded."""
        kd = self._kd(student[0], teacher[0], labels)
        parts["kd"] = kd.detach()
        if student[1] is not None and teacher[1] is not None:
            kd_aux = self._kd(student[1], teacher[1], labels)
            parts["kd_aux"] = kd_aux.detach()
            kd = kd + self.aux_weight * kd_aux
        return kd

    def _forward(self, net: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(logits, features, aux logits or None)`` of the student (its training wrapper) or the teacher."""
        logits, feats, aux = net(images, aux=True)
        return logits, feats, self._check_aux(aux, logits)

    def _require(self, what: str) -> None:
        """Self-training and its stages exist only where the setting has a target."""
        if not SETTINGS[self.setting]["self_training"]:
            raise ValueError(f"`{what}` is not part of setting={self.setting!r}: domain generalisation is the "
                             "warm-up alone on the source (no target images, no self-training); use "
                             "setting='uda' or 'ssl' to self-train")

    @property
    def train_student(self) -> nn.Module:
        """The module training forwards go through: the student, or its DDP wrapper."""
        wrapped = self.__dict__.get("_wrapped_student")
        return wrapped if wrapped is not None else self.student

    def distribute(self, wrap) -> nn.Module:
        """Route training forwards through ``wrap(self.student)`` (e.g. DDP), keeping state_dict keys.

        Example (under ``torchrun``):
            ``adapter.distribute(lambda m: DistributedDataParallel(m, device_ids=[rank]))``
        """
        wrapped = wrap(self.student)
        if not isinstance(wrapped, nn.Module):
            raise ValueError(f"`wrap` must return an nn.Module, got {type(wrapped).__name__}")
        self.__dict__["_wrapped_student"] = wrapped  # not registered: state_dict keys stay plain
        return wrapped

    def source_only_step(self, source_images: Tensor, source_labels: Tensor) -> StepOutput:
        """The baseline: cross-entropy on the clean source view alone (no KD, no mix; ERM in ``"dg"``,
        the supervised-only baseline in ``"ssl"``), plus ``aux_weight`` x the auxiliary head's."""
        self._check_source(source_images, source_labels)
        logits, _, aux = self._forward(self.train_student, source_images)
        parts: dict[str, Tensor] = {}
        loss = self._supervised(parts, "ce", logits, aux, source_labels)
        self.step += 1
        return StepOutput(loss=loss, parts={"loss": loss.detach(), **parts},
                          images={"source": source_images.detach()})

    def update_teacher(self) -> None:
        """One EMA step of the teacher towards the student (after each optimiser step)."""
        self.teacher.update(self.student)

    @torch.no_grad()
    def reset_teacher(self, *, ramp: float | None = None) -> None:
        """Restart the teacher from the student, ramp included (the paper does this per stage)."""
        self.teacher.restart(self.student, ramp=ramp)

    def _enter_self_training(self, online: bool) -> None:
        """The first self-training step of a stage restarts the teacher from the student with the
        paper's true average, and takes the centroid pass's class shares as the collapse reference.
        In online mode (or with ``select_with="labeller"``) the stage's first step also freezes a copy
        of the student as the labeller; online, it is replaced by a copy of the teacher after
        ``labeller_refresh`` steps and each doubling after."""
        if self.stage != "self_training":
            self.reset_teacher(ramp=1.0)
            self.monitor.set_reference(counts=self.centroids.pixel_counts)
            self.labeller = None
            self.stage_step = 0
            self.stage = "self_training"
        if self.labeller is None and (online or self.select_with == "labeller"):
            self._make_labeller(self.teacher.model)
        elif online and self.stage_step == self.labeller_due:
            self._make_labeller(self.teacher.model)

    @property
    def labeller_due(self) -> int | None:
        """The stage step before which the online labeller is next refreshed: the smallest
        ``labeller_refresh * 2**k`` not yet passed (None without a refresh)."""
        if self.labeller_refresh is None:
            return None
        due = self.labeller_refresh
        while due < self.stage_step:
            due *= 2
        return due

    def _make_labeller(self, source: nn.Module) -> None:
        labeller = copy.deepcopy(unwrap_model(source)).eval()
        for p in labeller.parameters():
            p.requires_grad_(False)
        self.labeller = labeller

    @torch.no_grad()
    def online_pseudo_labels(self, target_images: Tensor) -> Tensor:
        """Online mode's pseudo-labels: the labeller's multi-scale argmax, ``(B, H, W)``.

        The labeller is a frozen copy of the model the self-training stage started
        from (the warm-up student), made at the stage's first online step: the very
        labels offline mode would have cached, made batch by batch instead. With
        ``labeller_refresh`` set, after that many steps and again each time the stage's
        length doubles, it becomes a frozen copy of the teacher (online rounds). A labeller that
        followed the teacher at every step confirms its own mistakes: on the
        built-in shifts that collapsed within a hundred steps (docs/findings.md).
        """
        self._require("online_pseudo_labels")
        if self.labeller is None:
            raise ValueError("no labeller yet: online pseudo-labels are made inside self_training_step")
        from diga.inference import predict_logits

        return class_argmax(predict_logits(self.labeller, target_images, self.online_scales))

    @torch.no_grad()
    def _labeller_view(
        self, target_images: Tensor, online: bool
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """``select_with="labeller"``: the labeller's full-scale logits and features of the target,
        and (online) its multi-scale pseudo-labels, the full scale's forward shared."""
        from diga.inference import predict_logits

        logits, feats = self.labeller(target_images)
        if not online:
            return None, logits, feats
        if 1.0 not in self.online_scales:
            return self.online_pseudo_labels(target_images), logits, feats
        fused = resize_logits(logits, target_images.shape[-2:]).float()
        rest = tuple(s for s in self.online_scales if s != 1.0)
        if rest:
            fused = torch.maximum(fused, predict_logits(self.labeller, target_images, rest))
        return class_argmax(fused), logits, feats

    # ------------------------------------------------------------ warm-up
    def warmup_step(
        self,
        source_images: Tensor,
        source_labels: Tensor,
        target_images: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Stage 1: CE on both source views (the paper: the clean one) + ``kd_weight`` x symmetric KD.

        The translated source (style reference: ``target_images``; identity
        without translator) is the background onto which half of the source
        classes of the strongly augmented source are pasted. Student and teacher
        each see ``[clean; mixed]`` in one batched forward. The target batch
        serves the translator only (unless ``ablation.target_bn_leak``).

        Args:
            source_images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
            source_labels: ``(B, H, W)`` int64.
            target_images: ``(B_t, 3, H', W')`` RGB in ``[0, 1]``; optional.
            generator: random source for the augmentation and the mix.
        """
        self._check_source(source_images, source_labels)
        if target_images is not None:
            if not SETTINGS[self.setting]["target"]:
                raise ValueError(f"`target_images` must be None with setting={self.setting!r}: domain "
                                 "generalisation trains on the source alone")
            check_images(target_images, "target_images")
        with value_checks(False):  # the inputs are checked; what the step builds from them is not re-read
            return self._warmup(source_images, source_labels, target_images, generator)

    def _warmup(
        self, source_images: Tensor, source_labels: Tensor, target_images: Tensor | None,
        generator: torch.Generator | None,
    ) -> StepOutput:
        b, ablation = source_images.shape[0], self.ablation
        # Two views of each source image: the clean one, and the strongly augmented source
        # pasted (half its classes) over the translated source.
        translated = self._translate(source_images, target_images)
        augmented = self.augment(source_images, generator=generator)
        extra = {}
        if ablation.cross_domain_mix:
            background = translated
            if ablation.augment_background:
                background = extra["background"] = self.augment(translated, generator=generator)
            mixed, _, mask = self.mix(augmented, background, source_labels, generator=generator)
        else:
            mixed, mask = augmented, torch.ones_like(source_labels, dtype=torch.bool)
        views = torch.cat([source_images, mixed])

        if ablation.target_bn_leak and target_images is not None:
            with torch.no_grad():
                self.train_student(target_images)
        # Student and teacher on both views; CE on the clean view, symmetric KD across the two.
        student_logits, _, student_aux = self._forward(self.train_student, views)
        teacher_logits, _, teacher_aux = self._forward(self.teacher, views)
        size = source_labels.shape[-2:]
        student_logits, student_aux = self._resize_once(student_logits, size), self._resize_once(student_aux, size)
        parts: dict[str, Tensor] = {}
        if ablation.mixed_view_ce:  # both views, the whole batch (no slice to take a gradient through)
            ce = self._supervised(parts, "ce", student_logits, student_aux, source_labels.repeat(2, 1, 1))
        else:
            ce = self._supervised(parts, "ce", student_logits[:b], None if student_aux is None else student_aux[:b],
                                  source_labels)
        kd = self._distil(parts, (student_logits, student_aux), (teacher_logits, teacher_aux), source_labels)
        loss = ce + self.kd_weight * kd
        self.step += 1
        return StepOutput(
            loss=loss,
            parts={"loss": loss.detach(), **parts},
            images={
                "source": source_images.detach(),
                "translated": translated,
                "augmented": augmented.detach(),
                "mixed": mixed.detach(),
                "mask": mask,
                **{k: v.detach() for k, v in extra.items()},
            },
        )

    # ------------------------------------------------------- self-training
    def _teacher_forward(self, clean: Tensor, mixed: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Teacher logits and features on [clean; mixed; target] (same size), aux logits (or None) on at
        least [clean; mixed]: one forward in eval mode; in train mode the target goes alone, so batch norm
        sees [clean; mixed] together."""
        if not self.teacher.model.training:
            return self._forward(self.teacher, torch.cat([clean, mixed, target]))
        logits, feats, aux = self._forward(self.teacher, torch.cat([clean, mixed]))
        t_logits, t_feats = self.teacher(target)
        return torch.cat([logits, t_logits]), torch.cat([feats, t_feats]), aux

    def self_training_step(
        self,
        source_images: Tensor,
        source_labels: Tensor,
        target_images: Tensor,
        target_pseudo_labels: Tensor | None = None,
        *,
        target_labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Stage 4: selected target pseudo-labels through a DACS mix, source CE, ``st_kd_weight`` x KD.

        1. Teacher on ``[source; cross-domain mixed source]`` and on the clean target.
        2. The selector keeps the pseudo-labels the nearest centroid agrees with
           (``target_pseudo_labels``; made by the frozen labeller when None: online mode),
           on the teacher's features (``select_with="labeller"``: the frozen labeller's).
        3. Centroids: one EMA step from the target (selected labels, teacher prediction
           agreeing) and one from the source's mixed view, as the paper; with
           ``select_with="labeller"`` they stay as :meth:`init_centroids` made them.
        4. DACS mix: half of the source classes pasted onto the augmented target,
           labels mixed by the same mask; the student learns it with CE.

        Args:
            source_images: ``(B, 3, H, W)``; source_labels ``(B, H, W)``.
            target_images: ``(B, 3, H, W)`` (same size as the source for the mix).
            target_pseudo_labels: ``(B, H, W)`` offline pseudo-labels, or None.
            target_labels: ``(B, H, W)`` ground truth, for monitoring only
                (precision before/after selection in ``parts``); never trained on.
            generator: random source for augmentations and masks.
        """
        self._require("self_training_step")
        self._check_source(source_images, source_labels)
        check_images(target_images, "target_images")
        if target_images.shape != source_images.shape:
            raise ValueError(
                "`target_images` must have the source's shape for the DACS mix, "
                f"got {tuple(target_images.shape)} and {tuple(source_images.shape)}"
            )
        size = target_images.shape[-2:]
        for name, lbl in (("target_pseudo_labels", target_pseudo_labels), ("target_labels", target_labels)):
            if lbl is not None:
                check_labels(lbl, name, num_classes=self.num_classes, ignore_index=self.ignore_index)
                if lbl.shape != (target_images.shape[0], *size):
                    raise ValueError(
                        f"`{name}` must be (B, H, W) = {(target_images.shape[0], *size)}, "
                        f"got {tuple(lbl.shape)}"
                    )
        self._enter_self_training(online=target_pseudo_labels is None)
        with value_checks(False):  # the inputs are checked; what the step builds from them is not re-read
            return self._self_training(
                source_images, source_labels, target_images, target_pseudo_labels, target_labels, generator
            )

    def _self_training(
        self, source_images: Tensor, source_labels: Tensor, target_images: Tensor,
        target_pseudo_labels: Tensor | None, target_labels: Tensor | None, generator: torch.Generator | None,
    ) -> StepOutput:
        b = source_images.shape[0]

        translated = self._translate(source_images, target_images)
        source_aug = self.st_augment(source_images, generator=generator)
        target_aug = self.st_augment(target_images, generator=generator)
        mask_kw = dict(ignore_index=self.ignore_index, num_classes=self.num_classes, generator=generator)
        dacs_mask = None
        if self.ablation.cross_domain_mix:
            mix_mask = None
            if generator is not None:  # both class-mix masks of the source labels in one pass, the same
                # draws in the same order (nothing draws from the generator between them)
                mix_mask, dacs_mask = class_mix_mask(source_labels, num_masks=2, **mask_kw)
            mixed_source, _, _ = self.mix(source_aug, translated, source_labels, mask=mix_mask, generator=generator)
        else:  # "ssl" / no mix: the second view is the strongly augmented source alone
            mixed_source = source_aug

        all_t_logits, all_t_feats, t_aux = self._teacher_forward(source_images, mixed_source, target_images)
        t_logits, tt_logits, tt_feats = all_t_logits[: 2 * b], all_t_logits[2 * b :], all_t_feats[2 * b :]
        t_aux = None if t_aux is None else t_aux[: 2 * b]
        with torch.no_grad():
            watch = self.monitor.update(class_argmax(tt_logits))
            if self.select_with == "labeller":  # frozen features, frozen centroids: a fixed selection
                made, sel_logits, sel_feats = self._labeller_view(target_images, target_pseudo_labels is None)
                if target_pseudo_labels is None:
                    target_pseudo_labels = made
                selected = self.selector(target_pseudo_labels, features=sel_feats, logits=sel_logits)
            else:
                if target_pseudo_labels is None:
                    target_pseudo_labels = self.online_pseudo_labels(target_images)
                selected = self.selector(target_pseudo_labels, features=tt_feats, logits=tt_logits)
                # The centroids' two EMA steps, the target's (selected labels) then the source's mixed
                # view, as the paper: the teacher's [mixed; target] in one pass, steps in that order.
                self.centroids.update(all_t_feats[b:], labels=torch.cat([source_labels, selected]),
                                      logits=all_t_logits[b:], steps=2, order=(1, 0))
            if dacs_mask is None:
                dacs_mask = class_mix_mask(source_labels, **mask_kw)
            dacs_images = mix_by_mask(source_images, target_aug, dacs_mask)
            dacs_labels = mix_by_mask(source_labels, selected, dacs_mask)

        # One student forward over [source; mixed source; DACS mix]: one forward per backward
        # (what DDP expects) and faster; batch norm sees the 3B images together where the
        # paper's two forwards see 2B and then B.
        views = [source_images, mixed_source, dacs_images]
        mic = self.masked_consistency
        if mic is not None:  # MIC: the target on its own strong augmentation, block-masked
            masked, _ = mic.mask(self.st_augment(target_images, generator=generator), generator=generator)
            views.append(masked)
        all_logits, _, all_aux = self._forward(self.train_student, torch.cat(views))
        size = source_labels.shape[-2:]
        # [source; mixed source; DACS] at the labels' size once for their CE and KD terms (not MIC's views).
        main, main_aux = (all_logits, all_aux) if mic is None else (
            all_logits[: 3 * b], None if all_aux is None else all_aux[: 3 * b])
        main, main_aux = self._resize_once(main, size), self._resize_once(main_aux, size)
        s_logits, mix_logits = main[: 2 * b], main[2 * b : 3 * b]
        s_aux, mix_aux = (None, None) if main_aux is None else (main_aux[: 2 * b], main_aux[2 * b : 3 * b])
        parts: dict[str, Tensor] = {}
        ce_source = self._supervised(parts, "ce_source", s_logits[:b], None if s_aux is None else s_aux[:b],
                                     source_labels)
        ce_mix = self._supervised(parts, "ce_mix", mix_logits, mix_aux, dacs_labels)
        kd = self._distil(parts, (s_logits, s_aux), (t_logits, t_aux), source_labels)
        loss = ce_source + ce_mix + self.st_kd_weight * kd
        if mic is not None:
            mic_loss = mic(all_logits[3 * b :], tt_logits)
            parts["mic"] = mic_loss.detach()
            loss = loss + mic_loss
        self.step += 1
        self.stage_step += 1

        parts = {"loss": loss.detach(), **parts}
        stats = kept_fractions(
            target_pseudo_labels, selected, num_classes=self.num_classes, ignore_index=self.ignore_index
        )
        parts["kept"] = stats.kept
        parts["collapse"] = watch.collapsed.float()
        parts["share_ratio_min"] = watch.min_ratio
        parts["class_perplexity_ratio"] = watch.perplexity_ratio
        for k in range(self.num_classes):
            parts[f"kept/{k}"] = stats.kept_per_class[k]
        if target_labels is not None:
            for name, lbl in (("precision_before", target_pseudo_labels), ("precision_after", selected)):
                parts[name] = pseudo_label_precision(lbl, target_labels, ignore_index=self.ignore_index)
        return StepOutput(
            loss=loss,
            parts=parts,
            images={
                "source": source_images.detach(), "translated": translated,
                "mixed_source": mixed_source.detach(), "target": target_images.detach(),
                "target_augmented": target_aug.detach(), "pseudo": target_pseudo_labels,
                "selected": selected, "dacs": dacs_images, "dacs_labels": dacs_labels,
            },
        )

    # ---------------------------------------------------------- centroids
    def init_centroids(
        self,
        batches: Iterable[Any],
        *,
        use_labels: bool = False,
        which: str = "student",
        max_batches: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Stage 3: this adapter's class centroids from one pass over images (the paper: the target set).

        :func:`diga.selectors.init_centroids` with the student (the paper's choice after warm-up) or the
        teacher; the next self-training step then starts a self-training stage.

        Args:
            batches: iterable of image tensors, ``(images, labels, ...)`` tuples
                or dicts with ``"image"`` (and ``"label"``).
            use_labels: count a pixel only where the batch's labels agree with the prediction.
            which: ``"student"`` or ``"teacher"``.
            max_batches: stop after this many batches.
            progress: show a tqdm bar.

        Returns:
            The ``(C, D)`` centroids.
        """
        self._require("init_centroids")
        centroids = init_centroids(self.centroids, self._model(which), batches, use_labels=use_labels,
                                   max_batches=max_batches, progress=progress)
        self.stage = "centroids"  # the next self-training step starts a self-training stage
        return centroids

    def _model(self, which: str) -> nn.Module:
        """The unwrapped student or the teacher's model."""
        if which not in ("student", "teacher"):
            raise ValueError(f"`which` must be 'student' or 'teacher', got {which!r}")
        return unwrap_model(self.student) if which == "student" else self.teacher.model

    # ------------------------------------------------------------ predict
    def predict(
        self, images: Tensor, scales: Sequence[float] = (1.0, 0.5), *, which: str = "student"
    ) -> Tensor:
        """Multi-scale prediction fused by element-wise max of the logits, as in the paper.

        See :func:`diga.inference.predict_logits`.

        Args:
            images: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
            scales: resize factors (the paper: full and half resolution).
            which: ``"student"`` or ``"teacher"``.

        Returns:
            ``(B, C, H, W)`` fused logits (``.argmax(1)`` for labels).
        """
        from diga.inference import predict_logits

        return predict_logits(self._model(which), images, scales)

    # -------------------------------------------------------------- state
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; a state saved with an online labeller brings one along."""
        has_labeller = any(k.startswith("labeller.") for k in state_dict)
        if has_labeller and self.labeller is None:
            self._make_labeller(self.student)  # the architecture; the weights come from the state
        elif not has_labeller:
            self.labeller = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> Adapter:
        super().train(mode)
        if self.labeller is not None:
            self.labeller.eval()
        return self

    def get_extra_state(self) -> dict:
        return {"step": self.step, "stage": self.stage, "stage_step": self.stage_step}

    def set_extra_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.stage = str(state.get("stage", "warmup"))
        self.stage_step = int(state.get("stage_step", 0))

    def extra_repr(self) -> str:
        return (
            ("" if self.setting == "uda" else f"setting={self.setting!r}, ")
            + f"num_classes={self.num_classes}, kd_weight={self.kd_weight}, "
            f"st_kd_weight={self.st_kd_weight}, step={self.step}"
        ) + ("" if self.select_with == "teacher" else f", select_with={self.select_with!r}") + (
            "" if self.ablation == AblationOptions() else f", ablation={self.ablation}"
        )
