"""The generalisation and semi-supervised reference trainers end to end on tiny replicas (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diga.inference import load_model
from tests.data.replicas import make_bdd100k, make_cityscapes, make_gta5, make_mapillary
from tests.examples import example

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--preset", "tiny", "--device", "cpu", "--num-workers", "0", "--no-progress", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainers")
    make_gta5(root / "gta5", count=3, size=(96, 160))
    make_cityscapes(root / "cityscapes", split="train", per_city=4, size=(64, 128))
    make_cityscapes(root / "cityscapes", split="val", cities=("lindau",), per_city=1, size=(64, 128))
    make_bdd100k(root / "bdd", count=2, size=(40, 64))
    make_mapillary(root / "mapillary", count=2)
    return root


def test_generalization_trainer(data, tmp_path):
    work = tmp_path / "dg"
    argv = ["--source-root", str(data / "gta5"), "--cityscapes-root", str(data / "cityscapes"), "--bdd-root",
            str(data / "bdd"), "--mapillary-root", str(data / "mapillary"), "--work-dir", str(work), *FAST]
    results = example("gta_generalization").main(argv)
    assert list(results["stages"]) == ["warmup"]
    final = results["final"]
    assert list(final["targets"]) == ["cityscapes", "bdd100k", "mapillary"]
    assert final["mean_miou"] == pytest.approx(sum(r["miou"] for r in final["targets"].values()) / 3)
    assert final["targets"]["bdd100k"]["images"] == 2 and final["targets"]["mapillary"]["size"] == [64, 128]
    config = json.loads((work / "config.json").read_text())
    assert config["recipe"]["setting"] == "dg" and config["settings"]["--model"] == "deeplabv2"
    assert not list(work.glob("pseudo_round*")) and not list((work / "checkpoints").glob("centroids*"))
    model, meta = load_model(work / "model.safetensors")
    assert len(meta["classes"]) == 19
    with pytest.raises(SystemExit):  # no self-training flags in this setting
        example("gta_generalization").main([*argv, "--rounds", "1"])


def test_generalization_needs_a_target(data, tmp_path):
    with pytest.raises(ValueError, match="--cityscapes-root"):
        example("gta_generalization").main(["--source-root", str(data / "gta5"), "--work-dir", str(tmp_path), *FAST])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="bdd_root"):
        example("gta_generalization").main(["--source-root", str(data / "gta5"), "--bdd-root", str(tmp_path / "empty"),
                                            "--work-dir", str(tmp_path / "w"), *FAST])


def test_semi_supervised_trainer(data, tmp_path):
    work = tmp_path / "ssl"
    argv = ["--root", str(data / "cityscapes"), "--split", "1/4", "--work-dir", str(work), *FAST,
            "--self-training-steps", "2", "--model", "unet", "--encoder", "resnet18"]
    results = example("cityscapes_semi_supervised").main(argv)
    assert list(results["stages"]) == ["warmup", "self_training_1"]
    labelled = (work / "split" / "labelled.txt").read_text().split()
    unlabelled = (work / "split" / "unlabelled.txt").read_text().split()
    assert len(labelled) == 2 and len(unlabelled) == 6
    pseudo = sorted(p.relative_to(work / "pseudo_round1").with_suffix("").as_posix()
                    for p in (work / "pseudo_round1").rglob("*.png"))
    assert pseudo == sorted(unlabelled)  # pseudo-labels for the unlabelled images only
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any(r.get("stage") == "self_training_1" and "ce_mix" in r for r in records)
    config = json.loads((work / "config.json").read_text())
    assert config["recipe"]["setting"] == "ssl" and config["recipe"]["optim"]["head_lr_mult"] == 1.0


def test_semi_supervised_flags(data, tmp_path):
    ssl = example("cityscapes_semi_supervised")
    for bad in ("2", "0", "x"):
        with pytest.raises(SystemExit):
            ssl.main(["--root", str(data / "cityscapes"), "--split", bad, "--work-dir", str(tmp_path), *FAST])
    with pytest.raises(SystemExit):  # one way to choose the split
        ssl.main(["--root", str(data / "cityscapes"), "--split", "1/8", "--labelled-list", "x.txt", *FAST])


def test_example_scripts_end_a_bad_flag_in_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "examples" / "cityscapes_semi_supervised.py"), "--root",
                          str(tmp_path), "--split", "3/2"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "--split" in lines[0] and "Traceback" not in run.stderr
