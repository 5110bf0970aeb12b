"""The quickstart demo in its reduced mode: the same code path as the 4-minute run, in seconds."""

from __future__ import annotations

import json

import torch

from diga.demo import VARIANT_LABELS, DemoConfig, check_expectations, format_expectations, format_table, run_demo
from tests.examples import example


def test_demo_quick_writes_everything(tmp_path):
    results = run_demo(DemoConfig.quick(work_dir=str(tmp_path), show_progress=False, seeds=(0, 1)))
    assert set(results["summary"]["miou"]) == set(VARIANT_LABELS)
    for variant, (mean, std) in results["summary"]["miou"].items():
        assert 0 <= mean <= 1 and std >= 0, variant
    table = (tmp_path / "results.md").read_text()
    for label in VARIANT_LABELS.values():
        assert label in table
    assert "+-" in table  # two seeds: mean and spread
    saved = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert saved["num_seeds"] == 2 and len(saved["expectations"]) == 3
    assert "Mean over seeds:" in table and "- warm-up beats source-only: " in table
    assert (tmp_path / "miou.png").exists() and (tmp_path / "seed0" / "demo.png").exists()
    per_seed = results["per_seed"][0]
    assert 0 <= per_seed["pseudo_label_precision"] <= 1 and 0 <= per_seed["kept_fraction"] <= 1


def test_quickstart_example_is_the_demo(tmp_path, capsys):
    example("quickstart").main(["--quick", "--work-dir", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert "| variant | target mIoU (%) |" in out and "demo.png" in out


def test_format_table_single_seed():
    table = format_table({"num_seeds": 1, "miou": {"warmup": (0.5, 0.0)}})
    assert table.splitlines()[-1] == "| DiGA warm-up | 50.0 |"


def test_expectations_checked_on_means():
    summary = {"miou": {"source_only": (0.3, 0.1), "warmup": (0.25, 0.0), "self_training": (0.4, 0.0),
                        "threshold": (0.4, 0.0)}}
    checks = {c["claim"]: c for c in check_expectations(summary)}
    assert [c["held"] for c in checks.values()] == [False, True, False]  # a tie is not a win
    assert checks["self-training beats warm-up"]["means"] == (0.4, 0.25)
    text = format_expectations(list(checks.values()))
    assert text.splitlines()[0] == "- warm-up beats source-only: NO (25.0 vs 30.0)"
    # Variants that did not run are not checked.
    assert check_expectations({"miou": {"warmup": (0.5, 0.0)}}) == []


def test_pretrained_encoder_is_trained_elsewhere_and_loaded(tmp_path):
    """The pretrained stand-in: trained on the other kinds' targets, made once, the encoder only loaded."""
    from diga.demo import ShiftExperiment
    from diga.engine.distributed import DistInfo

    cfg = DemoConfig.quick(work_dir=str(tmp_path), show_progress=False, eval_every=0)
    exp = ShiftExperiment(cfg, 0, DistInfo(0, 1, 0, torch.device("cpu")), shift="sensor")
    fresh = exp.adapter().student.model
    encoder = exp.pretrained_encoder()
    assert exp.pretrained_encoder() is encoder  # made once per experiment
    loaded = exp.adapter(pretrained=True).student.model
    for name, value in loaded.encoder.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    before = fresh.encoder.state_dict()
    assert any(v.is_floating_point() and not torch.equal(v, encoder[n]) for n, v in before.items())  # it trained
    for name, value in loaded.decoder.state_dict().items():  # decoder and head keep the fresh initialisation
        assert torch.equal(value, fresh.decoder.state_dict()[name]), name
    assert (tmp_path / "sensor" / "seed0" / "checkpoints" / "pretrain_final.pt").exists()
