"""The checks every command runs first: numeric flags, devices, outputs against inputs, resumed settings, labels."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from PIL import Image

from diga.data import SegmentationFolder
from diga.data.io import save_label
from diga.engine.preflight import (
    OutputClash,
    check_outputs,
    check_same_run,
    check_unique_outputs,
    device_flag,
    integer,
    real,
    run_settings_diff,
    scan_labels,
)


class TestNumber:
    @pytest.mark.parametrize("text, value", [("3", 3), (" 0 ", 0), (7, 7)])
    def test_valid_integers(self, text, value):
        assert integer(low=0)(text) == value

    @pytest.mark.parametrize("text", ["-1", "2.5", "1e3", "x", "", True, 2.0, None, "nan"])
    def test_bad_integers(self, text):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 0, got"):
            integer(low=0)(text)

    @pytest.mark.parametrize("text", ["inf", "-inf", "nan", "0", "-1e-9", float("inf"), "2.5"])
    def test_reals_are_finite_and_in_range(self, text):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a finite number in \(0, 2\]"):
            real(low=0, low_open=True, high=2)(text)
        assert real(low=0, low_open=True, high=2)("1e-3") == 1e-3 and real()(3) == 3.0

    def test_argparse_names_the_flag(self):
        parser = argparse.ArgumentParser(exit_on_error=False)
        parser.add_argument("--rounds", type=integer(low=0))
        with pytest.raises(argparse.ArgumentError, match=r"argument --rounds: expected an integer >= 0, got '-2'"):
            parser.parse_args(["--rounds", "-2"])


class TestDevice:
    def test_cpu_and_auto(self):
        assert device_flag("CPU") == "cpu" and device_flag("auto") == "auto"

    @pytest.mark.parametrize("value, match", [("meta", "expected 'auto'"), ("gpu", "expected 'auto'"),
                                               ("cpu:1", "one CPU device"), ("cuda", "no usable CUDA"),
                                               ("mps", "MPS is not available")])
    def test_refused_without_the_hardware(self, value, match, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        with pytest.raises(argparse.ArgumentTypeError, match=match):
            device_flag(value)

    def test_a_cuda_index_past_the_gpus_there_are(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        assert device_flag("cuda:1") == "cuda:1" and device_flag("cuda") == "cuda"
        with pytest.raises(argparse.ArgumentTypeError, match=r"'cuda:5' .* has 2 CUDA device\(s\): expected cuda:0 to"):
            device_flag("cuda:5")


class TestOutputs:
    def test_outputs_beside_the_inputs_pass(self, tmp_path):
        (tmp_path / "images").mkdir()
        (tmp_path / "model.safetensors").write_bytes(b"x")
        check_outputs({"--out": tmp_path / "pred", "--json": tmp_path / "r.json"},
                      {"model": tmp_path / "model.safetensors", "images": [tmp_path / "images"]})

    @pytest.mark.parametrize("out, how", [("images", "is"), ("images/sub", "is inside"), (".", "holds"),
                                          ("model.safetensors", "is"), ("link", "is")])
    def test_onto_inside_or_around_an_input(self, tmp_path, out, how):
        (tmp_path / "images").mkdir()
        (tmp_path / "model.safetensors").write_bytes(b"x")
        os.symlink(tmp_path / "images", tmp_path / "link")  # the same folder by another name
        inputs = {"model": tmp_path / "model.safetensors", "images": [tmp_path / "images"]}
        if out == "model.safetensors":
            inputs = {"model": tmp_path / "model.safetensors"}
        with pytest.raises(OutputClash, match=rf"--out .* {how} (images|model) "):
            check_outputs({"--out": tmp_path / out}, inputs)

    def test_unique_names(self, tmp_path):
        check_unique_outputs([(tmp_path / "a.png", tmp_path / "o/a.png"), (tmp_path / "b.png", tmp_path / "o/b.png")])
        with pytest.raises(OutputClash, match=r"a.png and .*a.jpg would both be written to --out .*o/a.png"):
            check_unique_outputs([(tmp_path / "a.png", tmp_path / "o/a.png"),
                                  (tmp_path / "a.jpg", tmp_path / "o/a.png")])


class TestSameRun:
    def test_values_compare_as_json_and_only_shared_settings_count(self):
        assert run_settings_diff({"--crop-size": [64, 96], "--old": 1}, {"--crop-size": (64, 96), "--new": 2}) is None
        assert run_settings_diff({"a": 1, "b": None}, {"a": 1, "b": 0.5}) == ("b", None, 0.5)

    def test_refusal_names_the_setting_and_both_values(self, tmp_path):
        check_same_run(None, {"--rounds": 1}, work_dir=tmp_path)  # nothing recorded: nothing to compare
        with pytest.raises(ValueError, match=r"--resume: --model is 'fpn' but the run in .* was started with 'unet'"):
            check_same_run({"--model": "unet"}, {"--model": "fpn"}, work_dir=tmp_path)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    for i in range(6):
        Image.new("RGB", (20, 12 + i)).save(tmp_path / "img" / f"{i}.png")
        save_label(tmp_path / "lbl" / f"{i}.png", torch.full((12 + i, 20), i % 3))
    return tmp_path


class TestScanLabels:
    def test_counts_and_sizes(self, folder):
        data = SegmentationFolder(folder / "img", folder / "lbl", classes=("a", "b", "c"))
        found = scan_labels(data, flag="--source-images", label_flag="--source-labels", crop=(14, 20),
                            show_progress=False, workers=3)
        assert (found.items, found.labelled, found.smaller, found.min_size) == (6, 6, 2, (12, 20))

    @pytest.mark.parametrize("break_it, match", [
        (lambda f: Image.new("RGB", (20, 15), (1, 2, 3)).save(f), r"is a RGB image \(3 channels\); expected single"),
        (lambda f: save_label(f, torch.zeros(5, 5, dtype=torch.long)), r"is 5 x 5 \(W x H\) but its image"),
        (lambda f: save_label(f, torch.full((15, 20), 7)), r"holds value 7, outside \[0, 3\)"),
        (lambda f: f.write_bytes(b"not a png"), r"cannot read --source-labels label file .*3.png'"),
    ])
    def test_the_first_bad_file_is_named_with_its_flag(self, folder, break_it, match):
        break_it(folder / "lbl" / "3.png")
        data = SegmentationFolder(folder / "img", folder / "lbl", classes=("a", "b", "c"))
        with pytest.raises(ValueError, match=match) as info:
            scan_labels(data, flag="--source-images", label_flag="--source-labels", show_progress=False)
        assert "3.png" in str(info.value) and "--source-labels" in str(info.value)

    def test_unlabelled_folders_read_headers_only(self, folder):
        (folder / "img" / "2.png").write_bytes(b"garbage")
        with pytest.raises(ValueError, match=r"cannot read --target-images image file .*2.png'"):
            scan_labels(SegmentationFolder(folder / "img"), flag="--target-images", show_progress=False)
