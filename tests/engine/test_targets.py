"""Multi-target evaluation on tiny replicas of Cityscapes, BDD100k and Mapillary: each row equals
evaluating its dataset alone, the mean equals the rows', undefined IoUs as evaluate() gives them,
the paper's three targets from their roots, and bad input."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

import diga
from diga.adapter import Adapter
from diga.data import CITYSCAPES_CLASSES, BDD100k, Cityscapes, Mapillary, resize_label
from diga.engine.evaluation import evaluate
from diga.engine.targets import PAPER_DG_SIZES, EvalTarget, evaluate_targets, paper_dg_targets
from tests.data.replicas import make_bdd100k, make_cityscapes, make_mapillary, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    city = make_cityscapes(tmp_path_factory.mktemp("cityscapes"), split="val", cities=("lindau",))
    bdd = make_bdd100k(tmp_path_factory.mktemp("bdd100k"), layout="10k", count=2)
    vistas = make_mapillary(tmp_path_factory.mktemp("mapillary"), count=2)
    return city.root, bdd.root, vistas.root


def tiny_model():
    torch.manual_seed(0)
    return diga.create_model("unet", num_classes=19, encoder_name="resnet18", encoder_depth=3,
                             decoder_channels=(16, 8, 8))


@pytest.fixture(scope="module")
def adapter():
    return Adapter(tiny_model(), num_classes=19).eval()


@pytest.fixture(scope="module")
def constant_adapter():
    """Predicts class ``CONSTANT`` everywhere: a zero head with one positive bias."""
    net = tiny_model()
    head = net.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[CONSTANT] = 5.0
    return Adapter(net, num_classes=19).eval()


CONSTANT = 8  # vegetation


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def reference_iou_constant(labels: list[torch.Tensor], num_classes: int = 19) -> list[float]:
    """IoU per class, written as a loop, for a model that predicts CONSTANT on every pixel."""
    out = []
    for c in range(num_classes):
        tp = union = 0
        for label in labels:
            valid = label != 255
            pred = torch.full_like(label, CONSTANT)
            tp += int(((pred == c) & (label == c) & valid).sum())
            union += int((((pred == c) | (label == c)) & valid).sum())
        out.append(tp / union if union else float("nan"))
    return out


class TestEvaluateTargets:
    def test_rows_equal_each_dataset_alone(self, adapter, roots):
        city, bdd, vistas = roots
        datasets = {"cityscapes": Cityscapes(city, "val"), "bdd100k": BDD100k(bdd),
                    "mapillary": Mapillary(vistas, size=(16, 20))}
        targets = [EvalTarget(name, data) for name, data in datasets.items()]
        result = evaluate_targets(adapter, targets)
        assert list(result["targets"]) == list(datasets)
        for name, data in datasets.items():
            alone = evaluate(adapter, data, num_classes=19, scales=(1.0, 0.5))
            row = result["targets"][name]
            assert same(row["miou"], alone["miou"]) and not math.isnan(row["miou"])
            assert list(row["iou"]) == list(CITYSCAPES_CLASSES)
            assert all(same(a, b) for a, b in zip(row["iou"].values(), alone["iou"], strict=True))
            assert row["images"] == len(data) and row["size"] is None and row["scales"] == [1.0, 0.5]
        rows = result["targets"].values()
        assert result["mean_miou"] == pytest.approx(sum(r["miou"] for r in rows) / 3, abs=1e-12)
        text = json.dumps(result)  # plain values for results.json (NaN as JSON's usual NaN)
        assert json.dumps(json.loads(text)) == text

    def test_size_resizes_as_the_loader_option(self, adapter, roots):
        _, _, vistas = roots
        by_target = evaluate_targets(adapter, [EvalTarget("m", Mapillary(vistas), size=(16, 20))])
        by_loader = evaluate_targets(adapter, [EvalTarget("m", Mapillary(vistas, size=(16, 20)))])
        row, other = by_target["targets"]["m"], by_loader["targets"]["m"]
        assert row["size"] == [16, 20] and other["size"] is None
        assert same(row["miou"], other["miou"]) and row["images"] == 2

    def test_undefined_iou_follows_evaluate(self, constant_adapter, roots):
        # The constant model: classes in neither labels nor predictions are NaN, left out of the mean.
        _, bdd, _ = roots
        data = BDD100k(bdd, size=(12, 20))
        labels = [data[i]["label"] for i in range(len(data))]
        result = evaluate_targets(constant_adapter, [EvalTarget("bdd", BDD100k(bdd), size=(12, 20))])
        row = result["targets"]["bdd"]
        expected = reference_iou_constant(labels)
        assert any(math.isnan(v) for v in expected) and not math.isnan(expected[CONSTANT])
        for got, want in zip(row["iou"].values(), expected, strict=True):
            assert math.isnan(got) if math.isnan(want) else got == pytest.approx(want)
        defined = [v for v in expected if not math.isnan(v)]
        assert row["miou"] == pytest.approx(sum(defined) / len(defined))
        assert result["mean_miou"] == row["miou"]

    def test_a_target_without_labelled_pixels_makes_the_mean_nan(self, constant_adapter):
        void = [(torch.rand(3, 8, 8), torch.full((8, 8), 255))]
        some = [(torch.rand(3, 8, 8), torch.full((8, 8), CONSTANT))]
        result = evaluate_targets(constant_adapter, [EvalTarget("void", void), EvalTarget("some", some)])
        assert math.isnan(result["targets"]["void"]["miou"])
        assert all(math.isnan(v) for v in result["targets"]["void"]["iou"].values())
        assert result["targets"]["some"]["miou"] == 1.0 and math.isnan(result["mean_miou"])
        assert list(result["targets"]["some"]["iou"])[:2] == ["0", "1"]  # no class names: indices

    def test_class_subset_and_names(self, constant_adapter):
        label = torch.tensor([[CONSTANT, 0], [1, 2]]).repeat(4, 4)
        names = tuple(f"c{i}" for i in range(19))
        target = EvalTarget("t", [(torch.rand(3, 8, 8), label)], classes=(CONSTANT, 0, 5), class_names=names)
        row = evaluate_targets(constant_adapter, [target])["targets"]["t"]
        assert row["iou"]["c8"] == 0.25 and row["iou"]["c0"] == 0.0 and math.isnan(row["iou"]["c5"])
        assert row["miou_subset"] == pytest.approx(0.125)  # c5 undefined: out of the subset's mean
        assert row["miou"] == pytest.approx(0.25 / 4)

    def test_factory_is_called_when_evaluated(self, constant_adapter):
        calls = []

        def factory():
            calls.append(1)
            return [(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))]

        target = EvalTarget("lazy", factory, size=(4, 4))
        assert not calls and "function" not in repr(target)  # the dataset is not in the repr
        assert repr(target).startswith("EvalTarget(name='lazy', size=(4, 4), scales=(1.0, 0.5)")
        result = evaluate_targets(constant_adapter, [target])
        assert calls == [1] and result["targets"]["lazy"]["images"] == 1
        built = pickle.loads(pickle.dumps(target.build()))  # for loader workers
        assert built[0]["label"].shape == (4, 4) and built[0]["image"].shape == (3, 4, 4)

    def test_bad_input(self, constant_adapter, roots):
        city, _, _ = roots
        one = [(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))]
        for targets in ([], EvalTarget("a", one), None, ["a"]):
            with pytest.raises(ValueError, match="`targets"):
                evaluate_targets(constant_adapter, targets)
        with pytest.raises(ValueError, match=r"distinct names, got \['a'\]"):
            evaluate_targets(constant_adapter, [EvalTarget("a", one), EvalTarget("a", one)])
        with pytest.raises(ValueError, match="'empty'.*empty"):
            evaluate_targets(constant_adapter, [EvalTarget("empty", [])])
        with pytest.raises(ValueError, match="'c16'.*16 classes but the model 19"):
            evaluate_targets(constant_adapter, [EvalTarget("c16", Cityscapes(city, "val", num_classes=16))])
        with pytest.raises(ValueError, match="`class_names` of target 'n' must name the model's 19"):
            evaluate_targets(constant_adapter, [EvalTarget("n", one, class_names=("a", "b"))])
        with pytest.raises(ValueError, match=r"`classes` of target 'k' must be in \[0, 19\)"):
            evaluate_targets(constant_adapter, [EvalTarget("k", one, classes=(3, 19))])
        with pytest.raises(ValueError, match="function of target 'f' must return a dataset"):
            evaluate_targets(constant_adapter, [EvalTarget("f", lambda: 3)])

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"name": ""}, "`name`"),
            ({"dataset": 3}, "`dataset` of target 'x'"),
            ({"size": (0, 4)}, "`size`"),
            ({"size": "1080x1920"}, "`size`"),
            ({"scales": ()}, "`scales` of target 'x'"),
            ({"scales": (1.0, -0.5)}, "`scales`"),
            ({"scales": (float("nan"),)}, "`scales`"),
            ({"classes": (-1,)}, "`classes` of target 'x'"),
            ({"classes": (1, 1)}, "`classes`"),
            ({"classes": (1.0,)}, "`classes`"),
            ({"class_names": ("a", "a")}, "`class_names` of target 'x'"),
            ({"class_names": "road"}, "`class_names`"),
        ],
    )
    def test_bad_target(self, kwargs, match):
        args = {"name": "x", "dataset": [], **kwargs}
        with pytest.raises(ValueError, match=match):
            EvalTarget(**args)


class TestPaperTargets:
    def test_the_three_targets(self, roots):
        city, bdd, vistas = roots
        targets = paper_dg_targets(cityscapes_root=city, bdd_root=bdd, mapillary_root=vistas)
        assert [t.name for t in targets] == ["cityscapes", "bdd100k", "mapillary"]
        assert [t.size for t in targets] == [(1024, 2048), (720, 1280), (1080, 1920)]
        assert PAPER_DG_SIZES == {t.name: t.size for t in targets}
        assert all(t.scales == (1.0, 0.5) and t.class_names == CITYSCAPES_CLASSES for t in targets)
        kinds = [type(t.dataset) for t in targets]
        assert kinds == [Cityscapes, BDD100k, Mapillary]
        assert [t.dataset.split for t in targets] == ["val", "val", "validation"]
        # Mapillary resized as the scripts: image 1080 x 1920, label nearest.
        item, raw = targets[2].build()[0], targets[2].dataset[0]
        assert item["image"].shape == (3, 1080, 1920)
        assert torch.equal(item["label"], resize_label(raw["label"], (1080, 1920)))

    def test_any_subset(self, roots):
        _, bdd, _ = roots
        targets = paper_dg_targets(bdd_root=bdd)
        assert [t.name for t in targets] == ["bdd100k"] and len(targets[0].dataset) == 2

    def test_bad_roots(self, roots, tmp_path):
        city, bdd, vistas = roots
        with pytest.raises(ValueError, match="at least one of `cityscapes_root`, `bdd_root`, `mapillary_root`"):
            paper_dg_targets()
        with pytest.raises(FileNotFoundError, match=r"^`bdd_root`: BDD100k: no known layout"):
            paper_dg_targets(cityscapes_root=city, bdd_root=tmp_path)
        with pytest.raises(FileNotFoundError, match=r"^`mapillary_root`: Mapillary: expected split folder"):
            paper_dg_targets(mapillary_root=bdd)
        with pytest.raises(FileNotFoundError, match=r"^`cityscapes_root`: Cityscapes: root folder"):
            paper_dg_targets(cityscapes_root=tmp_path / "missing")
        with pytest.raises(ValueError, match="`bdd_root` must be a folder path"):
            paper_dg_targets(bdd_root=3)
        with pytest.raises(TypeError):
            paper_dg_targets(city)  # keyword-only: three roots are too easy to swap
