"""Data: class tables (and, in later modules, datasets and the built-in domain shift)."""

from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    SYNTHIA13_CLASSES,
    SYNTHIA13_IN_16,
    SYNTHIA16_CLASSES,
    SYNTHIA16_IN_19,
    SYNTHIA_ID_TO_TRAIN_ID,
    SYNTHIA_PALETTE,
    lookup_table,
    map_labels,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CITYSCAPES_PALETTE",
    "SYNTHIA13_CLASSES",
    "SYNTHIA13_IN_16",
    "SYNTHIA16_CLASSES",
    "SYNTHIA16_IN_19",
    "SYNTHIA_ID_TO_TRAIN_ID",
    "SYNTHIA_PALETTE",
    "lookup_table",
    "map_labels",
]
