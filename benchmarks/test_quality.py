"""Quality: the paper's ablation on the built-in domain shift, over several seeds.

Target mIoU of source-only training; of the DiGA warm-up with and without
the cross-domain mix and with and without distillation; of the paper
script's choices (target batch-norm statistics leaking into the warm-up,
teacher in train mode) against ours; and of self-training with dynamic
selection against fixed confidence thresholds and class-balanced selection,
with pseudo-label precision and kept fraction before and after selection
(the synthetic target has labels, so they can be measured).
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import replace
from typing import Any

import pytest
import torch
from _harness import write_rows

from diga import ClassBalancedSelector, ConfidenceThresholdSelector
from diga.demo import DemoConfig, ShiftExperiment
from diga.engine.distributed import DistInfo

SUITE = "quality"
TITLE = "Quality: the paper's ablation on the built-in domain shift"
DESCRIPTION = (
    "Target mIoU on SyntheticShift (source: flat, saturated synthetic-like scenes; target: textured, "
    "desaturated, colour-cast, blurred real-like scenes; 8 classes), mean and spread over seeds. Self-training "
    "variants start from the same DiGA warm-up (benchmarks/test_quality.py)."
)
COLUMNS = [
    ["variant", "Variant"], ["miou", "Target mIoU (%)"], ["std", "+- (over seeds)"],
    ["kept", "Kept fraction"], ["precision_before", "Pseudo-label precision before"],
    ["precision_after", "Precision after selection"], ["seeds", "Seeds"],
]
PLOT = {"kind": "barh", "label": "variant", "value": "miou", "xlabel": "target mIoU (%)"}

# (name, label, stage, adapter options)
WARMUP_VARIANTS = [
    ("warmup", "DiGA warm-up (ours: cross-domain mix + symmetric KD)", {}),
    ("warmup_no_mix", "warm-up without the cross-domain mix", {"cross_domain_mix": False}),
    ("warmup_no_kd", "warm-up without KD (both views as CE augmentation)", {"kd_weight": 0.0, "mixed_view_ce": True}),
    ("warmup_no_mix_no_kd", "warm-up without mix and without KD", {"cross_domain_mix": False, "kd_weight": 0.0,
                                                                    "mixed_view_ce": True}),
    ("warmup_bn_leak", "warm-up with the paper script's target BN leak", {"target_bn_leak": True}),
    ("warmup_teacher_train", "warm-up with the paper script's train-mode teacher", {"teacher_train_mode": True}),
]
SELECTORS = [
    ("st_dynamic", "self-training, dynamic selection (DiGA)", None),
    ("st_threshold_0.5", "self-training, confidence threshold 0.5", lambda: ConfidenceThresholdSelector(0.5)),
    ("st_threshold_0.7", "self-training, confidence threshold 0.7", lambda: ConfidenceThresholdSelector(0.7)),
    ("st_threshold_0.9", "self-training, confidence threshold 0.9", lambda: ConfidenceThresholdSelector(0.9)),
    ("st_class_balanced", "self-training, class-balanced (CBST, 50% per class)", lambda: ClassBalancedSelector(0.5)),
]
NOTES = [
    "One seed = one data draw, one model initialisation, one data order. Every variant of a seed starts from "
    "the same initial weights; every self-training variant from the same warm-up (ours) and the same offline "
    "pseudo-labels (multi-scale max fusion). Values are the final model's, never a best-by-validation pick.",
    "Kept fraction and precision are averaged over the self-training steps' logged batches: precision before "
    "= correct / labelled among the offline pseudo-labels, after = among the ones the selector kept.",
    "The demo's settings (diga.demo.DemoConfig): 48 x 64 items (2000 source, 1000 target, 200 validation), "
    "batch 8, 400 source-only / warm-up steps, 300 self-training steps; smp U-Net (ResNet-18 encoder, small "
    "decoder) from scratch, AdamW 1e-3, poly schedule; Fourier translation (beta 0.02); teacher EMA 0.99 and "
    "centroid momentum 1e-3 for the short schedule.",
]


def _config(bench, tmp_path) -> DemoConfig:
    if bench.full:
        seeds = tuple(range(int(os.environ.get("DIGA_BENCH_QUALITY_SEEDS", "3"))))
        return DemoConfig(work_dir=str(tmp_path), seeds=seeds, eval_every=0, show_progress=False)  # the demo's
    return replace(DemoConfig.quick(work_dir=str(tmp_path), show_progress=False), seeds=(0,), eval_every=0)


def _run_seed(cfg: DemoConfig, seed: int, device: torch.device) -> dict[str, dict[str, Any]]:
    exp = ShiftExperiment(cfg, seed, DistInfo(0, 1, 0, device))
    results = {"source_only": exp.train(exp.adapter(), "source_only", "source_only", cfg.source_steps)}
    for name, _, options in WARMUP_VARIANTS:
        results[name] = exp.train(exp.adapter(**options), "warmup", name, cfg.source_steps, target=exp.target)
    warm = exp.adapter()
    warm.load_state_dict(exp.state("warmup"))
    pseudo = exp.pseudo_labels(warm)
    for name, _, make in SELECTORS:
        kwargs = {} if make is None else {"selector": make()}
        _, results[name] = exp.self_training(name, exp.state("warmup"), pseudo, **kwargs)
    return results


def _row(name: str, label: str, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    values = [100 * r["miou"] for r in per_seed]
    row = {"name": name, "variant": label, "miou": statistics.fmean(values),
           "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
           "per_seed": values}
    for key in ("kept", "precision_before", "precision_after"):
        got = [r[key] for r in per_seed if key in r and not math.isnan(r[key])]
        row[key] = statistics.fmean(got) if got else None
    return row


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ablation(bench, tmp_path):
    cfg = _config(bench, tmp_path)
    labels = {"source_only": "source-only", **{n: lbl for n, lbl, _ in WARMUP_VARIANTS},
              **{n: lbl for n, lbl, _ in SELECTORS}}
    runs = []
    for seed in cfg.seeds:  # rewritten after every seed: a stopped run keeps the seeds it finished
        runs.append(_run_seed(cfg, seed, bench.device))
        rows = [_row(name, label, [r[name] for r in runs]) for name, label in labels.items()]
        write_rows(SUITE, rows, mode=bench.mode, device=bench.device, title=TITLE, description=DESCRIPTION,
                   columns=COLUMNS, notes=NOTES, plot=PLOT)
    by = {r["name"]: r for r in rows}
    for r in rows:
        assert 0 <= r["miou"] <= 100
    if bench.full:  # the claims the demo makes, averaged over seeds
        assert by["warmup"]["miou"] > by["source_only"]["miou"], "warm-up must beat source-only"
        assert by["st_dynamic"]["miou"] > by["warmup"]["miou"], "self-training must beat warm-up"
        best_threshold = max(by[n]["miou"] for n in ("st_threshold_0.5", "st_threshold_0.7", "st_threshold_0.9"))
        assert by["st_dynamic"]["miou"] >= best_threshold - by["st_dynamic"]["std"], (
            "dynamic selection must be at least as good as the best fixed threshold (within its spread)"
        )
