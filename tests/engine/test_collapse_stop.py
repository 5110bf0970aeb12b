"""train_stage on a forced collapse: a warning once and a log record by default, a stop when asked."""

from __future__ import annotations

import warnings

import pytest
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import Dataset

from diga.adapter import Adapter
from diga.engine import CollapseError, CollapseWarning, OptimConfig, train_stage
from diga.engine.log import JsonlLogger
from diga.engine.stages import stage_checkpoint

C = 3


class Quadrants(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        lbl = torch.zeros(16, 16, dtype=torch.long)
        lbl[8:] = 1
        lbl[:, 8:] = 2
        return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), lbl


def collapsed_adapter() -> Adapter:
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, classes=C, encoder_depth=3, decoder_channels=(8, 8, 8))
    adapter = Adapter(net, num_classes=C)
    adapter.init_centroids([torch.rand(2, 3, 16, 16)])
    adapter.centroids.pixel_counts.fill_(10.0)  # the warm-up predicted the three classes equally
    head = adapter.student.model.segmentation_head[0]
    with torch.no_grad():  # ...and now every pixel is class 0
        head.weight.zero_()
        head.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    return adapter


def run(tmp_path, **kw):
    return train_stage(
        collapsed_adapter(), stage="self_training", steps=3, source=Quadrants(), target=Quadrants(), batch_size=2,
        optim=OptimConfig(optimizer="sgd", lr=1e-6), work_dir=tmp_path, log_every=1, checkpoint_every=1,
        show_progress=False, **kw,
    )


def test_stop_on_collapse_raises_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(CollapseError, match=r"self_training step 1: self-training looks collapsed"):
        run(tmp_path, stop_on_collapse=True)
    assert not stage_checkpoint(tmp_path, "self_training", "final").exists()
    records = JsonlLogger.read(tmp_path / "log.jsonl")
    assert records and records[-1]["collapse"] == 1.0 and records[-1]["share_ratio_min"] == 0.0


def test_collapse_is_a_run_stop_for_the_command_line():
    from diga.engine.guards import TrainingDiverged

    assert issubclass(CollapseError, TrainingDiverged)  # diga's main() prints it in one line, exit 1


def test_collapse_warns_once_and_is_logged(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(tmp_path)
    collapse = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert len(collapse) == 1 and "share_ratio_min" in str(collapse[0].message)
    assert res["step"] == 3 and stage_checkpoint(tmp_path, "self_training", "final").exists()
    assert [r["collapse"] for r in JsonlLogger.read(tmp_path / "log.jsonl") if "collapse" in r] == [1.0] * 3
