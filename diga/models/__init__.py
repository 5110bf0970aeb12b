"""Segmentation models for DiGA: logits + features from any model, and the paper's segmentation networks
(DeepLabV2, HRNetOCR, DAFormer; the translator's networks: :mod:`diga.translation`)."""

from diga.models.daformer import DAFormer, DAFormerDecoder
from diga.models.deeplabv2 import ASPPSumHead, DeepLabV2, DiGAASPPDecoder, SqueezeExcitation
from diga.models.features import FeatureSegmenter, encoder_mean_std, with_features
from diga.models.hrnet_ocr import HRNetOCR, OCRDecoder, object_context, object_region_representations
from diga.models.optim_groups import param_groups
from diga.models.registry import create_model, list_models, model_from_config
from diga.models.timm_segmenter import MLPDecoder, TimmSegmenter

__all__ = [
    "ASPPSumHead",
    "DAFormer",
    "DAFormerDecoder",
    "DeepLabV2",
    "DiGAASPPDecoder",
    "FeatureSegmenter",
    "HRNetOCR",
    "MLPDecoder",
    "OCRDecoder",
    "SqueezeExcitation",
    "TimmSegmenter",
    "create_model",
    "encoder_mean_std",
    "list_models",
    "model_from_config",
    "object_context",
    "object_region_representations",
    "param_groups",
    "with_features",
]
