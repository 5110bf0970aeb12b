"""The reference trainers end to end on tiny replicas of the real dataset layouts (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diga.inference import load_model
from tests.data.replicas import make_cityscapes, make_gta5, make_synthia
from tests.examples import example

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--preset", "tiny", "--device", "cpu", "--num-workers", "0", "--no-progress",
        "--warmup-steps", "3", "--self-training-steps", "2", "--model", "deeplabv2", "--encoder", "resnet18"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_gta5(root / "gta5", count=4, size=(96, 160))
    make_synthia(root / "synthia", count=4, size=(96, 160))
    make_cityscapes(root / "cityscapes", split="train", per_city=2, size=(64, 128))
    make_cityscapes(root / "cityscapes", split="val", cities=("lindau",), per_city=2, size=(64, 128))
    return root


def argv(name: str, data: Path, work: Path, *extra: str) -> list[str]:
    source = "gta5" if name == "gta_to_cityscapes" else "synthia"
    return ["--source-root", str(data / source), "--target-root", str(data / "cityscapes"),
            "--work-dir", str(work), *FAST, *extra]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("name, classes", [("gta_to_cityscapes", 19), ("synthia_to_cityscapes", 16)])
def test_trainer_runs_every_stage(data, tmp_path, name, classes):
    work = tmp_path / "run"
    select = "labeller" if classes == 16 else "teacher"  # one trainer each way; the flag reaches the recipe
    flags = ["--select-with", select, "--mixed-view-ce"] if classes == 16 else []
    results = example(name).main(argv(name, data, work, *flags))
    assert list(results["stages"]) == ["warmup", "self_training_1", "self_training_2"]
    for stage in results["stages"].values():
        assert len(stage["iou"]) == classes and 0 <= stage["miou"] <= 1
    if classes == 16:
        assert "miou_subset" in results["final"]  # SYNTHIA's 13-class mIoU
    on_disk = json.loads((work / "results.json").read_text())
    assert on_disk["final"]["stage"] == "self_training_2" and "versions" in on_disk["config"]
    recipe = json.loads((work / "config.json").read_text())["recipe"]
    assert recipe["num_classes"] == classes and recipe["select_with"] == select
    assert recipe["mixed_view_ce"] == (classes == 16)  # the paper's loss unless the flag asks for CE on both views
    names = sorted(p.relative_to(work / "pseudo_round2").as_posix()
                   for p in (work / "pseudo_round2").rglob("*.png"))
    assert len(names) == 4 and names[0].startswith("aachen/")
    for stage in ("warmup", "self_training_1", "self_training_2"):
        assert (work / "checkpoints" / f"{stage}_final.pt").exists()
    model, meta = load_model(work / "model.safetensors")
    assert len(meta["classes"]) == classes and meta["extra"]["stage"] == "self_training_2"
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} >= {"warmup", "self_training_1", "self_training_2"}
    assert any((work / "images").iterdir()) and (work / "miou.png").exists()


def test_existing_run_needs_resume(data, tmp_path):
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "warmup_last.pt").write_bytes(b"x")
    with pytest.raises(SystemExit, match="--resume"):
        example("gta_to_cityscapes").main(argv("gta_to_cityscapes", data, work))


def test_torchrun_two_processes(data, tmp_path):
    work = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "examples" / "gta_to_cityscapes.py"),
           *argv("gta_to_cityscapes", data, work, "--rounds", "1")]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads((work / "results.json").read_text())
    assert results["config"]["world_size"] == 2 and results["final"]["stage"] == "self_training_1"
    assert len(list((work / "pseudo_round1").rglob("*.png"))) == 4  # both ranks' shards written


def test_missing_and_corrupt_files(data, tmp_path):
    main = example("gta_to_cityscapes").main
    with pytest.raises(FileNotFoundError, match="nowhere"):
        main(argv("gta_to_cityscapes", data, tmp_path / "a") + ["--source-root", str(tmp_path / "nowhere")])
    broken = tmp_path / "broken"
    make_gta5(broken, count=4, size=(96, 160))
    victim = sorted((broken / "images").iterdir())[0]
    victim.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=victim.name):
        main(argv("gta_to_cityscapes", data, tmp_path / "b") + ["--source-root", str(broken)])


@pytest.mark.parametrize("name", ["gta_to_cityscapes", "synthia_to_cityscapes"])
def test_help_documents_defaults_and_paper_values(name, capsys):
    with pytest.raises(SystemExit):
        example(name).main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--source-root", "--target-root", "--work-dir", "--preset", "--resume", "--model",
                 "--encoder", "--pretrained", "--device", "--seed", "--amp"):
        assert flag in text
    assert "paper:" in text and "default:" in text


def test_default_workers_fit_the_machine():
    import os

    from diga.engine.trainer_cli import resolve_workers

    assert resolve_workers(None) == min(4, os.cpu_count() or 1)
    assert resolve_workers(0) == 0 and resolve_workers(6) == 6
    with pytest.raises(ValueError, match="num-workers"):
        resolve_workers(-1)


def test_recipe_selection_reaches_the_adapter():
    from dataclasses import replace

    from diga import AblationOptions
    from diga.engine.pipeline import build_adapter
    from diga.engine.recipes import GTA5_PAPER
    from diga.models import create_model

    def model():
        return create_model("unet", num_classes=19, encoder_name="resnet18", encoder_depth=3,
                            decoder_channels=[16, 8, 8])

    assert GTA5_PAPER.select_with == "teacher"  # the paper's recipe keeps the paper's selection
    assert build_adapter(model(), GTA5_PAPER).select_with == "teacher"
    assert build_adapter(model(), replace(GTA5_PAPER, select_with="labeller")).select_with == "labeller"
    # The paper's warm-up loss (CE on the clean view only), whatever ablation the caller passes along.
    assert not GTA5_PAPER.mixed_view_ce and not build_adapter(model(), GTA5_PAPER).ablation.mixed_view_ce
    leak = AblationOptions(target_bn_leak=True)
    built = build_adapter(model(), replace(GTA5_PAPER, mixed_view_ce=True), ablation=leak).ablation
    assert built == AblationOptions(target_bn_leak=True, mixed_view_ce=True)
