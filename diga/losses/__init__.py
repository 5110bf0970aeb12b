"""Losses: symmetric cross-view distillation and segmentation cross-entropy."""

from diga.losses.segmentation_ce import SegmentationCELoss, resize_logits, segmentation_ce_loss
from diga.losses.symmetric_kd import SymmetricKDLoss, symmetric_kd_loss

__all__ = [
    "SegmentationCELoss",
    "SymmetricKDLoss",
    "resize_logits",
    "segmentation_ce_loss",
    "symmetric_kd_loss",
]
