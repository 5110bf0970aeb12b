"""Class tables against the official Cityscapes label definitions (cityscapesScripts labels.py)."""

from __future__ import annotations

import torch

from diga.data import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    SYNTHIA13_CLASSES,
    SYNTHIA13_IN_16,
    SYNTHIA16_CLASSES,
    SYNTHIA16_IN_19,
    SYNTHIA_ID_TO_TRAIN_ID,
    lookup_table,
    map_labels,
)

# (name, id, trainId, color) of every Cityscapes label with a trainId other than 255.
OFFICIAL = [
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)),
    ("building", 11, 2, (70, 70, 70)), ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)), ("pole", 17, 5, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)), ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)),
    ("train", 31, 16, (0, 80, 100)), ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
]


def test_cityscapes_tables_match_official():
    for name, label_id, train_id, color in OFFICIAL:
        assert CITYSCAPES_CLASSES[train_id] == name
        assert CITYSCAPES_ID_TO_TRAIN_ID[label_id] == train_id
        assert CITYSCAPES_PALETTE[train_id] == color
    assert len(CITYSCAPES_ID_TO_TRAIN_ID) == 19
    table = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)
    for label_id in range(34):  # every other id (unlabeled, ego vehicle, guard rail, ...) ignored
        if label_id not in CITYSCAPES_ID_TO_TRAIN_ID:
            assert table[label_id] == 255


def test_synthia_tables():
    assert len(SYNTHIA16_CLASSES) == 16 and len(SYNTHIA13_CLASSES) == 13
    assert {"terrain", "truck", "train"}.isdisjoint(SYNTHIA16_CLASSES)
    assert {"wall", "fence", "pole"}.isdisjoint(SYNTHIA13_CLASSES)
    assert [CITYSCAPES_CLASSES[i] for i in SYNTHIA16_IN_19] == list(SYNTHIA16_CLASSES)
    assert [SYNTHIA16_CLASSES[i] for i in SYNTHIA13_IN_16] == list(SYNTHIA13_CLASSES)
    # SYNTHIA-RAND-CITYSCAPES ids: 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence, 6 vegetation,
    # 7 pole, 8 car, 9 traffic sign, 10 pedestrian, 11 bicycle, 12 motorcycle, 15 traffic light,
    # 17 rider, 19 bus, 21 wall.
    names = {1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
             7: "pole", 8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle",
             15: "traffic light", 17: "rider", 19: "bus", 21: "wall"}
    for sid, name in names.items():
        assert SYNTHIA16_CLASSES[SYNTHIA_ID_TO_TRAIN_ID[sid]] == name


def test_map_labels():
    table = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)
    raw = torch.tensor([[0, 7, 33, 34, 255, 300, -1]])
    assert map_labels(raw, table).tolist() == [[255, 0, 18, 255, 255, 255, 255]]
