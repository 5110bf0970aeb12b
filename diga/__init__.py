"""diga: DiGA (CVPR 2023) domain-adaptive semantic segmentation for any PyTorch model."""

from diga._checks import set_value_checks, value_checks, value_checks_enabled
from diga._random import derive_generator
from diga._wrap import unwrap_model
from diga.adapter import AblationOptions, Adapter, StepOutput
from diga.augment import (
    CrossDomainMix,
    StrongPhotometric,
    block_mask,
    class_mix_mask,
    mask_images,
    mix_by_mask,
    strong_photometric,
)
from diga.losses import (
    MaskedConsistency,
    OhemCELoss,
    SegmentationCELoss,
    SymmetricKDLoss,
    masked_consistency_loss,
    ohem_ce_loss,
    resize_logits,
    segmentation_ce_loss,
    symmetric_kd_loss,
)
from diga.metrics import ConfusionMatrix, iou_from_confusion, miou
from diga.models import (
    DAFormer,
    DeepLabV2,
    FeatureSegmenter,
    HRNetOCR,
    TimmSegmenter,
    create_model,
    list_models,
    model_from_config,
    param_groups,
    with_features,
)
from diga.selectors import (
    ClassBalancedSelector,
    ClassCentroids,
    ClassShareMonitor,
    ConfidenceThresholdSelector,
    DynamicPseudoLabelSelector,
    PseudoLabelSelector,
    SelectionStats,
    kept_fractions,
    pseudo_label_confidence,
)
from diga.teacher import EMATeacher
from diga.translation import FourierTranslator, IdentityTranslator, LearnedTranslator, Translator, fourier_translate

__version__ = "0.1.0"

__all__ = [
    "AblationOptions",
    "Adapter",
    "ClassBalancedSelector",
    "ClassCentroids",
    "ClassShareMonitor",
    "ConfidenceThresholdSelector",
    "ConfusionMatrix",
    "CrossDomainMix",
    "DAFormer",
    "DeepLabV2",
    "DynamicPseudoLabelSelector",
    "EMATeacher",
    "FeatureSegmenter",
    "FourierTranslator",
    "HRNetOCR",
    "IdentityTranslator",
    "LearnedTranslator",
    "MaskedConsistency",
    "OhemCELoss",
    "PseudoLabelSelector",
    "SegmentationCELoss",
    "SelectionStats",
    "StepOutput",
    "StrongPhotometric",
    "SymmetricKDLoss",
    "TimmSegmenter",
    "Translator",
    "__version__",
    "block_mask",
    "class_mix_mask",
    "create_model",
    "derive_generator",
    "fourier_translate",
    "iou_from_confusion",
    "kept_fractions",
    "list_models",
    "mask_images",
    "masked_consistency_loss",
    "miou",
    "mix_by_mask",
    "model_from_config",
    "ohem_ce_loss",
    "param_groups",
    "pseudo_label_confidence",
    "resize_logits",
    "segmentation_ce_loss",
    "set_value_checks",
    "strong_photometric",
    "symmetric_kd_loss",
    "unwrap_model",
    "value_checks",
    "value_checks_enabled",
    "with_features",
]
