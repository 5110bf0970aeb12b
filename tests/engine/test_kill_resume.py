"""SIGKILL at every stage, ``--resume``: the same final weights, pseudo-labels and results as an uninterrupted run.

One ``diga adapt`` run is killed at six points in turn (the warm-up first: this test replaces the
warm-up-only kill test the reference trainers had; each resume runs until
the next point), then resumed to the end; the translator trainer likewise.
Every run is a subprocess with one thread, so CPU results are bit for bit.
The kills come from ``tests/engine/_kill_worker.py`` (the process SIGKILLs
itself at the named point: exit status -9 proves the point was reached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diga.data import load_label
from diga.data.shift_files import write_shift_folders
from diga.engine.checkpoint import load_checkpoint
from tests.test_cli import adapt_args

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "engine" / "_kill_worker.py"
VAL_ITEMS = 3


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def launch(program: str, argv: list[str], point: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), point, "--", program, *argv] if point else (
        [sys.executable, "-m", "diga", *argv] if program == "diga"
        else [sys.executable, str(ROOT / "examples" / "train_translator.py"), *argv])
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    return write_shift_folders(tmp_path_factory.mktemp("shift"), source_items=4, target_items=4,
                               val_items=VAL_ITEMS, size=(48, 64))


def adapt(shift: Path, work: Path, *extra: str) -> list[str]:
    return adapt_args(shift, work, "--warmup-steps", "3", "--self-training-steps", "3", *extra)


def ckpt(work: Path, name: str) -> Path:
    return work / "checkpoints" / name


# (what is killed, kill point, what the killed run left behind): in the order a run meets them.
KILLS = [
    ("warm-up step 3", "after-checkpoint:warmup_last.pt",
     lambda w: load_checkpoint(ckpt(w, "warmup_last.pt"))["step"] == 2 and not ckpt(w, "warmup_final.pt").exists()),
    ("pseudo-label generation, round 1", "pseudo-label:3",
     lambda w: len(list((w / "pseudo_round1").glob("*.png"))) == 3
     and not _decodes(w / "pseudo_round1" / "000002.png")),
    ("centroid initialisation, round 1", "centroids:2",
     lambda w: len(list((w / "pseudo_round1").glob("*.png"))) == 4 and not ckpt(w, "centroids_round1.pt").exists()),
    ("a checkpoint write (self-training 1, before the rename)", "checkpoint-write:self_training_1_last.pt",
     lambda w: not ckpt(w, "self_training_1_last.pt").exists()
     and len(list((w / "checkpoints").glob(".self_training_1_last.pt.*.tmp"))) == 1),
    # Resumed here: the warm-up's evaluation (3 batches), self-training 1, and its evaluation, killed at batch 2.
    ("evaluation after self-training 1", f"evaluate:{VAL_ITEMS + 2}",
     lambda w: ckpt(w, "self_training_1_final.pt").exists()
     and "self_training_1" not in json.loads((w / "results.json").read_text())["stages"]),
    ("self-training round 2, step 3", "after-checkpoint:self_training_2_last.pt",
     lambda w: load_checkpoint(ckpt(w, "self_training_2_last.pt"))["step"] == 2
     and not ckpt(w, "self_training_2_final.pt").exists()),
]


def _decodes(path: Path) -> bool:
    try:
        load_label(path)
    except ValueError:
        return False
    return True


def assert_same_tensors(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}: {key}"


def test_killed_at_every_stage_resumes_to_the_uninterrupted_result(shift, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = launch("diga", adapt(shift, full))
    assert proc.returncode == 0, proc.stderr[-3000:]

    for i, (what, point, left) in enumerate(KILLS):
        proc = launch("diga", adapt(shift, killed, *(["--resume"] if i else [])), point)
        assert proc.returncode == -9, f"{what}: not killed at {point} (status {proc.returncode}): {proc.stderr[-3000:]}"
        assert left(killed), f"{what}: the killed run did not leave what {point} should"
    proc = launch("diga", adapt(shift, killed, "--resume"))
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The same weights at every stage's end, the same centroids, pseudo-labels, model file and results.
    for stage in ("warmup", "self_training_1", "self_training_2"):
        assert_same_tensors(load_checkpoint(ckpt(full, f"{stage}_final.pt"))["adapter"],
                            load_checkpoint(ckpt(killed, f"{stage}_final.pt"))["adapter"], stage)
    for r in (1, 2):
        name = f"centroids_round{r}.pt"
        assert_same_tensors(load_checkpoint(ckpt(full, name)), load_checkpoint(ckpt(killed, name)), name)
        files = sorted(p.name for p in (full / f"pseudo_round{r}").glob("*.png"))
        assert files == sorted(p.name for p in (killed / f"pseudo_round{r}").glob("*.png")) and len(files) == 4
        for f in files:  # the half-written 000002.png of round 1 was written again, not reused
            assert torch.equal(load_label(full / f"pseudo_round{r}" / f),
                               load_label(killed / f"pseudo_round{r}" / f)), f"pseudo_round{r}/{f}"
    assert_same_tensors(load_file(full / "model.safetensors"), load_file(killed / "model.safetensors"), "model")
    a, b = (json.loads((w / "results.json").read_text()) for w in (full, killed))
    assert list(a["stages"]) == list(b["stages"]) == ["warmup", "self_training_1", "self_training_2"]
    for stage in a["stages"]:
        assert a["stages"][stage]["iou"] == b["stages"][stage]["iou"], stage
    assert a["final"]["miou"] == b["final"]["miou"]


def translator(shift: Path, work: Path) -> list[str]:
    return ["--source", "folder", "--source-root", str(shift / "source"), "--target", "folder",
            "--target-root", str(shift / "target" / "images"), "--work-dir", str(work), "--preset", "tiny",
            "--steps", "3", "--crop-size", "32", "48", "--batch-size", "1", "--device", "cpu", "--num-workers", "0",
            "--log-every", "1", "--checkpoint-every", "2", "--image-every", "0", "--no-progress"]


def test_translator_killed_mid_training_resumes_to_the_uninterrupted_result(shift, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = launch("translator", translator(shift, full))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch("translator", translator(shift, killed), "after-checkpoint:translator_last.pt")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert load_checkpoint(ckpt(killed, "translator_last.pt"))["step"] == 2
    assert not ckpt(killed, "translator_final.pt").exists()
    proc = launch("translator", [*translator(shift, killed), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (load_checkpoint(ckpt(w, "translator_final.pt")) for w in (full, killed))
    assert_same_tensors(a["generator"], b["generator"], "translator_final")
    a, b = (load_checkpoint(ckpt(w, "translator_last.pt"))["models"] for w in (full, killed))
    for part in ("generators", "critics"):
        assert_same_tensors(a[part], b[part], part)
