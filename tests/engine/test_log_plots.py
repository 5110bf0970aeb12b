"""JSON-lines logger (resume truncation) and the PIL plots."""

from __future__ import annotations

import numpy as np
import torch

from diga.engine import JsonlLogger, colorize, image_grid, line_plot, save_png, scalars


def test_logger_resume_drops_later_records(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLogger(path, stage="warmup")
    for step in (10, 20, 30):
        log.log(step, {"loss": torch.tensor(1.0 / step)})
    JsonlLogger(path, stage="other").log(5, {"x": 1})
    JsonlLogger(path, stage="warmup", resume_step=20)
    records = JsonlLogger.read(path)
    assert [(r["stage"], r["step"]) for r in records] == [("warmup", 10), ("other", 5)]


def test_disabled_logger_writes_nothing(tmp_path):
    JsonlLogger(tmp_path / "log.jsonl", enabled=False).log(1, {"a": 1})
    assert not (tmp_path / "log.jsonl").exists()


def test_scalars():
    assert scalars({"a": torch.tensor(2.0), "b": 3, "v": torch.zeros(2), "s": "x"}) == {"a": 2.0, "b": 3.0}


def test_colorize_and_grid(tmp_path):
    lbl = torch.tensor([[[0, 1], [255, 1]]])
    rgb = colorize(lbl, [(255, 0, 0), (0, 255, 0)])
    assert rgb.shape == (1, 3, 2, 2)
    assert rgb[0, :, 1, 0].tolist() == [0, 0, 0]
    img = image_grid({"a": rgb, "b": torch.rand(1, 3, 2, 2)}, pad=1)
    assert img.size == (4, 8)
    save_png(img, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


def test_line_plot_draws_series():
    img = line_plot({"a": ([0, 1], [0.0, 1.0]), "b": ([0, 1], [1.0, float("nan")])}, title="t")
    arr = torch.from_numpy(np.array(img)).reshape(-1, 3)
    assert (arr != 255).any(dim=1).sum() > 100  # something was drawn
