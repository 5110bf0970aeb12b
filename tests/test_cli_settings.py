"""``diga generalize``, ``diga adapt --setting ssl`` and ``diga evaluate`` on several folders, as a user runs
them (:func:`diga.cli.main`, the console script's function): results, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diga.cli import main, target_names
from diga.data.shift_files import write_shift_folders

FAST = ["--preset", "tiny", "--device", "cpu", "--num-workers", "0", "--no-progress", "--warmup-steps", "2",
        "--model", "unet", "--encoder", "resnet18", "--crop-size", "48", "64"]


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    root = write_shift_folders(tmp_path_factory.mktemp("shift"), source_items=6, target_items=4, val_items=3,
                               size=(48, 64))
    shutil.copytree(root / "val", root / "other")  # a second labelled domain (here: the same images)
    return root


def generalize_args(shift: Path, work: Path, *extra: str) -> list[str]:
    return ["generalize", "--source-images", str(shift / "source" / "images"), "--source-labels",
            str(shift / "source" / "labels"), "--num-classes", "8", "--classes", str(shift / "classes.txt"),
            "--val-images", str(shift / "val" / "images"), "--val-labels", str(shift / "val" / "labels"),
            "--val-images", str(shift / "other" / "images"), "--val-labels", str(shift / "other" / "labels"),
            "--work-dir", str(work), *FAST, *extra]


def one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_generalize_evaluates_every_folder_and_evaluate_agrees(shift, tmp_path, capsys):
    work = tmp_path / "dg"
    assert main(generalize_args(shift, work)) == 0
    results = json.loads((work / "results.json").read_text())
    final = results["final"]
    assert list(final["targets"]) == ["val", "other"] and final["stage"] == "warmup"
    assert final["mean_miou"] == pytest.approx(sum(r["miou"] for r in final["targets"].values()) / 2)
    assert results["config"]["recipe"]["setting"] == "dg" and not list(work.glob("pseudo_round*"))
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(work / "model.safetensors"), "--images", str(shift / "val" / "images"), "--labels",
                 str(shift / "val" / "labels"), "--images", str(shift / "other" / "images"), "--labels",
                 str(shift / "other" / "labels"), "--json", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "== val" in table and "mean" in table.splitlines()[-1]
    scored = json.loads(out.read_text())
    assert scored["mean_miou"] == pytest.approx(final["mean_miou"])
    for name in ("val", "other"):
        assert scored["targets"][name]["miou"] == pytest.approx(final["targets"][name]["miou"])
    one = tmp_path / "one.json"
    main(["evaluate", str(work / "model.safetensors"), "--images", str(shift / "val" / "images"), "--labels",
          str(shift / "val" / "labels"), "--json", str(one), "--no-progress"])
    assert "targets" not in json.loads(one.read_text())  # one folder: the single-set result, as before


def test_generalize_and_evaluate_refuse_unpaired_folders(shift, tmp_path, capsys):
    argv = generalize_args(shift, tmp_path / "w")
    cut = len(argv) - argv[::-1].index("--val-labels") - 1  # drop the last --val-labels pair
    code = main(argv[:cut] + argv[cut + 2:])
    one_line_error(capsys, code, "--val-images", "--val-labels")
    assert not (tmp_path / "w").exists()
    code = main(["evaluate", str(tmp_path / "m.safetensors"), "--images", "a", "--images", "b", "--labels", "c"])
    one_line_error(capsys, code, "--images", "--labels")


def test_generalize_has_no_self_training_flags(shift, tmp_path, capsys):
    code = main(generalize_args(shift, tmp_path / "w", "--rounds", "1"))
    one_line_error(capsys, code, "--rounds")


def test_adapt_semi_supervised_on_folders(shift, tmp_path):
    work = tmp_path / "ssl"
    argv = ["adapt", "--setting", "ssl", "--source-images", str(shift / "val" / "images"), "--source-labels",
            str(shift / "val" / "labels"), "--target-images", str(shift / "target" / "images"), "--num-classes", "8",
            "--work-dir", str(work), *FAST, "--self-training-steps", "2"]
    assert main(argv) == 0
    config = json.loads((work / "config.json").read_text())
    assert config["recipe"]["setting"] == "ssl" and config["recipe"]["optim"]["head_lr_mult"] == 1.0
    assert len(list((work / "pseudo_round1").rglob("*.png"))) == 4
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any(r.get("stage") == "self_training_1" and "ce_mix" in r for r in records)


def test_adapt_semi_supervised_refuses_named_datasets(tmp_path, capsys):
    code = main(["adapt", "--setting", "ssl", "--source", "gta5", "--source-root", str(tmp_path), "--target-root",
                 str(tmp_path), "--work-dir", str(tmp_path / "w")])
    one_line_error(capsys, code, "--setting ssl")


def test_adapt_semi_supervised_names_a_preset_it_lacks(shift, tmp_path, capsys):
    code = main(["adapt", "--setting", "ssl", "--source-images", str(shift / "val" / "images"), "--source-labels",
                 str(shift / "val" / "labels"), "--target-images", str(shift / "target" / "images"), "--num-classes",
                 "8", "--preset", "dinov2", "--work-dir", str(tmp_path / "w")])
    one_line_error(capsys, code, "--preset dinov2", "cityscapes_ssl")
    assert not (tmp_path / "w").exists()


def test_target_names_are_distinct():
    assert target_names(["a/images", "b/images", "a/images"]) == ["a", "b", "a_2"]
