"""Segmentation models for DiGA: logits + features from any model, and the paper's segmentation networks
(the translator's networks: :mod:`diga.translation`)."""

from diga.models.deeplabv2 import ASPPSumHead, DeepLabV2, DiGAASPPDecoder, SqueezeExcitation
from diga.models.features import FeatureSegmenter, encoder_mean_std, with_features
from diga.models.optim_groups import param_groups
from diga.models.registry import create_model, list_models, model_from_config
from diga.models.timm_segmenter import MLPDecoder, TimmSegmenter

__all__ = [
    "ASPPSumHead",
    "DeepLabV2",
    "DiGAASPPDecoder",
    "FeatureSegmenter",
    "MLPDecoder",
    "SqueezeExcitation",
    "TimmSegmenter",
    "create_model",
    "encoder_mean_std",
    "list_models",
    "model_from_config",
    "param_groups",
    "with_features",
]
