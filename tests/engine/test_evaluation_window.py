"""The trainers' evaluation and pseudo-labels slide when asked (a window, or the block's inference_window)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import diga.engine.evaluation as evaluation
from diga.adapter import Adapter
from diga.data.io import load_label
from diga.engine import evaluate, generate_pseudo_labels
from diga.engine.evaluation import inference_window
from diga.inference import predict_logits

SHAPES: list[tuple[int, int]] = []


class Pointwise(nn.Module):
    """1x1 convolutions (smp's layout: a ``segmentation_head``): sliding changes nothing, so results compare."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        SHAPES.append(tuple(x.shape[-2:]))
        return self.segmentation_head(self.features(x))


class Items(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        label = torch.randint(0, 3, (20, 36), generator=g)
        return {"image": torch.rand(3, 20, 36, generator=g), "label": label, "name": f"item{i}"}


@pytest.fixture
def adapter():
    return Adapter(Pointwise(), 3)


def test_evaluate_slides_and_agrees_with_whole_images(adapter):
    whole = evaluate(adapter, Items(), num_classes=3, scales=(1.0, 0.5))
    SHAPES.clear()
    slid = evaluate(adapter, Items(), num_classes=3, scales=(1.0, 0.5), window=(8, 16), stride=(4, 8))
    assert set(SHAPES) == {(8, 16)}  # every forward saw a window, at both scales
    assert slid["iou"] == pytest.approx(whole["iou"], nan_ok=True)


def test_an_inference_window_block_reaches_pseudo_labels_and_evaluation(adapter, tmp_path, monkeypatch):
    seen = []

    def recording(*args, **kwargs):
        seen.append((kwargs["window"], kwargs["stride"]))
        return predict_logits(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict_logits", recording)
    with inference_window((16, 16)):
        generate_pseudo_labels(adapter, Items(), tmp_path / "pseudo", scales=(1.0,), show_progress=False)
        evaluate(adapter, Items(), num_classes=3, scales=(1.0,))
    assert seen == [((16, 16), (8, 8))] * 4
    assert load_label(tmp_path / "pseudo" / "item0.png").shape == (20, 36)
    seen.clear()
    evaluate(adapter, Items(), num_classes=3, scales=(1.0,))  # outside the block: whole images again
    assert seen == []
    with pytest.raises(ValueError, match="stride"):
        with inference_window(None, (8, 8)):
            pass
