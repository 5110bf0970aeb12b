"""Losses: symmetric cross-view distillation, segmentation cross-entropy and its OHEM form, masked consistency."""

from diga.losses.masked_consistency import MaskedConsistency, masked_consistency_loss
from diga.losses.ohem import OhemCELoss, ohem_ce_loss
from diga.losses.segmentation_ce import SegmentationCELoss, resize_logits, segmentation_ce_loss
from diga.losses.symmetric_kd import SymmetricKDLoss, symmetric_kd_loss

__all__ = [
    "MaskedConsistency",
    "OhemCELoss",
    "SegmentationCELoss",
    "SymmetricKDLoss",
    "masked_consistency_loss",
    "ohem_ce_loss",
    "resize_logits",
    "segmentation_ce_loss",
    "symmetric_kd_loss",
]
