"""The ``diga`` command line: a temp-dir round trip on the built-in shift, errors, generated docs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diga.cli import cli_markdown, format_iou_table, main, run
from diga.data import load_label
from diga.data.shift_files import write_shift_folders

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    """64 x 64 images: narrower than the tiny preset's 64 x 96 crop (its crops are padded)."""
    return write_shift_folders(tmp_path_factory.mktemp("shift"), source_items=8, target_items=4, val_items=3,
                               size=(64, 64))


def adapt_args(shift: Path, work: Path, *extra: str) -> list[str]:
    return ["adapt", "--source-images", str(shift / "source" / "images"),
            "--source-labels", str(shift / "source" / "labels"), "--target-images", str(shift / "target" / "images"),
            "--target-val-images", str(shift / "val" / "images"), "--target-val-labels", str(shift / "val" / "labels"),
            "--num-classes", "8", "--classes", str(shift / "classes.txt"), "--work-dir", str(work),
            "--preset", "tiny", "--crop-size", "48", "64", "--model", "unet", "--encoder", "resnet18",
            "--device", "cpu", "--num-workers", "0", "--no-progress", "--warmup-steps", "2",
            "--self-training-steps", "2", *extra]


def trained_args(shift: Path, work: Path, config: Path, *extra: str) -> list[str]:
    """``adapt_args`` at the tiny preset's own 64 x 96 crop, with a --config file."""
    argv = adapt_args(shift, work, "--config", str(config), *extra)
    at = argv.index("--crop-size")
    return argv[:at] + argv[at + 3:]


@pytest.fixture(scope="module")
def trained(shift, tmp_path_factory):
    """One ``diga adapt`` run (two rounds; its seed from a --config file; 64 x 64 images, 64 x 96 crops),
    shared by the tests below; what it said on stderr."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("trained")
    config = root / "cfg.json"
    config.write_text(json.dumps({"self_training_steps": 1, "seed": 3}))
    work = root / "run"
    with contextlib.redirect_stderr(io.StringIO()) as err:
        results = run(trained_args(shift, work, config))
    return {"work": work, "results": results, "config": config, "stderr": err.getvalue()}


def test_round_trip_adapt_predict_evaluate(shift, trained, tmp_path):
    work, results = trained["work"], trained["results"]
    assert results["final"]["stage"] == "self_training_2"
    # 64 x 64 images, 64 x 96 crops: padded, and said once.
    notes = [line for line in trained["stderr"].splitlines() if line.startswith("diga:")]
    assert notes == ["diga: note: 8 of 8 --source-images images and 4 of 4 --target-images images are smaller than "
                     "the 64 x 96 training crop: their crops are padded (image with zeros, label with the ignore "
                     "index 255, never trained on)"], notes
    assert set(results["final"]["iou_by_class"]) == set((shift / "classes.txt").read_text().split())
    assert (work / "model.safetensors").exists() and (work / "config.json").exists()
    written = json.loads((work / "config.json").read_text())
    # The config file reached the run; a typed flag (--self-training-steps 2 in adapt_args) won over it.
    assert written["args"]["seed"] == 3 and written["recipe"]["self_training"]["steps"] == 2

    # Predict in another process: the model file carries everything it needs.
    out = tmp_path / "pred"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "diga", "predict", str(work / "model.safetensors"),
                           str(shift / "val" / "images"), "--out", str(out), "--overlay", "--no-progress",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = sorted(out.glob("0*[0-9].png"))
    assert [p.name for p in labels] == ["000000.png", "000001.png", "000002.png"]
    assert load_label(labels[0]).shape == (64, 64) and int(load_label(labels[0]).max()) < 8
    assert sorted(p.name for p in out.glob("*_overlay.png")) == ["000000_overlay.png", "000001_overlay.png",
                                                                 "000002_overlay.png"]

    report = tmp_path / "eval.json"
    result = run(["evaluate", str(work / "model.safetensors"), "--images", str(shift / "val" / "images"),
                  "--labels", str(shift / "val" / "labels"), "--json", str(report), "--no-progress",
                  "--device", "cpu"])
    assert json.loads(report.read_text())["miou"] == pytest.approx(result["miou"])
    # The model file's prediction equals what training evaluated (same model, same scales).
    assert result["miou"] == pytest.approx(results["final"]["miou"], abs=1e-9)

    image = shift / "val" / "images" / "000001.png"
    run(["predict", str(work / "model.safetensors"), str(image), "--out", str(tmp_path / "one"), "--no-progress"])
    assert (tmp_path / "one" / "000001.png").exists()


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*")
            if f.is_file() and f.name != ".diga.lock"}  # the lock holds the pid of whoever last held it


@pytest.mark.parametrize("change, named", [
    (["--rounds", "1"], r"--rounds is 1 but the run in .* was started with 2"),
    (["--self-training-steps", "3"], r"--self-training-steps is 3 but .* with 2"),
    (["--model", "fpn"], r"--model is 'fpn' but .* with 'unet'"),
    (["--encoder", "resnet34"], r"--encoder is 'resnet34' but .* with 'resnet18'"),
    (["--seed", "1"], r"--seed is 1 but .* with 3"),
    (["--amp"], r"--amp is True but .* with False"),
    (["--crop-size", "32", "48"], r"--crop-size is 32 48 but .* with 64 96"),
    (["--slide", "32", "32"], r"--slide is 32 32 but .* with None"),
    (["--target-images", "OTHER"], r"--target-images is '.*val/images' but .* with '.*target/images'"),
])
def test_resume_refuses_another_run_naming_the_setting_and_both_values(shift, trained, change, named, capsys):
    work = trained["work"]
    if change[-1] == "OTHER":
        change = [change[0], str(shift / "val" / "images")]
    before = _stamps(work)
    assert main([*trained_args(shift, work, trained["config"], "--resume"), *change]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(rf"diga: error: --resume: {named}", err[0]), err
    assert _stamps(work) == before  # refused before anything was written: round 2's model stays


def test_resume_may_change_logging_and_speed_flags(shift, trained):
    """--num-workers, --eval-every, --no-progress differ: the same (finished) run, re-evaluated to the same result."""
    work = trained["work"]
    argv = [a for a in trained_args(shift, work, trained["config"], "--resume") if a != "--no-progress"]
    argv[argv.index("--num-workers") + 1] = "1"
    results = run([*argv, "--eval-every", "5"])
    assert results["final"]["miou"] == pytest.approx(trained["results"]["final"]["miou"], abs=1e-9)


def test_predict_and_evaluate_slide_and_big_images_slide_by_themselves(shift, trained, tmp_path, capsys,
                                                                       monkeypatch):
    import diga.inference as inference

    model = str(trained["work"] / "model.safetensors")
    images, labels = str(shift / "val" / "images"), str(shift / "val" / "labels")
    run(["predict", model, images, "--out", str(tmp_path / "slid"), "--slide", "32", "32", "--stride", "16", "24",
         "--batch-size", "3", "--no-progress"])
    assert [load_label(p).shape for p in sorted((tmp_path / "slid").glob("*.png"))] == [(64, 64)] * 3
    result = run(["evaluate", model, "--images", images, "--labels", labels, "--slide", "40", "40", "--no-progress"])
    assert 0 <= result["miou"] <= 1
    run(["predict", model, images, "--out", str(tmp_path / "whole"), "--no-progress"])
    assert "note" not in capsys.readouterr().err
    # Above the whole-image bound (lowered here to 1000 pixels), images slide in HRDA's windows, said once
    # (here a 1024 x 1024 window holds the whole 64 x 64 image: the same labels as whole-image inference).
    monkeypatch.setattr(inference, "WHOLE_IMAGE_MAX_PIXELS", 1000)
    run(["predict", model, images, "--out", str(tmp_path / "big"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 image(s) above 1000 pixels" in err[0] and "1024 x 1024 windows" in err[0], err
    for name in ("000000.png", "000001.png", "000002.png"):
        assert torch.equal(load_label(tmp_path / "big" / name), load_label(tmp_path / "whole" / name))


def test_evaluate_with_nothing_to_score_writes_null_not_nan(shift, trained, tmp_path, capsys):
    from PIL import Image

    ignored = tmp_path / "ignored"
    ignored.mkdir()
    for f in sorted((shift / "val" / "labels").iterdir()):
        Image.new("L", (64, 64), 255).save(ignored / f.name)
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(trained["work"] / "model.safetensors"), "--images", str(shift / "val" / "images"),
                 "--labels", str(ignored), "--json", str(report), "--no-progress"]) == 0

    def refuse(constant):
        raise AssertionError(f"{report} holds {constant}: not JSON")

    data = json.loads(report.read_text(), parse_constant=refuse)
    assert data["miou"] is None and set(data["iou"].values()) == {None}
    assert capsys.readouterr().out.strip().splitlines()[-1].split() == ["mIoU", "-"]


def test_adapt_pads_images_smaller_than_the_crop_with_the_paper_preset_too(shift, tmp_path, capsys):
    """The tiny preset's run is ``trained`` (64 x 64 images, 64 x 96 crops); here the paper preset, at an 80 x 96
    crop for time only (its own 512 x 896 crop pads the same way: 2 minutes on this CPU)."""
    argv = adapt_args(shift, tmp_path / "run", "--warmup-steps", "1", "--self-training-steps", "1", "--rounds", "1")
    argv[argv.index("tiny")] = "paper"
    argv[argv.index("--crop-size") + 1: argv.index("--crop-size") + 3] = ["80", "96"]
    results = run(argv)
    assert list(results["stages"]) == ["warmup", "self_training_1"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("diga:")]
    assert err == ["diga: note: 8 of 8 --source-images images and 4 of 4 --target-images images are smaller than "
                   "the 80 x 96 training crop: their crops are padded (image with zeros, label with the ignore index "
                   "255, never trained on)"], err


@pytest.mark.parametrize(
    "args, match",
    [
        (["predict", "missing.pt", "x.png", "--out", "o"], "missing.pt"),
        (["adapt", "--source-images", "a", "--work-dir", "w"], "--source-labels"),
        (["adapt", "--source", "gta5", "--work-dir", "w"], "--source-root"),
    ],
)
def test_errors(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((SystemExit, FileNotFoundError, ValueError), match=match):
        run(args)


def test_predict_rejects_non_model_files(tmp_path):
    from PIL import Image

    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    images = str(tmp_path / "images")
    with pytest.raises(ValueError, match="refused to load model file .*bogus.pt.*pickle"):
        run(["predict", str(bogus), images, "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="not a diga model file"):
        run(["predict", str(bogus), images, "--out", str(tmp_path / "o"), "--allow-pickle"])
    assert not (tmp_path / "o").exists()


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
    for change, named in ((["--steps", "2"], r"--steps is 2 but .* with 1"), (["--seed", "4"], r"--seed is 4 but")):
        with pytest.raises(ValueError, match=rf"--resume: {named}"):  # the same run, as `diga adapt`
            run([*argv, "--resume", *change])


def test_cli_docs_are_generated_from_the_parsers():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_markdown(), (
        "docs/cli.md is stale: regenerate it with `python -m diga cli-docs > docs/cli.md`"
    )


def test_iou_table():
    table = format_iou_table(["a", "bb"], [1.0, 0.25], 0.625)
    assert table.splitlines()[-1].split() == ["mIoU", "62.5"]


def test_adapt_pads_small_images_with_the_dinov2_tiny_preset(shift, tmp_path, capsys):
    """64 x 64 folders with the ViT preset and its own model at its own 56 x 84 crop (``dinov2`` is the same
    structure with a ViT-B/14 at 504 x 896: the same path, 33 s a step here, so not a test)."""
    argv = adapt_args(shift, tmp_path / "run", "--warmup-steps", "1", "--self-training-steps", "1", "--rounds", "1")
    argv[argv.index("tiny")] = "dinov2_tiny"
    at = argv.index("--crop-size")
    del argv[at:at + 3]
    at = argv.index("--model")
    del argv[at:at + 4]  # the preset's model: a timm DINOv2 ViT through TimmSegmenter
    results = run(argv)
    assert list(results["stages"]) == ["warmup", "self_training_1"]
    assert 0 <= results["stages"]["self_training_1"]["miou"] <= 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("diga:")]
    assert any("smaller than the 56 x 84 training crop: their crops are padded" in line for line in err), err
