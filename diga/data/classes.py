"""Class tables: Cityscapes' 19 training classes, SYNTHIA's 16 and 13, Mapillary Vistas v1.2's 66,
palettes and id maps."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CITYSCAPES_PALETTE",
    "MAPILLARY_V12_CLASSES",
    "MAPILLARY_V12_TO_CITYSCAPES",
    "SYNTHIA13_CLASSES",
    "SYNTHIA13_IN_16",
    "SYNTHIA16_CLASSES",
    "SYNTHIA16_IN_19",
    "SYNTHIA_ID_TO_TRAIN_ID",
    "SYNTHIA_PALETTE",
    "lookup_table",
    "map_labels",
]

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

#: Cityscapes ``labelIds`` (also GTA5's label values) -> the 19 training ids; others are ignored.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

#: The 16 classes SYNTHIA shares with Cityscapes (no terrain, truck, train), in this order.
SYNTHIA16_CLASSES: tuple[str, ...] = tuple(
    c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train")
)
#: Index of each SYNTHIA-16 class in the 19-class Cityscapes list.
SYNTHIA16_IN_19: tuple[int, ...] = tuple(CITYSCAPES_CLASSES.index(c) for c in SYNTHIA16_CLASSES)
SYNTHIA_PALETTE: tuple[tuple[int, int, int], ...] = tuple(CITYSCAPES_PALETTE[i] for i in SYNTHIA16_IN_19)

#: SYNTHIA-13, the usual second protocol: SYNTHIA-16 without wall, fence and pole.
SYNTHIA13_CLASSES: tuple[str, ...] = tuple(
    c for c in SYNTHIA16_CLASSES if c not in ("wall", "fence", "pole")
)
#: Index of each SYNTHIA-13 class in the 16-class list (for ``ConfusionMatrix.compute(classes=...)``).
SYNTHIA13_IN_16: tuple[int, ...] = tuple(SYNTHIA16_CLASSES.index(c) for c in SYNTHIA13_CLASSES)

#: SYNTHIA-RAND-CITYSCAPES label ids (first channel of GT/LABELS) -> the 16 training ids.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12,
    19: 13, 12: 14, 11: 15,
}


#: Mapillary Vistas v1.2's 66 classes (the ``readable`` names of its ``config.json``), in label-id
#: order: a v1.2 label PNG holds these indices (65, "Unlabeled", is its void).
MAPILLARY_V12_CLASSES: tuple[str, ...] = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane",
    "Crosswalk - Plain", "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road",
    "Service Lane", "Sidewalk", "Bridge", "Building", "Tunnel", "Person", "Bicyclist",
    "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk", "Lane Marking - General", "Mountain",
    "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench", "Bike Rack",
    "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox", "Manhole",
    "Phone Booth", "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole",
    "Traffic Light", "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat",
    "Bus", "Car", "Caravan", "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck",
    "Wheeled Slow", "Car Mount", "Ego Vehicle", "Unlabeled",
)

#: Mapillary Vistas v1.2 label ids -> the 19 Cityscapes training ids: the grouping the domain
#: generalisation literature evaluates with (RobustNet's loader; DiGA's scripts copy it): 25 ids kept,
#: the other 41 (bike lane, crosswalk, parking, guard rail, traffic sign back, caravan, ...) ignored.
MAPILLARY_V12_TO_CITYSCAPES: dict[int, int] = {
    13: 0, 24: 0, 41: 0,  # road <- Road, Lane Marking - General, Manhole
    2: 1, 15: 1,  # sidewalk <- Curb, Sidewalk
    17: 2,  # building
    6: 3,  # wall
    3: 4,  # fence
    45: 5, 47: 5,  # pole <- Pole, Utility Pole
    48: 6,  # traffic light
    50: 7,  # traffic sign <- Traffic Sign (Front)
    30: 8,  # vegetation
    29: 9,  # terrain
    27: 10,  # sky
    19: 11,  # person
    20: 12, 21: 12, 22: 12,  # rider <- Bicyclist, Motorcyclist, Other Rider
    55: 13,  # car
    61: 14,  # truck
    54: 15,  # bus
    58: 16,  # train <- On Rails
    57: 17,  # motorcycle
    52: 18,  # bicycle
}


def lookup_table(mapping: dict[int, int], *, size: int = 256, ignore_index: int = 255) -> Tensor:
    """A ``(size,)`` int64 table sending each key of ``mapping`` to its value, the rest to ignore.

    Example:
        >>> lookup_table({7: 0, 8: 1}, size=10).tolist()
        [255, 255, 255, 255, 255, 255, 255, 0, 1, 255]
    """
    table = torch.full((size,), ignore_index, dtype=torch.int64)
    for key, value in mapping.items():
        if not 0 <= key < size:
            raise ValueError(f"`mapping` key {key} must be in [0, {size})")
        table[key] = value
    return table


def map_labels(labels: Tensor, table: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Map raw label ids through a lookup table; ids outside the table become ``ignore_index``.

    Example:
        >>> table = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)
        >>> map_labels(torch.tensor([[7, 26, 0, 1000]]), table).tolist()
        [[0, 13, 255, 255]]
    """
    labels = labels.long()
    table = table.to(labels.device)
    inside = (labels >= 0) & (labels < table.numel())
    idx = torch.where(inside, labels, torch.zeros_like(labels))
    return torch.where(inside, table[idx], torch.full_like(labels, ignore_index))
