"""Losses: symmetric cross-view distillation and segmentation cross-entropy."""

from diga.losses.segmentation_ce import SegmentationCELoss, resize_logits, segmentation_ce_loss
from diga.losses.symmetric_kd import SymmetricKDLoss, symmetric_kd_loss
from diga.losses.translator_losses import (
    LSGANLoss,
    PerceptualLoss,
    ReconstructionLoss,
    SemanticEdgeLoss,
    VGG19Features,
    lsgan_loss,
    perceptual_loss,
    reconstruction_loss,
    semantic_edge_loss,
    semantic_edge_mask,
    vgg19_features,
)

__all__ = [
    "LSGANLoss",
    "PerceptualLoss",
    "ReconstructionLoss",
    "SegmentationCELoss",
    "SemanticEdgeLoss",
    "SymmetricKDLoss",
    "VGG19Features",
    "lsgan_loss",
    "perceptual_loss",
    "reconstruction_loss",
    "resize_logits",
    "segmentation_ce_loss",
    "semantic_edge_loss",
    "semantic_edge_mask",
    "symmetric_kd_loss",
    "vgg19_features",
]
