"""The ``diga`` command line: a temp-dir round trip on the built-in shift, errors, generated docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diga.cli import cli_markdown, format_iou_table, run
from diga.data import load_label
from diga.data.shift_files import write_shift_folders

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    return write_shift_folders(tmp_path_factory.mktemp("shift"), source_items=8, target_items=4, val_items=3,
                               size=(48, 64))


def adapt_args(shift: Path, work: Path, *extra: str) -> list[str]:
    return ["adapt", "--source-images", str(shift / "source" / "images"),
            "--source-labels", str(shift / "source" / "labels"), "--target-images", str(shift / "target" / "images"),
            "--target-val-images", str(shift / "val" / "images"), "--target-val-labels", str(shift / "val" / "labels"),
            "--num-classes", "8", "--classes", str(shift / "classes.txt"), "--work-dir", str(work),
            "--preset", "tiny", "--crop-size", "48", "64", "--model", "unet", "--encoder", "resnet18",
            "--device", "cpu", "--num-workers", "0", "--no-progress", "--warmup-steps", "2",
            "--self-training-steps", "2", *extra]


def test_round_trip_adapt_predict_evaluate(shift, tmp_path):
    work = tmp_path / "run"
    results = run(adapt_args(shift, work))
    assert results["final"]["stage"] == "self_training_2"
    assert set(results["final"]["iou_by_class"]) == set((shift / "classes.txt").read_text().split())
    assert (work / "model.safetensors").exists() and (work / "config.json").exists()

    # Predict in another process: the model file carries everything it needs.
    out = tmp_path / "pred"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "diga", "predict", str(work / "model.safetensors"),
                           str(shift / "val" / "images"), "--out", str(out), "--overlay", "--no-progress",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = sorted(out.glob("0*[0-9].png"))
    assert [p.name for p in labels] == ["000000.png", "000001.png", "000002.png"]
    assert load_label(labels[0]).shape == (48, 64) and int(load_label(labels[0]).max()) < 8
    assert sorted(p.name for p in out.glob("*_overlay.png")) == ["000000_overlay.png", "000001_overlay.png",
                                                                 "000002_overlay.png"]

    report = tmp_path / "eval.json"
    result = run(["evaluate", str(work / "model.safetensors"), "--images", str(shift / "val" / "images"),
                  "--labels", str(shift / "val" / "labels"), "--json", str(report), "--no-progress",
                  "--device", "cpu"])
    assert json.loads(report.read_text())["miou"] == pytest.approx(result["miou"])
    # The model file's prediction equals what training evaluated (same model, same scales).
    assert result["miou"] == pytest.approx(results["final"]["miou"], abs=1e-9)


def test_predict_single_files_and_config_file(shift, tmp_path):
    work = tmp_path / "run"
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"rounds": 1, "warmup_steps": 1, "self_training_steps": 1}))
    results = run(adapt_args(shift, work, "--config", str(config)))
    assert list(results["stages"]) == ["warmup", "self_training_1"]
    assert json.loads((work / "config.json").read_text())["args"]["rounds"] == 1
    image = shift / "val" / "images" / "000001.png"
    run(["predict", str(work / "model.safetensors"), str(image), "--out", str(tmp_path / "one"), "--no-progress"])
    assert (tmp_path / "one" / "000001.png").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["predict", "missing.pt", "x.png", "--out", "o"], "missing.pt"),
        (["adapt", "--source-images", "a", "--work-dir", "w"], "--source-labels"),
        (["adapt", "--source", "gta5", "--work-dir", "w"], "--source-root"),
    ],
)
def test_errors(tmp_path, args, match):
    os.chdir(tmp_path)
    with pytest.raises((SystemExit, FileNotFoundError, ValueError), match=match):
        run(args)


def test_predict_rejects_non_model_files(tmp_path):
    import torch

    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="refused to load model file .*bogus.pt.*pickle"):
        run(["predict", str(bogus), str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="not a diga model file"):
        run(["predict", str(bogus), str(tmp_path), "--out", str(tmp_path / "o"), "--allow-pickle"])


def test_bad_config_key(shift, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"warmup_stepz": 1}))
    with pytest.raises(ValueError, match="warmup_stepz"):
        run(adapt_args(shift, tmp_path / "w", "--config", str(config)))


def test_a_typed_flag_wins_over_the_config_file_even_when_it_equals_its_default(shift, tmp_path):
    from diga.cli import make_parser
    from diga.engine.trainer_cli import parse_with_config

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"seed": 3, "rounds": 1, "warmup_steps": 7}))
    base = adapt_args(shift, tmp_path / "w", "--config", str(config))  # types --warmup-steps 2
    args = parse_with_config(make_parser(), base)
    assert (args.seed, args.rounds, args.warmup_steps) == (3, 1, 2)
    args = parse_with_config(make_parser(), [*base, "--seed", "0"])  # 0 is --seed's default
    assert (args.seed, args.rounds, args.warmup_steps) == (0, 1, 2)


def test_translate_trains_a_translator_adapt_can_use_and_shares_the_run_flags(shift, tmp_path):
    work = tmp_path / "translator"
    argv = ["translate", "--source", "folder", "--source-root", str(shift / "source"), "--target", "folder",
            "--target-root", str(shift / "target" / "images"), "--work-dir", str(work), "--preset", "tiny",
            "--steps", "1", "--crop-size", "32", "48", "--batch-size", "1", "--device", "cpu",
            "--num-workers", "0", "--image-every", "0", "--no-progress"]
    result = run(argv)
    assert Path(result["final"]).is_file() and result["step"] == 1
    with pytest.raises(SystemExit, match="already holds a run"):
        run(argv)  # an existing run needs --resume, as in `diga adapt`
    assert run([*argv, "--resume"])["step"] == 1


def test_cli_docs_are_generated_from_the_parsers():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_markdown(), (
        "docs/cli.md is stale: regenerate it with `python -m diga cli-docs > docs/cli.md`"
    )


def test_iou_table():
    table = format_iou_table(["a", "bb"], [1.0, 0.25], 0.625)
    assert table.splitlines()[-1].split() == ["mIoU", "62.5"]
