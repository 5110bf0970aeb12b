"""Translator training: an end-to-end run on dataset replicas, kill-and-resume, and the example script."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import diga
from diga.data import GTA5, Cityscapes, PairedCompose, RandomHorizontalFlip, RandomScaleCrop
from diga.engine.checkpoint import load_checkpoint
from diga.engine.log import JsonlLogger
from diga.engine.stages import stage_checkpoint
from diga.engine.translator_training import TranslatorConfig, train_translator
from diga.translation import LearnedTranslator
from tests.data.replicas import make_cityscapes, make_gta5, one_thread

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_translator.py"
TINY = TranslatorConfig.preset("tiny")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    return make_gta5(root / "gta5", count=4), make_cityscapes(root / "cityscapes")


def datasets(replicas, crop=(32, 64)):
    gta, city = replicas
    t = PairedCompose([RandomScaleCrop(crop, scale=(0.7, 1.0)), RandomHorizontalFlip()])
    return GTA5(gta.root, transform=t), Cityscapes(city.root, "train", labels=False, transform=t, seed=1)


def run(replicas, work_dir, *, steps=4, stop_after=None, **kw):
    source, target = datasets(replicas)
    kw = {"config": TINY, "batch_size": 2, "seed": 5, "device": "cpu", "checkpoint_every": 2,
          "show_progress": False, "log_every": 1, **kw}
    return train_translator(source, target, work_dir=work_dir, steps=steps, stop_after=stop_after, **kw)


def test_end_to_end_run(replicas, tmp_path):
    res = run(replicas, tmp_path, steps=3, image_every=2)
    final = Path(res["final"])
    assert res["step"] == 3 and final == stage_checkpoint(tmp_path, "translator", "final") and final.exists()
    records = JsonlLogger.read(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["stage"] == "translator" for r in records)
    for key in ("loss_g", "loss_d", "adversarial", "cycle", "self", "edge", "lr"):
        assert all(torch.isfinite(torch.tensor(r[key])) for r in records), key
    assert "perceptual" not in records[0]  # off without a network
    assert records[-1]["lr"] == 0.0  # poly decay reaches 0 at the last step
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["translator_000001.png",
                                                                         "translator_000002.png"]
    saved = json.loads((tmp_path / "translator_config.json").read_text())
    assert saved["config"]["cycle_weight"] == 10.0 and saved["steps"] == 3

    translator = LearnedTranslator.from_checkpoint(final)
    assert isinstance(translator, diga.Translator) and translator.generator.config["dim"] == TINY.dim
    x = torch.rand(2, 3, 32, 64)
    assert translator(x, torch.rand(1, 3, 32, 64)).shape == x.shape
    # the last checkpoint (everything needed to resume) also loads as a translator
    last = LearnedTranslator.from_checkpoint(stage_checkpoint(tmp_path, "translator", "last"))
    torch.testing.assert_close(last(x), translator(x))
    # training moved the weights away from the seeded initialisation
    init = TranslatorConfig.preset("tiny")
    from diga.translation import TranslatorGenerator

    fresh = TranslatorGenerator(dim=init.dim, n_res=init.n_res, generator=torch.Generator().manual_seed(5))
    trained = translator.generator.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())


def test_kill_and_resume_equals_uninterrupted(replicas, tmp_path):
    run(replicas, tmp_path / "full", steps=4)
    res = run(replicas, tmp_path / "killed", steps=4, stop_after=3)  # killed after 3 steps, checkpoint at 2
    assert res.get("stopped") and not stage_checkpoint(tmp_path / "killed", "translator", "final").exists()
    run(replicas, tmp_path / "killed", steps=4)
    full = load_checkpoint(stage_checkpoint(tmp_path / "full", "translator", "last"))
    resumed = load_checkpoint(stage_checkpoint(tmp_path / "killed", "translator", "last"))
    for part in ("generators", "critics"):
        for (k, a), b in zip(full["models"][part].items(), resumed["models"][part].values(), strict=True):
            assert torch.equal(a, b), f"{part}.{k}"
    a = load_checkpoint(stage_checkpoint(tmp_path / "full", "translator", "final"))["generator"]
    b = load_checkpoint(stage_checkpoint(tmp_path / "killed", "translator", "final"))["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in JsonlLogger.read(tmp_path / "killed" / "log.jsonl")]
    assert steps == [1, 2, 3, 4]  # the killed run's step-3 record was dropped on resume


class _Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return [f, torch.nn.functional.avg_pool2d(f, 2)]


def test_perceptual_net_and_amp(replicas, tmp_path):
    net = _Features()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TranslatorConfig.preset("tiny", perceptual_layer_weights=(0.5, 1.0))
    run(replicas, tmp_path, steps=1, config=cfg, perceptual_net=net, amp="bf16")
    record = JsonlLogger.read(tmp_path / "log.jsonl")[-1]
    assert record["perceptual"] > 0 and torch.isfinite(torch.tensor(record["loss_g"]))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_bad_inputs(replicas, tmp_path):
    source, target = datasets(replicas)
    with pytest.raises(ValueError, match="`lr`"):
        TranslatorConfig(lr=0.0)
    with pytest.raises(ValueError, match="`name`"):
        TranslatorConfig.preset("huge")
    with pytest.raises(ValueError, match="`steps`"):
        train_translator(source, target, work_dir=tmp_path, config=TINY, steps=0, device="cpu")
    with pytest.raises(ValueError, match="'label'"):  # the edge loss needs source labels
        train_translator(target, target, work_dir=tmp_path / "a", config=TINY, steps=1, device="cpu",
                         show_progress=False)
    odd_source, odd_target = datasets(replicas, crop=(30, 62))
    with pytest.raises(ValueError, match="divisible by"):
        train_translator(odd_source, odd_target, work_dir=tmp_path / "b", config=TINY, steps=1, device="cpu",
                         show_progress=False)
    # without the edge term, an unlabelled source trains
    res = train_translator(target, target, work_dir=tmp_path / "c", steps=1, device="cpu",
                           show_progress=False, config=TranslatorConfig.preset("tiny", edge_weight=0.0))
    assert Path(res["final"]).exists()


def test_example_help_documents_defaults():
    parse_args = runpy.run_path(str(SCRIPT), run_name="train_translator_example")["parse_args"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(out.getvalue().split())
    for flag in ("--source-root", "--source", "--target-root", "--target", "--work-dir", "--steps",
                 "--crop-size", "--batch-size", "--device", "--seed", "--amp", "--resume", "--preset",
                 "--perceptual-weights"):
        assert flag in text, flag
    assert text.count("paper:") >= 10 and "50000" in text and "512 896" in text


def _torchrun_example(replicas, work_dir, *extra):
    gta, city = replicas
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [*launch, str(SCRIPT), "--source", "gta5",
           "--source-root", str(gta.root), "--target", "cityscapes", "--target-root", str(city.root),
           "--work-dir", str(work_dir), "--preset", "tiny", "--steps", "2", "--device", "cpu",
           "--num-workers", "0", "--no-progress", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_example_tiny_run_under_torchrun(replicas, tmp_path):
    """The script's ``--preset tiny`` run on 2 ranks x 1 image equals 1 process x 2 images in-process:
    same items (rank-sharded step sampling), per-sample normalisation, mean losses, averaged gradients."""
    proc = _torchrun_example(replicas, tmp_path / "two", "--batch-size", "1")
    final = stage_checkpoint(tmp_path / "two", "translator", "final")
    assert str(final) in proc.stdout
    translator = LearnedTranslator.from_checkpoint(final)
    assert isinstance(translator, diga.Translator)
    assert translator(torch.rand(1, 3, 32, 64)).shape == (1, 3, 32, 64)
    two = load_checkpoint(stage_checkpoint(tmp_path / "two", "translator", "last"))
    assert two["world_size"] == 2 and two["run_config"]["preset"] == "tiny"

    run(replicas, tmp_path / "one", steps=2, seed=0)  # the script's datasets and seed, one process
    one = load_checkpoint(stage_checkpoint(tmp_path / "one", "translator", "last"))
    for part in ("generators", "critics"):
        for k, a in one["models"][part].items():
            if part == "generators" and k.endswith("conv.bias") and ".out." not in k:
                # biases before instance norm get no gradient (the norm removes them); Adam turns
                # their round-off gradients into +-lr steps of arbitrary sign
                continue
            # weights whose gradient is itself round-off (a few in 10^4) may differ by a fraction of one
            # Adam step (lr); a wrong item, scale or average moves most of a tensor by about lr
            diff = (two["models"][part][k] - a).abs()
            assert diff.max() <= TINY.lr, f"{part}.{k}: {diff.max():.2e} > lr {TINY.lr}"
            assert (diff > 1e-5).float().mean() <= 1e-3, f"{part}.{k}: {(diff > 1e-5).sum()} of {diff.numel()} differ"
