"""Quality: the paper's ablation on every built-in kind of domain shift, over several seeds.

For each kind of shift (``diga.data.SHIFT_KINDS``: appearance, sensor, layout,
weather): target mIoU of source-only training and of the target oracle (the
same model and budget trained on the labelled target); of the DiGA warm-up
with and without the cross-domain mix and with and without distillation, and
with the paper script's choices (target batch-norm statistics leaking into
the warm-up, teacher in train mode); and of self-training, offline (cached
multi-scale pseudo-labels) and online (made batch by batch), with dynamic
selection against fixed confidence thresholds and class-balanced selection,
with pseudo-label precision and kept fraction before and after selection
(the synthetic target has labels, so they can be measured), and the share of
the source-only -> oracle gap each row closes.

``DIGA_BENCH_QUALITY_SEEDS`` (default 3) and ``DIGA_BENCH_QUALITY_SHIFTS``
(comma-separated, default all) choose what the full mode runs, and
``DIGA_BENCH_QUALITY_SKIP`` (comma-separated row names) leaves rows out when
time is short; quick mode runs one shift and one seed on tiny data.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import statistics
from dataclasses import replace
from typing import Any

import pytest
import torch
from _harness import RESULTS_DIR, write_rows

from diga import AblationOptions, ClassBalancedSelector, ConfidenceThresholdSelector
from diga.data import SHIFT_KINDS
from diga.demo import DemoConfig, ShiftExperiment
from diga.engine.distributed import DistInfo

SUITE = "quality"
TITLE = "Quality: the paper's ablation on every built-in kind of domain shift"
DESCRIPTION = (
    "Target mIoU on SyntheticShift (8 classes; one synthetic-like source, four kinds of target: appearance = "
    "textured, desaturated, colour-cast, blurred real-like scenes; sensor = the source world through another "
    "camera (channel mixing, lower resolution, tone curve, strong noise); layout = the source rendering of "
    "another city (higher horizon, closer camera, crowds and dense traffic, few trees and poles); weather = "
    "the source world in fog or at dusk), mean and spread over seeds. 'Gap closed' = (row - source-only) / "
    "(oracle - source-only). Self-training variants start from the same DiGA warm-up "
    "(benchmarks/test_quality.py)."
)
COLUMNS = [
    ["shift", "Shift"], ["variant", "Variant"], ["miou", "Target mIoU (%)"], ["std", "+- (over seeds)"],
    ["gap_closed", "Gap closed (%)"], ["kept", "Kept fraction"],
    ["precision_before", "Pseudo-label precision before"], ["precision_after", "Precision after selection"],
    ["collapse", "Collapse flagged (share of logged steps)"], ["seeds", "Seeds"],
]
PLOT = {"kind": "barh", "label": "variant", "value": "miou", "xlabel": "target mIoU (%)"}

# (name, label, adapter options)
WARMUP_VARIANTS = [
    ("warmup", "DiGA warm-up (ours: cross-domain mix + symmetric KD)", {}),
    ("warmup_no_mix", "warm-up without the cross-domain mix", {"ablation": AblationOptions(cross_domain_mix=False)}),
    ("warmup_no_kd", "warm-up without KD (both views as CE augmentation)",
     {"kd_weight": 0.0, "ablation": AblationOptions(mixed_view_ce=True)}),
    ("warmup_kd_mixed_ce", "warm-up with KD and CE on the mixed view too",
     {"ablation": AblationOptions(mixed_view_ce=True)}),
    ("warmup_no_mix_no_kd", "warm-up without mix and without KD",
     {"kd_weight": 0.0, "ablation": AblationOptions(cross_domain_mix=False, mixed_view_ce=True)}),
    ("warmup_bn_leak", "warm-up with the paper script's target BN leak",
     {"ablation": AblationOptions(target_bn_leak=True)}),
    ("warmup_teacher_train", "warm-up with the paper script's train-mode teacher",
     {"ablation": AblationOptions(teacher_train_mode=True)}),
]
# (name, label, selector factory, online)
SELECTORS = [
    ("st_dynamic", "self-training, dynamic selection (DiGA), offline", None, False),
    ("st_threshold_0.5", "self-training, confidence threshold 0.5, offline",
     lambda: ConfidenceThresholdSelector(threshold=0.5), False),
    ("st_threshold_0.7", "self-training, confidence threshold 0.7, offline",
     lambda: ConfidenceThresholdSelector(threshold=0.7), False),
    ("st_threshold_0.9", "self-training, confidence threshold 0.9, offline",
     lambda: ConfidenceThresholdSelector(threshold=0.9), False),
    ("st_class_balanced", "self-training, class-balanced (CBST, 50% per class), offline",
     lambda: ClassBalancedSelector(portion=0.5), False),
    ("st_dynamic_online", "self-training, dynamic selection (DiGA), online", None, True),
    ("st_threshold_0.7_online", "self-training, confidence threshold 0.7, online",
     lambda: ConfidenceThresholdSelector(threshold=0.7), True),
    ("st_class_balanced_online", "self-training, class-balanced (CBST, 50% per class), online",
     lambda: ClassBalancedSelector(portion=0.5), True),
]
THRESHOLDS = ("st_threshold_0.5", "st_threshold_0.7", "st_threshold_0.9")
NOTES = [
    "One seed = one data draw, one model initialisation, one data order. Every variant of a seed starts from "
    "the same initial weights; every self-training variant from the same warm-up (ours). Offline rows use the "
    "same cached pseudo-labels (multi-scale max fusion of the warm-up model); online rows make the same kind of "
    "labels batch by batch with a frozen copy of the warm-up model (Adapter online mode). Values are the final "
    "model's, never a best-by-validation pick.",
    "Kept fraction and precision are averaged over the self-training steps' logged batches: precision before "
    "= correct / labelled among the pseudo-labels, after = among the ones the selector kept.",
    "The demo's settings (diga.demo.DemoConfig): 48 x 64 items (2000 source, 1000 target, 200 validation), "
    "batch 8, 400 source-only / oracle / warm-up steps, 300 self-training steps; smp U-Net (ResNet-18 encoder, "
    "small decoder) from scratch, AdamW 1e-3, poly schedule; Fourier translation (beta 0.02); the library's "
    "teacher defaults (momentum 0.999, ramp 0.1, averaged buffers) and centroid momentum 1e-3.",
]


def _config(bench, tmp_path) -> DemoConfig:
    if bench.full:
        seeds = tuple(range(int(os.environ.get("DIGA_BENCH_QUALITY_SEEDS", "3"))))
        return DemoConfig(work_dir=str(tmp_path), seeds=seeds, eval_every=0, show_progress=False)  # the demo's
    return replace(DemoConfig.quick(work_dir=str(tmp_path), show_progress=False), seeds=(0,), eval_every=0)


def _shifts(bench) -> tuple[str, ...]:
    if not bench.full:
        return ("appearance",)
    named = os.environ.get("DIGA_BENCH_QUALITY_SHIFTS", "")
    shifts = tuple(s.strip() for s in named.split(",") if s.strip()) or SHIFT_KINDS
    unknown = [s for s in shifts if s not in SHIFT_KINDS]
    if unknown:
        raise ValueError(f"DIGA_BENCH_QUALITY_SHIFTS must name kinds of {SHIFT_KINDS}, got {unknown}")
    return shifts


def _skipped() -> set[str]:
    skip = {s.strip() for s in os.environ.get("DIGA_BENCH_QUALITY_SKIP", "").split(",") if s.strip()}
    needed = {"source_only", "oracle", "warmup"} & skip
    if needed:
        raise ValueError(f"DIGA_BENCH_QUALITY_SKIP cannot leave out {sorted(needed)}: other rows are measured "
                         "against them")
    return skip


def _run_seed(cfg: DemoConfig, seed: int, device: torch.device, shift: str,
              skip: set[str]) -> dict[str, dict[str, Any]]:
    exp = ShiftExperiment(cfg, seed, DistInfo(0, 1, 0, device), shift=shift)
    results = {"source_only": exp.train(exp.adapter(), "source_only", "source_only", cfg.source_steps),
               "oracle": exp.oracle()}
    for name, _, options in WARMUP_VARIANTS:
        if name not in skip:
            results[name] = exp.train(exp.adapter(**options), "warmup", name, cfg.source_steps, target=exp.target)
    warm = exp.adapter()
    warm.load_state_dict(exp.state("warmup"))
    pseudo = exp.pseudo_labels(warm)
    for name, _, make, online in SELECTORS:
        if name in skip:
            continue
        kwargs = {} if make is None else {"selector": make()}
        _, results[name] = exp.self_training(name, exp.state("warmup"), None if online else pseudo, **kwargs)
    return results


def _row(shift: str, name: str, label: str, per_seed: list[dict[str, Any]],
         base: list[dict[str, Any]], oracle: list[dict[str, Any]]) -> dict[str, Any]:
    values = [100 * r["miou"] for r in per_seed]
    gaps = [(r["miou"] - b["miou"]) / (o["miou"] - b["miou"]) for r, b, o in zip(per_seed, base, oracle, strict=True)
            if o["miou"] > b["miou"]]
    row = {"name": f"{shift}/{name}", "shift": shift, "variant": label, "miou": statistics.fmean(values),
           "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
           "per_seed": values, "gap_closed": 100 * statistics.fmean(gaps) if gaps else None}
    for key in ("kept", "precision_before", "precision_after", "collapse"):
        got = [r[key] for r in per_seed if key in r and not math.isnan(r[key])]
        row[key] = statistics.fmean(got) if got else None
    return row


@contextlib.contextmanager
def _results_lock():
    """Several shifts may run in parallel processes: one writer of the results file at a time."""
    lock_dir = RESULTS_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".quality.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check(by: dict[str, dict[str, Any]], shift: str) -> list[str]:
    """The issue's targets on one shift's rows (means over seeds): the failures, as sentences."""
    def m(name):
        return by[f"{shift}/{name}"]["miou"]

    failed = []
    for st in ("st_dynamic", "st_dynamic_online"):
        if f"{shift}/{st}" not in by:
            continue
        if not m(st) >= m("warmup"):
            failed.append(f"{shift}: {st} {m(st):.1f} < warm-up {m('warmup'):.1f}")
        worst = min(a - b for a, b in zip(by[f"{shift}/{st}"]["per_seed"], by[f"{shift}/warmup"]["per_seed"],
                                          strict=True))
        if worst < -1.0:
            failed.append(f"{shift}: a seed's {st} ends {-worst:.1f} below its warm-up")
    if not m("warmup") >= m("source_only"):
        failed.append(f"{shift}: warm-up {m('warmup'):.1f} < source-only {m('source_only'):.1f}")
    thresholds = [m(n) for n in THRESHOLDS if f"{shift}/{n}" in by]
    best = max(thresholds, default=float("-inf"))
    if f"{shift}/st_dynamic" in by and not m("st_dynamic") >= best:
        failed.append(f"{shift}: dynamic {m('st_dynamic'):.1f} < best fixed threshold {best:.1f}")
    return failed


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ablation(bench, tmp_path):
    cfg = _config(bench, tmp_path)
    labels = {"source_only": "source-only", "oracle": "target oracle (target labels, same model and budget)",
              **{n: lbl for n, lbl, _ in WARMUP_VARIANTS}, **{n: lbl for n, lbl, _, _ in SELECTORS}}
    failed: list[str] = []
    skip = _skipped()
    labels = {k: v for k, v in labels.items() if k not in skip}
    for shift in _shifts(bench):
        runs = []
        for seed in cfg.seeds:  # rewritten after every seed: a stopped run keeps the seeds it finished
            runs.append(_run_seed(cfg, seed, bench.device, shift, skip))
            base, oracle = [r["source_only"] for r in runs], [r["oracle"] for r in runs]
            rows = [_row(shift, name, label, [r[name] for r in runs], base, oracle) for name, label in labels.items()]
            with _results_lock():
                write_rows(SUITE, rows, mode=bench.mode, device=bench.device, title=TITLE, description=DESCRIPTION,
                           columns=COLUMNS, notes=NOTES, plot=PLOT)
        by = {r["name"]: r for r in rows}
        for r in rows:
            assert 0 <= r["miou"] <= 100
        for name in ("st_dynamic", "st_dynamic_online"):  # the baselines may collapse: that is their row's point
            if f"{shift}/{name}" in by:
                assert not by[f"{shift}/{name}"].get("collapse"), f"{shift}/{name} reported a collapse"
        if bench.full:
            failed += _check(by, shift)
    assert not failed, "; ".join(failed)
