"""SegmentationFolder: nested folders, pairing by stem, label maps (dict / JSON / YAML), clear errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from diga.data.cityscapes import Cityscapes
from diga.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from diga.data.folder import SegmentationFolder
from diga.data.io import save_label
from diga.data.transforms import PairedCompose, RandomHorizontalFlip, RandomScaleCrop
from tests.data.replicas import make_cityscapes, make_pseudo_labels, one_thread

#: Every Cityscapes label id (0..33) -> training id, the 15 unused ones to ignore.
FULL_CITYSCAPES_MAP = {i: CITYSCAPES_ID_TO_TRAIN_ID.get(i, 255) for i in range(34)}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def write_pair(root, stem, label, *, suffix=".png", size=(4, 6)):
    """An image ``images/{stem}{suffix}`` and its label ``labels/{stem}.png``."""
    image_path = root / "images" / f"{stem}{suffix}"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size[::-1], (40, 80, 120)).save(image_path)
    if label is not None:
        save_label(root / "labels" / f"{stem}.png", torch.as_tensor(label).expand(*size))


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


class TestPairing:
    def test_nested_unlabelled_folder(self, tmp_path):
        write_pair(tmp_path, "b/2", None, suffix=".jpg")
        write_pair(tmp_path, "a/1", None)
        write_pair(tmp_path, "a/3", None, suffix=".JPEG")  # suffixes match case-insensitively
        (tmp_path / "images" / "a" / "notes.txt").write_text("not an image")
        write_pair(tmp_path, ".ipynb_checkpoints/1", None)  # hidden: not data
        write_pair(tmp_path, "a/.1", None)
        data = SegmentationFolder(tmp_path / "images")
        assert data.names == ["a/1", "a/3", "b/2"] and not data.has_labels and data.num_classes is None
        item = data[2]
        assert set(item) == {"image", "name"} and item["image"].shape == (3, 4, 6)

    def test_labels_matched_by_stem(self, tmp_path):
        write_pair(tmp_path, "x/1", 3, suffix=".jpg")
        write_pair(tmp_path, "x/2", 5)
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels")
        assert [int(data[i]["label"][0, 0]) for i in range(2)] == [3, 5]

    def test_same_as_cityscapes_with_stem_suffixes_and_full_map(self, city, tmp_path):
        # The official layout through the generic folder: same items, same labels as Cityscapes.
        (tmp_path / "map.json").write_text(json.dumps({str(k): v for k, v in FULL_CITYSCAPES_MAP.items()}))
        folder = SegmentationFolder(
            city.root / "leftImg8bit" / "train",
            city.root / "gtFine" / "train",
            image_stem_suffix="_leftImg8bit",
            label_stem_suffix="_gtFine_labelIds",  # _color / _instanceIds files are not listed
            label_map=tmp_path / "map.json",
            classes=CITYSCAPES_CLASSES,
            palette=CITYSCAPES_PALETTE,
        )
        reference = Cityscapes(city.root, "train")
        assert folder.names == reference.names
        for i in range(len(folder)):
            a, b = folder[i], reference[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])

    def test_image_without_label(self, tmp_path):
        write_pair(tmp_path, "a", 1)
        for i in range(7):
            write_pair(tmp_path, f"lonely{i}", None)
        with pytest.raises(ValueError) as info:
            SegmentationFolder(tmp_path / "images", tmp_path / "labels")
        message = str(info.value)
        assert str(tmp_path / "images") in message and str(tmp_path / "labels") in message
        assert "7 image(s)" in message and "'lonely0'" in message and "(7 in all)" in message

    def test_label_without_image(self, tmp_path):
        write_pair(tmp_path, "a", 1)
        save_label(tmp_path / "labels" / "orphan.png", torch.zeros(4, 6, dtype=torch.long))
        with pytest.raises(ValueError, match=r"label\(s\) in .*labels.* have no image in .*images.*'orphan'"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels")

    def test_two_images_with_one_stem(self, tmp_path):
        write_pair(tmp_path, "a", None)
        write_pair(tmp_path, "a", None, suffix=".jpg")
        with pytest.raises(ValueError, match=r"share the stem 'a'.*a.jpg.*a.png"):
            SegmentationFolder(tmp_path / "images")

    def test_empty_and_missing_folders(self, tmp_path):
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "readme.txt").write_text("x")
        with pytest.raises(ValueError, match=r"no images in .*images.*\('.png', '.jpg', '.jpeg'\)"):
            SegmentationFolder(tmp_path / "images")
        with pytest.raises(FileNotFoundError, match="nothing"):
            SegmentationFolder(tmp_path / "nothing")
        write_pair(tmp_path, "a", None)
        (tmp_path / "labels").mkdir()
        with pytest.raises(ValueError, match=r"no labels in .*labels.*\*.png"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels")
        with pytest.raises(FileNotFoundError, match="the label folder"):
            SegmentationFolder(tmp_path / "images", tmp_path / "no_labels")
        with pytest.raises(ValueError, match=r"no images in .*with suffixes \('.bmp',\)"):
            SegmentationFolder(tmp_path / "images", image_suffixes=".bmp")

    def test_bad_suffix_arguments(self, tmp_path):
        write_pair(tmp_path, "a", None)
        with pytest.raises(ValueError, match="`image_suffixes`"):
            SegmentationFolder(tmp_path / "images", image_suffixes=("png",))
        with pytest.raises(ValueError, match="`label_suffix`"):
            SegmentationFolder(tmp_path / "images", label_suffix="png")


class TestLabelMap:
    def test_dict_map_and_ignore_passes(self, tmp_path):
        write_pair(tmp_path, "a", torch.tensor([7, 26, 255, 0, 0, 0]))
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map={7: 0, 26: 13, 0: 255})
        assert data[0]["label"][0].tolist() == [0, 13, 255, 255, 255, 255]

    def test_value_outside_map_names_file_and_value(self, tmp_path):
        write_pair(tmp_path, "a", torch.tensor([7, 26, 7, 7, 7, 7]))
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map={7: 0})
        with pytest.raises(ValueError, match=r"labels/a.png' holds value 26.*neither a key of `label_map`"):
            data[0]

    def test_value_beyond_table_and_ignore_index(self, tmp_path):
        write_pair(tmp_path, "a", torch.tensor([1, 2, 200, 2, 2, 2]))
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map={1: 0, 2: 1},
                                  ignore_index=200)
        assert data[0]["label"][0, :3].tolist() == [0, 1, 200]
        write_pair(tmp_path, "a", torch.tensor([1, 2, 255, 2, 2, 2]))
        with pytest.raises(ValueError, match="holds value 255"):
            data[0]

    def test_json_and_yaml_files(self, tmp_path):
        write_pair(tmp_path, "a", torch.tensor([7, 8, 7, 7, 7, 7]))
        (tmp_path / "map.json").write_text('{"7": 0, "8": 1}')
        (tmp_path / "map.yaml").write_text("7: 0\n8: 1\n")
        for name in ("map.json", "map.yaml"):
            data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map=tmp_path / name)
            assert data.label_map == {7: 0, 8: 1} and data[0]["label"][0, :2].tolist() == [0, 1]

    def test_yaml_without_pyyaml(self, tmp_path, monkeypatch):
        write_pair(tmp_path, "a", 7)
        (tmp_path / "map.yml").write_text("7: 0\n")
        monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
        with pytest.raises(ValueError, match="PyYAML"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map=tmp_path / "map.yml")

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            ("[1, 2]", "mapping"),
            ('{"a": 1}', "integer"),
            ('{"1": 1.5}', "integer"),
            ('{"-1": 1}', "integer"),
            ("{}", "empty"),
            ("{not json", "JSON"),
        ],
    )
    def test_malformed_map_files(self, tmp_path, content, match):
        write_pair(tmp_path, "a", 1)
        (tmp_path / "map.json").write_text(content)
        with pytest.raises(ValueError, match=match):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map=tmp_path / "map.json")

    def test_map_errors(self, tmp_path):
        write_pair(tmp_path, "a", 1)
        with pytest.raises(FileNotFoundError, match="absent.json"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map=tmp_path / "absent.json")
        with pytest.raises(ValueError, match=r"`label_map` must send.*\[0, 2\).*5: 7"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map={5: 7}, classes=("a", "b"))
        with pytest.raises(ValueError, match="`label_map`"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_map=[(1, 0)])

    def test_classes_check_labels_without_map(self, tmp_path):
        write_pair(tmp_path, "a", torch.tensor([0, 1, 255, 26, 0, 0]))
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", classes=("x", "y"))
        with pytest.raises(ValueError, match=r"a.png' holds value 26, outside \[0, 2\)"):
            data[0]

    def test_classes_and_palette(self, tmp_path):
        write_pair(tmp_path, "a", 1)
        with pytest.raises(ValueError, match="`palette`"):
            SegmentationFolder(tmp_path / "images", classes=("x", "y"), palette=[(0, 0, 0)])
        with pytest.raises(ValueError, match="`classes`"):
            SegmentationFolder(tmp_path / "images", classes=())
        data = SegmentationFolder(tmp_path / "images", classes=["x", "y"], palette=[(1, 2, 3), (4, 5, 6)])
        assert data.classes == ("x", "y") and data.palette[1] == (4, 5, 6) and data.num_classes == 2


class TestPipeline:
    def test_multichannel_labels(self, tmp_path):
        write_pair(tmp_path, "a", None)
        rgb = np.zeros((4, 6, 3), dtype=np.uint8)
        rgb[..., 1] = 2
        (tmp_path / "labels").mkdir()
        Image.fromarray(rgb).save(tmp_path / "labels" / "a.png")
        data = SegmentationFolder(tmp_path / "images", tmp_path / "labels", label_channel=1)
        assert (data[0]["label"] == 2).all()
        with pytest.raises(ValueError, match="channel"):
            SegmentationFolder(tmp_path / "images", tmp_path / "labels")[0]

    def test_pseudo_labels_transform_and_loader(self, tmp_path):
        for i in range(4):
            write_pair(tmp_path, f"s/{i}", 1, size=(20, 30))
        pseudo = make_pseudo_labels(tmp_path / "pseudo", [f"s/{i}" for i in range(4)], size=(20, 30))
        transform = PairedCompose([RandomScaleCrop((12, 12)), RandomHorizontalFlip()])
        data = SegmentationFolder(tmp_path / "images", pseudo_label_dir=tmp_path / "pseudo",
                                  classes=CITYSCAPES_CLASSES, transform=transform, seed=5)
        assert torch.equal(SegmentationFolder(tmp_path / "images", pseudo_label_dir=tmp_path / "pseudo")[3]
                           ["pseudo_label"], pseudo["s/3"])
        batch = next(iter(DataLoader(data, batch_size=4, num_workers=0)))
        assert batch["image"].shape == (4, 3, 12, 12) and batch["pseudo_label"].shape == (4, 12, 12)
        again = next(iter(DataLoader(data, batch_size=4, num_workers=0)))
        assert torch.equal(batch["pseudo_label"], again["pseudo_label"])  # seeded

    def test_bad_common_arguments(self, tmp_path):
        write_pair(tmp_path, "a", None)
        with pytest.raises(ValueError, match="`seed`"):
            SegmentationFolder(tmp_path / "images", seed=1.5)
        with pytest.raises(ValueError, match="`transform`"):
            SegmentationFolder(tmp_path / "images", transform="flip")
        with pytest.raises(ValueError, match="`label_channel`"):
            SegmentationFolder(tmp_path / "images", label_channel=-1)

    def test_repr(self, tmp_path):
        write_pair(tmp_path, "a", None)
        assert repr(SegmentationFolder(tmp_path / "images")) == "SegmentationFolder(1 items, labels=False)"
