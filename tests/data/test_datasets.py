"""Cityscapes, GTA5 and SYNTHIA on tiny replicas of their real layouts: mapping against the
official tables, quirks, list files, pseudo-labels, seeded augmentation, loaders, errors."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

import diga.data.io as io_module
from diga.data.cityscapes import Cityscapes
from diga.data.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    SYNTHIA16_CLASSES,
    SYNTHIA_ID_TO_TRAIN_ID,
)
from diga.data.gta5 import GTA5
from diga.data.io import save_label
from diga.data.synthia import Synthia
from diga.data.transforms import PairedCompose, RandomHorizontalFlip, RandomScaleCrop
from tests.data.replicas import (
    RED_STEP,
    make_cityscapes,
    make_gta5,
    make_pseudo_labels,
    make_synthia,
    one_thread,
    write_list,
    write_png16,
)
from tests.data.test_transforms import assert_aligned


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def reference_map(raw: torch.Tensor, table: dict[int, int]) -> torch.Tensor:
    """The paper's loop: start from 255, write each mapped id's pixels."""
    out = torch.full_like(raw, 255)
    for k, v in table.items():
        out[raw == k] = v
    return out


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    train = make_cityscapes(root, split="train")
    val = make_cityscapes(root, split="val", cities=("lindau",), per_city=1, seed=1)
    return train, val


@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    return make_gta5(tmp_path_factory.mktemp("gta5"))


@pytest.fixture(scope="module")
def synthia(tmp_path_factory):
    return make_synthia(tmp_path_factory.mktemp("synthia"))


def augment(crop=(16, 24)):
    return PairedCompose([RandomScaleCrop(crop), RandomHorizontalFlip()])


class TestCityscapes:
    def test_items_and_mapping(self, city):
        train, _ = city
        data = Cityscapes(train.root, "train")
        assert len(data) == 4 and data.names == sorted(train.names) == train.names
        assert data.num_classes == 19 and data.classes == CITYSCAPES_CLASSES and data.has_labels
        for i, name in enumerate(train.names):
            item = data[i]
            assert set(item) == {"image", "label", "name"} and item["name"] == name
            assert item["image"].shape == (3, 32, 64) and item["image"].dtype == torch.float32
            assert 0 <= item["image"].min() and item["image"].max() <= 1
            assert item["label"].dtype == torch.int64
            expected = reference_map(train.raw_labels[name], CITYSCAPES_ID_TO_TRAIN_ID)
            assert torch.equal(item["label"], expected)
        assert {0, 1, 4} & set(train.raw_labels[train.names[0]].unique().tolist())  # ignored ids occur

    def test_only_label_ids_files_are_used(self, city):
        # gtFine also holds *_color.png and *_instanceIds.png (16-bit): never taken as labels.
        train, _ = city
        data = Cityscapes(train.root, "train")
        assert all(s.label.name.endswith("_gtFine_labelIds.png") for s in data.samples)

    def test_splits(self, city):
        _, val = city
        data = Cityscapes(val.root, "val")
        assert data.names == ["lindau/lindau_000000_000019_leftImg8bit"]

    def test_unlabelled(self, city, tmp_path):
        train, _ = city
        for data in (Cityscapes(train.root, labels=False), Cityscapes(train.root).unlabelled()):
            assert set(data[0]) == {"image", "name"} and not data.has_labels
        # the target during adaptation needs no gtFine folder at all
        shutil.copytree(train.root / "leftImg8bit", tmp_path / "leftImg8bit")
        assert len(Cityscapes(tmp_path, labels=False)) == 4
        expected = r"gtFine/train' holding \{city\}/\*_gtFine_labelIds.png.*labels=False"
        with pytest.raises(FileNotFoundError, match=expected):
            Cityscapes(tmp_path)

    def test_list_file_orders_and_restricts(self, city, tmp_path):
        train, _ = city
        lines = ["bochum/bochum_000001_000019_leftImg8bit.png", "aachen/aachen_000000_000019_leftImg8bit.png"]
        data = Cityscapes(train.root, list_file=write_list(tmp_path / "train.txt", lines))
        assert data.names == [line[: -len(".png")] for line in lines]
        item = data[0]
        expected = reference_map(train.raw_labels[lines[0][:-4]], CITYSCAPES_ID_TO_TRAIN_ID)
        assert torch.equal(item["label"], expected)

    def test_list_file_missing_entry(self, city, tmp_path):
        train, _ = city
        lines = ["aachen/aachen_000000_000019_leftImg8bit.png", "aachen/aachen_000099_000019_leftImg8bit.png"]
        with pytest.raises(FileNotFoundError, match=r"train.txt.*aachen_000099"):
            Cityscapes(train.root, list_file=write_list(tmp_path / "train.txt", lines))
        with pytest.raises(FileNotFoundError, match="list file"):
            Cityscapes(train.root, list_file=tmp_path / "absent.txt")
        with pytest.raises(ValueError, match="empty"):
            Cityscapes(train.root, list_file=write_list(tmp_path / "empty.txt", []))

    @pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
    def test_pseudo_labels(self, city, tmp_path, flat):
        train, _ = city
        pseudo = make_pseudo_labels(tmp_path / "pseudo", train.names, flat=flat)
        data = Cityscapes(train.root, pseudo_label_dir=tmp_path / "pseudo", labels=False)
        for i, name in enumerate(train.names):
            item = data[i]
            assert set(item) == {"image", "pseudo_label", "name"}
            assert torch.equal(item["pseudo_label"], pseudo[name])

    def test_pseudo_labels_follow_the_ground_truth(self, city, tmp_path):
        train, _ = city
        names = train.names
        for name in names:  # pseudo = ground truth: any geometric op must keep them equal
            raw = train.raw_labels[name]
            save_label(tmp_path / "pseudo" / f"{name}.png", reference_map(raw, CITYSCAPES_ID_TO_TRAIN_ID))
        data = Cityscapes(train.root, pseudo_label_dir=tmp_path / "pseudo", transform=augment())
        for epoch in range(3):
            data.set_epoch(epoch)
            for i in range(len(data)):
                item = data[i]
                assert torch.equal(item["label"], item["pseudo_label"])

    def test_pseudo_label_values_outside_classes_are_ignored(self, city, tmp_path):
        train, _ = city
        for name in train.names:
            save_label(tmp_path / "p" / f"{name}.png", torch.tensor([[0, 18, 19, 200] * 16] * 32))
        item = Cityscapes(train.root, pseudo_label_dir=tmp_path / "p")[0]
        assert item["pseudo_label"][0, :4].tolist() == [0, 18, 255, 255]

    def test_pseudo_label_of_other_size_is_resized(self, city, tmp_path):
        train, _ = city
        for name in train.names:
            save_label(tmp_path / "p" / f"{name}.png", torch.ones(16, 32, dtype=torch.long))
        item = Cityscapes(train.root, pseudo_label_dir=tmp_path / "p")[0]
        assert item["pseudo_label"].shape == (32, 64) and (item["pseudo_label"] == 1).all()

    def test_missing_pseudo_labels_fail_at_construction(self, city, tmp_path):
        train, _ = city
        make_pseudo_labels(tmp_path / "pseudo", train.names[:-1])
        with pytest.raises(FileNotFoundError, match=r"1 pseudo-label file.*bochum_000001"):
            Cityscapes(train.root, pseudo_label_dir=tmp_path / "pseudo")
        with pytest.raises(FileNotFoundError, match="pseudo_label_dir"):
            Cityscapes(train.root, pseudo_label_dir=tmp_path / "nowhere")

    def test_augmented_items_stay_aligned(self, city):
        train, _ = city
        data = Cityscapes(train.root, transform=augment(), seed=3)
        table = torch.full((256,), 255, dtype=torch.long)
        for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items():
            table[k] = v
        for i in range(len(data)):
            item = data[i]
            assert item["image"].shape == (3, 16, 24)
            # the image's red channel encodes the raw id; mapped, it must equal the label
            raw = (item["image"][0] * 255 / RED_STEP).round().long()
            encoded = torch.stack([table[raw] * RED_STEP / 255, item["image"][1], item["image"][2]])
            assert_aligned(encoded, item["label"])

    def test_seeded_determinism(self, city):
        train, _ = city
        a = Cityscapes(train.root, transform=augment(), seed=7)
        b = Cityscapes(train.root, transform=augment(), seed=7)
        c = Cityscapes(train.root, transform=augment(), seed=8)
        assert torch.equal(a[1]["image"], b[1]["image"]) and torch.equal(a[1]["label"], b[1]["label"])
        assert torch.equal(a[1]["image"], a[1]["image"])  # same item twice: same augmentation
        assert not torch.equal(a[1]["image"], c[1]["image"])
        first = a[1]["image"]
        a.set_epoch(1)
        assert not torch.equal(first, a[1]["image"])
        a.set_epoch(0)
        assert torch.equal(first, a[1]["image"])
        with pytest.raises(ValueError, match="`epoch`"):
            a.set_epoch(-1)

    def test_pickles_for_loader_workers(self, city, tmp_path):
        train, _ = city
        make_pseudo_labels(tmp_path / "pseudo", train.names)
        data = Cityscapes(train.root, transform=augment(), pseudo_label_dir=tmp_path / "pseudo", seed=4)
        clone = pickle.loads(pickle.dumps(data))
        a, b = data[3], clone[3]
        assert all(torch.equal(a[k], b[k]) for k in ("image", "label", "pseudo_label"))

    def test_dataloader_batches(self, city):
        train, _ = city
        data = Cityscapes(train.root, transform=augment((16, 16)))
        loader = DataLoader(data, batch_size=2, num_workers=0, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        batches = list(loader)
        assert len(batches) == 2
        batch = batches[0]
        assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].shape == (2, 16, 16)
        assert batch["label"].dtype == torch.int64 and len(batch["name"]) == 2
        assert sorted(n for b in batches for n in b["name"]) == train.names

    def test_missing_root_and_split(self, city, tmp_path):
        train, _ = city
        with pytest.raises(FileNotFoundError, match="root"):
            Cityscapes(tmp_path / "missing")
        expected = r"leftImg8bit' holding \{split\}/\{city\}/\*_leftImg8bit.png"
        with pytest.raises(FileNotFoundError, match=expected):
            Cityscapes(tmp_path)
        with pytest.raises(FileNotFoundError, match=r"leftImg8bit/test.*splits found: \['train', 'val'\]"):
            Cityscapes(train.root, "test")
        with pytest.raises(ValueError, match="`split`"):
            Cityscapes(train.root, "")

    def test_empty_split(self, tmp_path):
        (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
        (tmp_path / "leftImg8bit" / "train" / "aachen" / "notes.txt").write_text("x")
        with pytest.raises(ValueError, match=r"no images matching \{city\}/\*_leftImg8bit.png"):
            Cityscapes(tmp_path)

    def test_image_without_label(self, tmp_path):
        replica = make_cityscapes(tmp_path, per_city=1)
        (tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png").unlink()
        expected = r"leftImg8bit/train.*gtFine/train.*'bochum/bochum_000000_000019'"
        with pytest.raises(ValueError, match=expected):
            Cityscapes(replica.root)

    def test_corrupt_image_names_the_file(self, tmp_path):
        replica = make_cityscapes(tmp_path, cities=("aachen",), per_city=1)
        path = tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
        path.write_bytes(b"garbage")
        with pytest.raises(ValueError, match="aachen_000000_000019_leftImg8bit.png"):
            Cityscapes(replica.root)[0]

    def test_indices(self, city):
        train, _ = city
        data = Cityscapes(train.root)
        assert data[-1]["name"] == train.names[-1] and data[torch.tensor(1)]["name"] == train.names[1]
        with pytest.raises(IndexError):
            data[-5]
        assert [item["name"] for item in data] == train.names  # iteration stops at len

    def test_virtual_index_is_the_next_epoch(self, city):
        # diga.engine's StepSampler draws epoch * len + i: item i, augmented as in that epoch.
        train, _ = city
        data = Cityscapes(train.root, transform=augment(), seed=2)
        assert data.supports_virtual_index
        virtual = data[2 * 4 + 1]
        data.set_epoch(2)
        plain = data[1]
        assert virtual["name"] == plain["name"] == train.names[1]
        assert torch.equal(virtual["image"], plain["image"]) and torch.equal(virtual["label"], plain["label"])


class TestGTA5:
    def test_mapping_and_mismatch_resized(self, gta):
        data = GTA5(gta.root)
        assert len(data) == 4 and data.names == ["00001", "00002", "00003", "00004"]
        assert data.num_classes == 19
        for i, name in enumerate(data.names):
            item = data[i]
            assert item["image"].shape == (3, 32, 64) and item["label"].shape == (32, 64)
            raw = gta.raw_labels[name]
            if raw.shape != (32, 64):  # the quirk: a taller label, resized by nearest neighbour
                assert name == "00002"
                raw = raw[((2 * torch.arange(32) + 1) * 34) // 64]  # pixel-centre nearest rows
            assert torch.equal(item["label"], reference_map(raw, CITYSCAPES_ID_TO_TRAIN_ID))
        assert (data[0]["label"] == 255).any()  # id 34 and the others ignored

    def test_mismatch_skip_and_error(self, gta):
        data = GTA5(gta.root, size_mismatch="skip")
        assert data.names == ["00001", "00003", "00004"] and data.skipped == ["00002"]
        with pytest.raises(ValueError, match=r"labels/00002.png.*64x34.*images/00002.png.*64x32"):
            GTA5(gta.root, size_mismatch="error")
        with pytest.raises(ValueError, match="`size_mismatch`"):
            GTA5(gta.root, size_mismatch="crop")

    def test_skip_never_fails_mid_epoch(self, gta):
        data = GTA5(gta.root, size_mismatch="skip", transform=augment())
        loader = DataLoader(data, batch_size=3, num_workers=0)
        assert [b["image"].shape for b in loader] == [(3, 3, 16, 24)]

    def test_list_file(self, gta, tmp_path):
        data = GTA5(gta.root, list_file=write_list(tmp_path / "train.txt", ["00004.png", "00001.png"]))
        assert data.names == ["00004", "00001"]

    def test_errors(self, gta, tmp_path):
        with pytest.raises(FileNotFoundError, match="root"):
            GTA5(tmp_path / "none")
        with pytest.raises(FileNotFoundError, match=r"images' holding \*.png"):
            GTA5(tmp_path)
        (tmp_path / "images").mkdir()
        with pytest.raises(FileNotFoundError, match=r"labels' holding \*.png"):
            GTA5(tmp_path)
        (tmp_path / "labels").mkdir()
        with pytest.raises(ValueError, match=r"no images matching \*.png"):
            GTA5(tmp_path)
        shutil.copy(gta.root / "images" / "00001.png", tmp_path / "images" / "00001.png")
        shutil.copy(gta.root / "labels" / "00001.png", tmp_path / "labels" / "00001.png")
        shutil.copy(gta.root / "labels" / "00003.png", tmp_path / "labels" / "00003.png")
        with pytest.raises(ValueError, match=r"label\(s\) in .*labels.* have no image in .*images.*'00003'"):
            GTA5(tmp_path)


class TestSynthia:
    def test_16bit_first_channel_mapping(self, synthia):
        data = Synthia(synthia.root)
        assert len(data) == 3 and data.num_classes == 16 and data.classes == SYNTHIA16_CLASSES
        for i, name in enumerate(synthia.names):
            label = data[i]["label"]
            assert torch.equal(label, reference_map(synthia.raw_labels[name], SYNTHIA_ID_TO_TRAIN_ID))
        assert set(data[0]["label"].unique().tolist()) <= set(range(16)) | {255}

    def test_high_ids_are_not_cut_to_8_bits(self, tmp_path, monkeypatch):
        # 259 = 256 + 3: read as 8 bits it would become road (3) or sky (259 >> 8 = 1).
        make_synthia(tmp_path, count=1)
        label = torch.tensor([[259, 3, 1, 21]] * 4).repeat(8, 16)
        stacked = torch.stack([label, torch.full_like(label, 4000), torch.zeros_like(label)], -1)
        write_png16(tmp_path / "GT" / "LABELS" / "0000000.png", stacked.numpy())
        for use_torchvision in (True, False):
            monkeypatch.setattr(io_module, "_USE_TORCHVISION", use_torchvision)
            item = Synthia(tmp_path)[0]
            assert item["label"][0, :4].tolist() == [255, 0, 9, 3]

    def test_augmented_and_batched(self, synthia):
        data = Synthia(synthia.root, transform=augment((16, 16)), seed=1)
        batch = next(iter(DataLoader(data, batch_size=3)))
        assert batch["image"].shape == (3, 3, 16, 16) and batch["label"].shape == (3, 16, 16)

    def test_list_file_and_errors(self, synthia, tmp_path):
        data = Synthia(synthia.root, list_file=write_list(tmp_path / "l.txt", ["0000002.png"]))
        assert data.names == ["0000002"]
        with pytest.raises(FileNotFoundError, match="root"):
            Synthia(tmp_path / "none")
        (tmp_path / "RGB").mkdir()
        with pytest.raises(FileNotFoundError, match=r"GT/LABELS' holding \*.png"):
            Synthia(tmp_path)


def test_cityscapes_16_class_mapping(tmp_path):
    from PIL import Image

    from diga.data import SYNTHIA16_CLASSES
    from diga.data.io import save_label

    root = tmp_path / "cs"
    (root / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    Image.new("RGB", (4, 1)).save(root / "leftImg8bit" / "val" / "x" / "x_0_0_leftImg8bit.png")
    # road (7), terrain (22), truck (27), bicycle (33)
    save_label(root / "gtFine" / "val" / "x" / "x_0_0_gtFine_labelIds.png", torch.tensor([[7, 22, 27, 33]]))
    item = Cityscapes(root, "val", num_classes=16)[0]
    assert item["label"].tolist() == [[0, 255, 255, SYNTHIA16_CLASSES.index("bicycle")]]
    with pytest.raises(ValueError, match="num_classes"):
        Cityscapes(root, "val", num_classes=13)
