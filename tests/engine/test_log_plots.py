"""JSON-lines logger (resume truncation) and the PIL plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diga.engine.log import JsonlLogger, scalars
from diga.engine.plots import colorize, image_grid, line_plot, save_png


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


def test_line_plot_without_matplotlib_falls_back_to_pil(monkeypatch):
    import diga.engine.plots as plots

    monkeypatch.setattr(plots, "_matplotlib", lambda: None)
    img = line_plot({"a": ([0, 1], [0.0, 1.0])}, title="t", size=(320, 200))
    arr = torch.from_numpy(np.array(img)).reshape(-1, 3)
    assert img.size == (320, 200) and (arr != 255).any(dim=1).sum() > 100


def test_image_grid_row_labels_and_scale():
    rows = {"source": torch.zeros(2, 3, 4, 4), "prediction": torch.zeros(2, 3, 4, 4)}
    plain = image_grid(rows, pad=1)
    assert plain.size == (2 * (4 + 1) + 1, 2 * (4 + 2))  # make_grid's layout, one grid a row
    big = image_grid(rows, pad=1, labels=True, scale=3)
    assert big.size[1] == 2 * (12 + 2) and big.size[0] > 2 * (12 + 1) + 1  # a label column on the left
    left = np.array(big)[:, : big.size[0] - (2 * 13 + 1)]
    assert (left < 128).any()  # the row names are written


def test_tensorboard_mirror(tmp_path, monkeypatch):
    import diga.engine.log as log_module

    class Writer:
        def __init__(self):
            self.scalars, self.closed = [], False

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def close(self):
            self.closed = True

    made = []
    monkeypatch.setattr(log_module, "_summary_writer", lambda d, purge: made.append((d, purge)) or Writer())
    log = JsonlLogger(tmp_path / "log.jsonl", stage="warmup", tensorboard=tmp_path / "tb", resume_step=3)
    log.log(4, {"loss": torch.tensor(0.5), "v": torch.zeros(2)})
    writer = log.writer
    log.close()
    assert made == [(tmp_path / "tb", 3)]
    assert writer.scalars == [("warmup/loss", 0.5, 4)] and writer.closed
    JsonlLogger(tmp_path / "b.jsonl", enabled=False, tensorboard=tmp_path / "tb").log(1, {"a": 1})
    assert len(made) == 1  # a disabled (non-zero rank) logger opens no writer


def test_summary_writer_needs_the_package(tmp_path):
    import importlib.util

    from diga.engine.log import _summary_writer

    writer = _summary_writer(tmp_path / "tb", None)
    if importlib.util.find_spec("tensorboard") is None:
        assert writer is None
    else:
        writer.close()
        assert any((tmp_path / "tb").iterdir())


def test_logger_writes_strict_json_and_names_the_file_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    import pathlib

    from diga._io import WriteError

    log = JsonlLogger(tmp_path / "log.jsonl", stage="warmup")
    log.log(1, {"loss": float("nan"), "kd": torch.tensor(float("inf"))})
    assert (tmp_path / "log.jsonl").read_text() == '{"stage": "warmup", "step": 1, "loss": null, "kd": null}\n'

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "open", full)
    with pytest.raises(WriteError, match="cannot write .*log.jsonl: No space left on device"):
        log.log(2, {"loss": 1.0})
