"""Segmentation models for DiGA: logits + features from any model, and the paper's networks."""

from diga.models.deeplabv2 import ASPPSumHead, DeepLabV2, DiGAASPPDecoder, SqueezeExcitation
from diga.models.features import FeatureSegmenter, encoder_mean_std, with_features
from diga.models.optim_groups import param_groups
from diga.models.registry import create_model, list_models, model_from_config
from diga.models.timm_segmenter import MLPDecoder, TimmSegmenter
from diga.models.translator import (
    LearnedTranslator,
    MultiScaleDiscriminator,
    TranslatorDecoder,
    TranslatorEncoder,
    TranslatorGenerator,
)

__all__ = [
    "ASPPSumHead",
    "DeepLabV2",
    "DiGAASPPDecoder",
    "FeatureSegmenter",
    "LearnedTranslator",
    "MLPDecoder",
    "MultiScaleDiscriminator",
    "SqueezeExcitation",
    "TimmSegmenter",
    "TranslatorDecoder",
    "TranslatorEncoder",
    "TranslatorGenerator",
    "create_model",
    "encoder_mean_std",
    "list_models",
    "model_from_config",
    "param_groups",
    "with_features",
]
