"""BDD100k and Mapillary Vistas on tiny replicas of their real layouts: items, the Mapillary v1.2 ->
Cityscapes grouping class by class (spelled out by name here), layouts, ordering, list files, the
scripts' evaluation resize, pseudo-labels, wrong roots and bad arguments."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from diga.data import (
    CITYSCAPES_CLASSES,
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V12_TO_CITYSCAPES,
    BDD100k,
    Mapillary,
    RandomHorizontalFlip,
    resize_label,
    save_label,
)
from diga.data._eval_sets import EvalResize
from tests.data.replicas import (
    jpeg_ids,
    make_bdd100k,
    make_mapillary,
    make_pseudo_labels,
    one_thread,
    write_list,
)

#: Each Mapillary Vistas v1.2 class, by its config.json name, and the Cityscapes class it is
#: evaluated as in RobustNet's ``datasets/mapillary.py`` (copied by DiGA's MapillaryLoader.py);
#: None: ignored. Written from the loader's comments, independently of diga's id table.
V12_TO_CITYSCAPES_BY_NAME: dict[str, str | None] = {
    "Bird": None, "Ground Animal": None,
    "Curb": "sidewalk", "Fence": "fence", "Guard Rail": None, "Barrier": None, "Wall": "wall",
    "Bike Lane": None, "Crosswalk - Plain": None, "Curb Cut": None, "Parking": None,
    "Pedestrian Area": None, "Rail Track": None, "Road": "road", "Service Lane": None,
    "Sidewalk": "sidewalk", "Bridge": None, "Building": "building", "Tunnel": None,
    "Person": "person", "Bicyclist": "rider", "Motorcyclist": "rider", "Other Rider": "rider",
    "Lane Marking - Crosswalk": None, "Lane Marking - General": "road",
    "Mountain": None, "Sand": None, "Sky": "sky", "Snow": None, "Terrain": "terrain",
    "Vegetation": "vegetation", "Water": None,
    "Banner": None, "Bench": None, "Bike Rack": None, "Billboard": None, "Catch Basin": None,
    "CCTV Camera": None, "Fire Hydrant": None, "Junction Box": None, "Mailbox": None,
    "Manhole": "road", "Phone Booth": None, "Pothole": None, "Street Light": None,
    "Pole": "pole", "Traffic Sign Frame": None, "Utility Pole": "pole",
    "Traffic Light": "traffic light", "Traffic Sign (Back)": None,
    "Traffic Sign (Front)": "traffic sign", "Trash Can": None,
    "Bicycle": "bicycle", "Boat": None, "Bus": "bus", "Car": "car", "Caravan": None,
    "Motorcycle": "motorcycle", "On Rails": "train", "Other Vehicle": None, "Trailer": None,
    "Truck": "truck", "Wheeled Slow": None, "Car Mount": None, "Ego Vehicle": None, "Unlabeled": None,
}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def script_bdd_map(raw: torch.Tensor) -> torch.Tensor:
    """BDDLoader.py: start from 255, keep each value 0..18."""
    out = torch.full_like(raw, 255)
    for v in range(19):
        out[raw == v] = v
    return out


def script_mapillary_map(raw: torch.Tensor) -> torch.Tensor:
    """MapillaryLoader.py's loop, over the grouping spelled out by name above."""
    out = torch.full_like(raw, 255)
    for name, city in V12_TO_CITYSCAPES_BY_NAME.items():
        if city is not None:
            out[raw == MAPILLARY_V12_CLASSES.index(name)] = CITYSCAPES_CLASSES.index(city)
    return out


@pytest.fixture(scope="module")
def bdd(tmp_path_factory):
    return {layout: make_bdd100k(tmp_path_factory.mktemp(f"bdd_{layout}"), layout=layout)
            for layout in ("seg", "10k", "scripts")}


@pytest.fixture(scope="module")
def vistas(tmp_path_factory):
    return make_mapillary(tmp_path_factory.mktemp("mapillary"))


# --------------------------------------------------------------------------- the table


class TestMapillaryTable:
    def test_66_classes(self):
        assert len(MAPILLARY_V12_CLASSES) == 66 == len(set(MAPILLARY_V12_CLASSES))
        assert set(MAPILLARY_V12_CLASSES) == set(V12_TO_CITYSCAPES_BY_NAME)
        # Ids the scripts' comments name (MapillaryLoader.py), as a check of the order.
        named = {13: "Road", 24: "Lane Marking - General", 41: "Manhole", 2: "Curb", 15: "Sidewalk",
                 45: "Pole", 47: "Utility Pole", 20: "Bicyclist", 22: "Other Rider", 58: "On Rails",
                 50: "Traffic Sign (Front)", 65: "Unlabeled"}
        assert all(MAPILLARY_V12_CLASSES[i] == name for i, name in named.items())

    @pytest.mark.parametrize("name", list(V12_TO_CITYSCAPES_BY_NAME))
    def test_class_by_class(self, name):
        city = V12_TO_CITYSCAPES_BY_NAME[name]
        raw_id = MAPILLARY_V12_CLASSES.index(name)
        expected = 255 if city is None else CITYSCAPES_CLASSES.index(city)
        assert MAPILLARY_V12_TO_CITYSCAPES.get(raw_id, 255) == expected

    def test_every_cityscapes_class_is_reached(self):
        assert sorted(set(MAPILLARY_V12_TO_CITYSCAPES.values())) == list(range(19))
        assert len(MAPILLARY_V12_TO_CITYSCAPES) == 25 and max(MAPILLARY_V12_TO_CITYSCAPES) < 66

    def test_the_docs_table_is_the_same(self):
        # docs/api/data.md spells the table out by name, "Name (id)"; it must say what the code does.
        text = (Path(__file__).resolve().parents[2] / "docs" / "api" / "data.md").read_text()
        rows = re.findall(r"^\| (\d+ [a-z ]+|ignored \(255\)) \| (.+) \|$", text, re.M)
        documented = {}
        for city, cell in rows:
            target = None if city.startswith("ignored") else city.split(" ", 1)[1]
            assert target is None or CITYSCAPES_CLASSES.index(target) == int(city.split(" ")[0])
            for name, raw_id in re.findall(r"([^,]+?) \((\d+)\)(?:, |$)", cell):
                assert MAPILLARY_V12_CLASSES[int(raw_id)] == name
                documented[name] = target
        assert documented == V12_TO_CITYSCAPES_BY_NAME

    def test_loaded_labels_follow_the_table(self, tmp_path):
        make_mapillary(tmp_path, count=1, sizes=((2, 40),))
        raw = torch.cat([torch.arange(70), torch.tensor([200, 255] * 5)]).reshape(2, 40)
        name = Mapillary(tmp_path).names[0]
        save_label(tmp_path / "validation" / "labels" / f"{name}.png", raw)
        label = Mapillary(tmp_path)[0]["label"]
        assert torch.equal(label, script_mapillary_map(raw))  # every id 0-65, then 66-69, 200, 255
        assert (label.flatten()[66:] == 255).all()


# --------------------------------------------------------------------------- BDD100k


class TestBDD100k:
    @pytest.mark.parametrize("layout", ["seg", "10k", "scripts"])
    def test_items_in_each_layout(self, bdd, layout):
        replica = bdd[layout]
        data = BDD100k(replica.root, "val")
        assert data.layout == layout and data.names == sorted(replica.names) == replica.names
        assert data.classes == CITYSCAPES_CLASSES and data.num_classes == 19 and data.has_labels
        for i, name in enumerate(replica.names):
            item = data[i]
            assert set(item) == {"image", "label", "name"} and item["name"] == name
            assert item["image"].shape == (3, 24, 40) and item["image"].dtype == torch.float32
            raw = replica.raw_labels[name]
            assert torch.equal(item["label"], script_bdd_map(raw))
            assert torch.equal(jpeg_ids(item["image"]), raw.clamp(max=80))  # the image of this label
        values = torch.cat([replica.raw_labels[n].flatten() for n in replica.names]).unique().tolist()
        assert 19 in values and 255 in values  # the stray id and the ignore value occur, read as 255

    def test_colour_renderings_are_not_labels(self, bdd):
        assert all(s.label.name.endswith("_train_id.png") for s in BDD100k(bdd["seg"].root).samples)
        assert all(s.label.parent.name == "val" and s.label.parent.parent.name == "masks"
                   for s in BDD100k(bdd["10k"].root).samples)

    def test_root_at_the_seg_folder(self, bdd):
        data = BDD100k(bdd["seg"].root / "seg")
        assert data.layout == "seg" and data.names == bdd["seg"].names

    def test_layout_argument_and_preference(self, bdd, tmp_path):
        make_bdd100k(tmp_path, layout="seg", seed=1)
        make_bdd100k(tmp_path, layout="10k", seed=2)
        assert BDD100k(tmp_path).layout == "seg"  # the older release first, as the DG literature
        ten_k = BDD100k(tmp_path, layout="10k")
        assert ten_k.layout == "10k" and ten_k.names != BDD100k(tmp_path).names
        with pytest.raises(FileNotFoundError, match=r"/images/val' holding \*.jpg.*layout='scripts'"):
            BDD100k(tmp_path, layout="scripts")
        with pytest.raises(FileNotFoundError, match=r"images/10k/val' holding \*.jpg.*layout='10k'"):
            BDD100k(bdd["seg"].root, layout="10k")
        with pytest.raises(ValueError, match=r"`layout` must be one of \('seg', '10k', 'scripts'\)"):
            BDD100k(tmp_path, layout="auto")

    def test_unlabelled_and_test_split(self, bdd, tmp_path):
        seg = bdd["seg"]
        for data in (BDD100k(seg.root, labels=False), BDD100k(seg.root).unlabelled()):
            assert set(data[0]) == {"image", "name"} and not data.has_labels
        shutil.copytree(seg.root / "seg" / "images" / "val", tmp_path / "seg" / "images" / "test")
        assert BDD100k(tmp_path, "test", labels=False).layout == "seg"
        with pytest.raises(FileNotFoundError, match="labels=False"):
            BDD100k(tmp_path, "test")

    def test_wrong_root(self, bdd, tmp_path):
        with pytest.raises(FileNotFoundError, match="BDD100k: root folder"):
            BDD100k(tmp_path / "missing")
        (tmp_path / "bdd100k" / "info").mkdir(parents=True)
        expected = (r"no known layout under .*bdd100k' for split 'val'; expected one of: "
                    r"seg/images/val/\*.jpg with seg/labels/val/\*_train_id.png .*"
                    r"images/10k/val/\*.jpg with labels/sem_seg/masks/val/\*.png .*"
                    r"images/val/\*.jpg with gtFine/val/\*_train_id.png .*Found the folders \['info/'\]")
        with pytest.raises(FileNotFoundError, match=expected):
            BDD100k(tmp_path / "bdd100k")
        with pytest.raises(FileNotFoundError, match=r"split 'validation'.*seg/images/validation"):
            BDD100k(bdd["seg"].root, "validation")

    def test_image_without_label(self, tmp_path):
        replica = make_bdd100k(tmp_path, layout="10k")
        (tmp_path / "labels" / "sem_seg" / "masks" / "val" / f"{replica.names[1]}.png").unlink()
        with pytest.raises(ValueError, match=rf"1 image\(s\) in .*images/10k/val.*{replica.names[1]}"):
            BDD100k(tmp_path)

    def test_list_file_orders_and_restricts(self, bdd, tmp_path):
        seg = bdd["seg"]
        # The scripts' bdd100k_list/val.txt: names without suffix.
        lines = [seg.names[2], f"{seg.names[0]}.jpg"]
        data = BDD100k(seg.root, list_file=write_list(tmp_path / "val.txt", lines))
        assert data.names == [seg.names[2], seg.names[0]]
        assert torch.equal(data[0]["label"], script_bdd_map(seg.raw_labels[seg.names[2]]))
        with pytest.raises(FileNotFoundError, match=r"bad.txt.*'0000-0000'"):
            BDD100k(seg.root, list_file=write_list(tmp_path / "bad.txt", [seg.names[0], "0000-0000"]))

    def test_pseudo_labels(self, bdd, tmp_path):
        seg = bdd["seg"]
        pseudo = make_pseudo_labels(tmp_path / "pseudo", seg.names, size=(24, 40))
        data = BDD100k(seg.root, labels=False, pseudo_label_dir=tmp_path / "pseudo")
        assert all(torch.equal(data[i]["pseudo_label"], pseudo[n]) for i, n in enumerate(seg.names))
        with pytest.raises(FileNotFoundError, match="pseudo-label file"):
            BDD100k(seg.root, pseudo_label_dir=tmp_path / "pseudo" / "..")

    def test_size_resizes_before_the_transform(self, bdd):
        seg = bdd["seg"]
        plain = BDD100k(seg.root)
        data = BDD100k(seg.root, size=(12, 20), transform=RandomHorizontalFlip(p=1.0))
        for i in range(len(data)):
            item, ref = data[i], plain[i]
            image, label = EvalResize((12, 20))(ref["image"], ref["label"])
            assert torch.equal(item["label"], label.flip(-1)) and torch.equal(item["image"], image.flip(-1))
        assert BDD100k(seg.root, size=(24, 40))[0]["image"].shape == (3, 24, 40)

    def test_bad_arguments(self, bdd):
        root = bdd["seg"].root
        for split in ("", "seg/val", 3):
            with pytest.raises(ValueError, match="`split`"):
                BDD100k(root, split)
        for size in ((0, 4), (4,), "720x1280", (4.5, 8)):
            with pytest.raises(ValueError, match="`size`"):
                BDD100k(root, size=size)
        with pytest.raises(ValueError, match="`transform`"):
            BDD100k(root, transform="flip")
        with pytest.raises(ValueError, match="`transform`"):
            BDD100k(root, transform="flip", size=(4, 4))
        with pytest.raises(ValueError, match="`seed`"):
            BDD100k(root, seed=1.5)


# --------------------------------------------------------------------------- Mapillary


class TestMapillary:
    def test_items_and_mapping(self, vistas):
        data = Mapillary(vistas.root)
        assert data.names == sorted(vistas.names) == vistas.names and len(data) == 3
        assert data.classes == CITYSCAPES_CLASSES and data.label_dir.name == "labels"
        shapes = set()
        for i, name in enumerate(vistas.names):
            item = data[i]
            raw = vistas.raw_labels[name]
            assert item["name"] == name and item["image"].shape[-2:] == raw.shape
            assert torch.equal(item["label"], script_mapillary_map(raw))
            assert torch.equal(jpeg_ids(item["image"]), raw)
            shapes.add(tuple(raw.shape))
        assert len(shapes) == 3  # images of several sizes, as Mapillary's

    def test_v20_download_reads_the_v12_labels(self, tmp_path):
        replica = make_mapillary(tmp_path, v2=True)
        data = Mapillary(tmp_path)
        assert data.label_dir == tmp_path / "validation" / "v1.2" / "labels"
        for i, name in enumerate(replica.names):
            assert torch.equal(data[i]["label"], script_mapillary_map(replica.raw_labels[name]))
        shutil.rmtree(tmp_path / "validation" / "v1.2")
        with pytest.raises(FileNotFoundError, match=r"v1.2 label folder.*only .*v2.0/labels.*124 classes"):
            Mapillary(tmp_path)
        assert len(Mapillary(tmp_path, labels=False)) == 3

    def test_instances_are_not_labels(self, vistas):
        assert all(s.label.parent.name == "labels" for s in Mapillary(vistas.root).samples)

    def test_size_as_the_scripts(self, vistas):
        plain = Mapillary(vistas.root)
        data = Mapillary(vistas.root, size=(16, 20))
        for i in range(len(data)):
            item, ref = data[i], plain[i]
            assert item["image"].shape == (3, 16, 20)
            assert torch.equal(item["label"], resize_label(ref["label"], (16, 20)))
            assert torch.equal(item["image"], EvalResize((16, 20))(ref["image"])[0])
        batch = next(iter(DataLoader(data, batch_size=3)))
        assert batch["image"].shape == (3, 3, 16, 20) and batch["label"].shape == (3, 16, 20)

    def test_pickles_for_loader_workers(self, vistas):
        data = Mapillary(vistas.root, size=(8, 12), transform=RandomHorizontalFlip(), seed=3)
        clone = pickle.loads(pickle.dumps(data))
        assert all(torch.equal(data[1][k], clone[1][k]) for k in ("image", "label"))

    def test_list_file_and_pseudo_labels(self, vistas, tmp_path):
        lines = [vistas.names[1], vistas.names[0]]  # mapillary_list/val.txt: keys without suffix
        data = Mapillary(vistas.root, list_file=write_list(tmp_path / "val.txt", lines))
        assert data.names == lines
        pseudo = make_pseudo_labels(tmp_path / "p", vistas.names, size=(8, 8), flat=True)
        data = Mapillary(vistas.root, pseudo_label_dir=tmp_path / "p", size=(8, 8))
        assert torch.equal(data[2]["pseudo_label"], pseudo[vistas.names[2]])

    def test_wrong_root(self, vistas, tmp_path):
        with pytest.raises(FileNotFoundError, match="Mapillary: root folder"):
            Mapillary(tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match=r"split folder .*val' .*folders found: \['validation'\]"):
            Mapillary(vistas.root, "val")
        (tmp_path / "validation").mkdir()
        with pytest.raises(FileNotFoundError, match=r"validation/images' holding \*.jpg"):
            Mapillary(tmp_path)
        shutil.copytree(vistas.root / "validation" / "images", tmp_path / "validation" / "images")
        with pytest.raises(FileNotFoundError, match=r"validation/labels'.*v1.2/labels'.*labels=False"):
            Mapillary(tmp_path)
        (tmp_path / "validation" / "labels").mkdir()
        with pytest.raises(ValueError, match=r"3 image\(s\) .* have no label"):
            Mapillary(tmp_path)

    def test_bad_arguments(self, vistas):
        with pytest.raises(ValueError, match="`split`"):
            Mapillary(vistas.root, "validation/images")
        with pytest.raises(ValueError, match="`size`"):
            Mapillary(vistas.root, size=(1080, -1))


# --------------------------------------------------------------------------- the resize


class TestEvalResize:
    def test_matches_pil_bicubic_and_nearest(self):
        # The scripts resize with PIL: image BICUBIC, label NEAREST. A smooth image: no clipping
        # between PIL's two 8-bit passes.
        g = torch.Generator().manual_seed(0)
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(30, 44), mode="bilinear")[0]
        image = (image * 255).round() / 255
        label = torch.randint(0, 19, (30, 44), generator=g)
        pil_image = Image.fromarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
        pil_label = Image.fromarray(label.to(torch.uint8).numpy())
        for size in ((12, 20), (45, 70), (30, 60)):
            out, _ = EvalResize(size)(image, label)
            ref = np.asarray(pil_image.resize(size[::-1], Image.BICUBIC), np.float32) / 255
            assert np.abs(out.permute(1, 2, 0).numpy() - ref).max() < 1.5 / 255
            assert out.min() >= 0 and out.max() <= 1
        # Labels: the pixels PIL's NEAREST picks (a downscale without exact ties, where PIL's
        # float arithmetic can round the other way).
        out_label = EvalResize((12, 20))(image, label)[1]
        assert np.array_equal(out_label.numpy(), np.asarray(pil_label.resize((20, 12), Image.NEAREST)))

    def test_same_size_is_untouched_and_bad_input(self):
        image, label = torch.rand(3, 4, 6), torch.zeros(4, 6, dtype=torch.long)
        out = EvalResize((4, 6))(image, label)
        assert out[0] is image and out[1] is label
        with pytest.raises(ValueError, match="`size`"):
            EvalResize((4, 0))
        with pytest.raises(ValueError, match=r"`labels\[0\]`"):
            EvalResize(3)(image, torch.zeros(3, 3, dtype=torch.long))
