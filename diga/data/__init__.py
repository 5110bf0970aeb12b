"""Data: datasets (Cityscapes, GTA5, SYNTHIA, BDD100k, Mapillary, any folder, the built-in shift), transforms,
class tables."""

from diga.data._base import SegmentationDataset
from diga.data.batch import as_batch, concat_batches, to_device
from diga.data.bdd100k import BDD100k
from diga.data.cache import CachedDataset
from diga.data.cityscapes import Cityscapes
from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V12_TO_CITYSCAPES,
    SYNTHIA13_CLASSES,
    SYNTHIA13_IN_16,
    SYNTHIA16_CLASSES,
    SYNTHIA16_IN_19,
    SYNTHIA_ID_TO_TRAIN_ID,
    SYNTHIA_PALETTE,
    lookup_table,
    map_labels,
)
from diga.data.folder import SegmentationFolder
from diga.data.gta5 import GTA5
from diga.data.io import IMAGE_SUFFIXES, load_image, load_label, save_label
from diga.data.mapillary import Mapillary
from diga.data.pseudo import PseudoLabelled, item_name
from diga.data.synthetic import CONTROL_SHIFT_KINDS, SHIFT_KINDS, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticShift
from diga.data.synthia import Synthia
from diga.data.transforms import (
    PairedCompose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    item_generator,
    resize_label,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CITYSCAPES_PALETTE",
    "CONTROL_SHIFT_KINDS",
    "GTA5",
    "IMAGE_SUFFIXES",
    "MAPILLARY_V12_CLASSES",
    "MAPILLARY_V12_TO_CITYSCAPES",
    "SHIFT_KINDS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SYNTHIA13_CLASSES",
    "SYNTHIA13_IN_16",
    "SYNTHIA16_CLASSES",
    "SYNTHIA16_IN_19",
    "SYNTHIA_ID_TO_TRAIN_ID",
    "SYNTHIA_PALETTE",
    "BDD100k",
    "CachedDataset",
    "Cityscapes",
    "Mapillary",
    "PairedCompose",
    "PseudoLabelled",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "SegmentationDataset",
    "SegmentationFolder",
    "SyntheticShift",
    "Synthia",
    "as_batch",
    "concat_batches",
    "item_generator",
    "item_name",
    "load_image",
    "load_label",
    "lookup_table",
    "map_labels",
    "resize_label",
    "save_label",
    "to_device",
]
