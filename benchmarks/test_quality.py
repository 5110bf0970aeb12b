"""Quality: the paper's ablation on every built-in kind of domain shift, over several seeds.

For each kind of shift (``diga.data.SHIFT_KINDS``: appearance, sensor, layout,
weather): target mIoU of source-only training and of the target oracle (the
same model and budget trained on the labelled target); of the DiGA warm-up
with and without the cross-domain mix and with and without distillation, and
with the paper script's choices (target batch-norm statistics leaking into
the warm-up, teacher in train mode); the same warm-ups from an encoder
pretrained elsewhere (the stand-in for ImageNet weights, which cannot be
downloaded here: ``ShiftExperiment.pretrained_encoder``); and of self-training, offline (cached
multi-scale pseudo-labels) and online (made batch by batch), with dynamic
selection against fixed confidence thresholds and class-balanced selection,
with pseudo-label precision and kept fraction before and after selection
(the synthetic target has labels, so they can be measured), and the share of
the source-only -> oracle gap each row closes.

``DIGA_BENCH_QUALITY_SEEDS`` (default 3: seeds 0, 1, 2) and
``DIGA_BENCH_QUALITY_SHIFTS`` (comma-separated, default all) choose what the
full mode runs, and ``DIGA_BENCH_QUALITY_SKIP`` (comma-separated row names)
leaves rows out when time is short; quick mode runs one shift and one seed on
tiny data.

Seeds in parallel: ``DIGA_BENCH_QUALITY_SEED_IDS`` (comma-separated, e.g. ``1``)
runs those seeds only. Every finished seed is kept as a record,
``benchmarks/.results/quality-seeds/<mode>-<device>/<shift>/seed<N>.json``
(untracked, written atomically), and a shift's rows are assembled from every
record of that shift made by the same commit with the same settings, so one
process per seed (two on a 2-core machine) fills one table::

    DIGA_BENCH_QUALITY_SHIFTS=layout DIGA_BENCH_QUALITY_SEED_IDS=1 pytest benchmarks/test_quality.py --full &
    DIGA_BENCH_QUALITY_SHIFTS=layout DIGA_BENCH_QUALITY_SEED_IDS=2 pytest benchmarks/test_quality.py --full

A row counts the seeds that measured it (``seeds``); a skipped row is left out
of that seed only, and a later run of the same seed that measures other rows
adds them to its record. The last process to finish writes the complete table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import statistics
import subprocess
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from _harness import RESULTS_DIR, RUN_RESULTS_DIR, write_rows

from diga import AblationOptions, ClassBalancedSelector, ConfidenceThresholdSelector, MaskedConsistency
from diga.data import SHIFT_KINDS
from diga.demo import DemoConfig, ShiftExperiment
from diga.engine.checkpoint import atomic_write_json, strict_json
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
    ("warmup", "DiGA warm-up (ours: cross-domain mix + symmetric KD, CE on both views)", {}),
    ("warmup_paper_loss", "warm-up with the paper's loss (CE on the clean view only)",
     {"ablation": AblationOptions(mixed_view_ce=False)}),
    ("warmup_no_mix", "warm-up without the cross-domain mix", {"ablation": AblationOptions(cross_domain_mix=False)}),
    ("warmup_no_kd", "warm-up without KD (both views as CE augmentation)", {"kd_weight": 0.0}),
    ("warmup_no_mix_no_kd", "warm-up without mix and without KD",
     {"kd_weight": 0.0, "ablation": AblationOptions(cross_domain_mix=False)}),
    ("warmup_augment_background", "warm-up with the mix's background strongly augmented too",
     {"ablation": AblationOptions(augment_background=True)}),
    ("warmup_bn_leak", "warm-up with the paper script's target BN leak",
     {"ablation": AblationOptions(target_bn_leak=True)}),
    ("warmup_teacher_train", "warm-up with the paper script's train-mode teacher",
     {"ablation": AblationOptions(teacher_train_mode=True)}),
]
# The same from an encoder pretrained elsewhere (ShiftExperiment.pretrained_encoder: the other kinds'
# labelled targets, the stand-in for ImageNet weights): what KD is for. (name, label, stage, adapter options)
PRETRAINED_VARIANTS = [
    ("pretrained_source_only", "source-only, pretrained encoder", "source_only", {}),
    ("pretrained_warmup", "DiGA warm-up (ours), pretrained encoder", "warmup", {}),
    ("pretrained_warmup_paper_loss", "warm-up with the paper's loss (CE on the clean view only), pretrained "
     "encoder", "warmup", {"ablation": AblationOptions(mixed_view_ce=False)}),
    ("pretrained_warmup_no_kd", "warm-up without KD (CE on both views), pretrained encoder", "warmup",
     {"kd_weight": 0.0}),
]
# (name, label, adapter options factory, online)
SELECTORS = [
    ("st_dynamic", "self-training, dynamic selection read on the EMA teacher at every step (the paper's, the "
     "default), offline", dict, False),
    ("st_dynamic_fixed", "self-training, dynamic selection fixed at the stage start (select_with='labeller'), "
     "offline", lambda: {"select_with": "labeller"}, False),
    ("st_dynamic_mic", "self-training, dynamic selection + masked image consistency (MIC: 8-px blocks, MIC's 64 px "
     "of a 512 crop scaled to these 64-px-wide items; ratio 0.7, weight 1), offline",
     lambda: {"masked_consistency": MaskedConsistency(block_size=8)}, False),
    ("st_threshold_0.5", "self-training, confidence threshold 0.5, offline",
     lambda: {"selector": ConfidenceThresholdSelector(threshold=0.5)}, False),
    ("st_threshold_0.7", "self-training, confidence threshold 0.7, offline",
     lambda: {"selector": ConfidenceThresholdSelector(threshold=0.7)}, False),
    ("st_threshold_0.9", "self-training, confidence threshold 0.9, offline",
     lambda: {"selector": ConfidenceThresholdSelector(threshold=0.9)}, False),
    ("st_class_balanced", "self-training, class-balanced (CBST, 50% per class), offline",
     lambda: {"selector": ClassBalancedSelector(portion=0.5)}, False),
    ("st_dynamic_online", "self-training, dynamic selection read on the EMA teacher (the paper's, the default), "
     "online", dict, True),
    ("st_dynamic_fixed_online", "self-training, dynamic selection fixed at the stage start "
     "(select_with='labeller'), online", lambda: {"select_with": "labeller"}, True),
    ("st_threshold_0.7_online", "self-training, confidence threshold 0.7, online",
     lambda: {"selector": ConfidenceThresholdSelector(threshold=0.7)}, True),
    ("st_class_balanced_online", "self-training, class-balanced (CBST, 50% per class), online",
     lambda: {"selector": ClassBalancedSelector(portion=0.5)}, True),
]
DYNAMIC = ("st_dynamic", "st_dynamic_fixed", "st_dynamic_online", "st_dynamic_fixed_online")
THRESHOLDS = ("st_threshold_0.5", "st_threshold_0.7", "st_threshold_0.9")
NOTES = [
    "One seed = one data draw, one model initialisation, one data order. Every variant of a seed starts from "
    "the same initial weights; every self-training variant from the same warm-up (ours). Offline rows use the "
    "same cached pseudo-labels (multi-scale max fusion of the warm-up model); online rows make the same kind of "
    "labels batch by batch with a frozen copy of the warm-up model (Adapter online mode). Values are the final "
    "model's, never a best-by-validation pick.",
    "Kept fraction and precision are averaged over the self-training steps' logged batches: precision before "
    "= correct / labelled among the pseudo-labels, after = among the ones the selector kept.",
    "Pretrained rows: the encoder (not the decoder or head) comes from the same U-Net trained for the same "
    "number of steps with labels on the other three kinds' targets (other data seeds; never this shift's source or "
    "target), the stand-in for ImageNet weights, which cannot be downloaded here "
    "(diga.demo.ShiftExperiment.pretrained_encoder). Their gap closed is against the from-scratch source-only "
    "and oracle rows, like every other row.",
    "The demo's settings (diga.demo.DemoConfig): 48 x 64 items (2000 source, 1000 target, 200 validation), "
    "batch 8, 400 source-only / oracle / warm-up steps, 300 self-training steps; smp U-Net (ResNet-18 encoder, "
    "small decoder) from scratch, AdamW 1e-3, poly schedule; Fourier translation (beta 0.02: at 48 x 64 the "
    "one-pixel band, b = 1, the library's minimum; the paper's formula gives b = 0 there); the library's "
    "teacher defaults (momentum 0.999, ramp 0.1, averaged buffers) and centroid momentum 1e-3; the library's "
    "warm-up (CE on both views, where the paper trains the mixed view through KD only) unless a row names the "
    "paper's loss; the paper's selection (the EMA teacher's features at every step) unless a row names the "
    "fixed one.",
]


def _seed_ids(environ=os.environ) -> tuple[int, ...]:
    """The full mode's seeds: ``DIGA_BENCH_QUALITY_SEED_IDS`` if set, else ``range(DIGA_BENCH_QUALITY_SEEDS)``."""
    named = environ.get("DIGA_BENCH_QUALITY_SEED_IDS", "").strip()
    if not named:
        count = environ.get("DIGA_BENCH_QUALITY_SEEDS", "3")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"DIGA_BENCH_QUALITY_SEEDS must be a positive integer, got {count!r}")
        return tuple(range(int(count)))
    parts = [p.strip() for p in named.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise ValueError("DIGA_BENCH_QUALITY_SEED_IDS must be distinct non-negative integers separated by commas, "
                         f"got {named!r}")
    return tuple(int(p) for p in parts)


def _config(bench, tmp_path) -> DemoConfig:
    if bench.full:  # the demo's settings
        return DemoConfig(work_dir=str(tmp_path), seeds=_seed_ids(), eval_every=0, show_progress=False)
    return replace(DemoConfig.quick(work_dir=str(tmp_path), show_progress=False), seeds=(0,), eval_every=0)


def _commit() -> str | None:
    """The checkout's commit (records of other code are not assembled with this one's)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _settings(cfg: DemoConfig) -> dict[str, Any]:
    """What a seed's numbers depend on besides the seed and the code (paths and seed lists left out)."""
    return {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items()
            if k not in ("work_dir", "seeds", "show_progress", "device")}


def _record_dir(bench, shift: str) -> Path:
    return RUN_RESULTS_DIR / "quality-seeds" / f"{bench.mode}-{bench.device.type}" / shift


def _free_work_dir(cfg: DemoConfig) -> None:
    """Remove a stored seed's checkpoints: every stage keeps two (about 100 MB each here), so the
    seeds and kinds of a full run would otherwise pile up tens of GB under the test's tmp_path."""
    for child in Path(cfg.work_dir).iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _save_seed(directory: Path, seed: int, results: dict[str, dict[str, Any]],
               meta: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """Write (or extend) seed ``seed``'s record: rows of an earlier run of the same commit and settings
    are kept unless this run measured them again, so runs that skip different rows add up.

    Returns every record of that commit and settings by seed, this one as written (without a commit:
    this seed's alone), so the table needs no second read of the folder."""
    kept = json.loads(strict_json({name: {k: v for k, v in r.items() if k != "history"}
                                   for name, r in results.items()}))  # as a record holds it (NaN as null)
    directory.mkdir(parents=True, exist_ok=True)
    runs = _stored_seeds(directory, meta) if meta.get("commit") else {}
    runs[seed] = {**runs.get(seed, {}), **kept}
    atomic_write_json(directory / f"seed{seed}.json", {**meta, "seed": seed, "results": runs[seed]})
    return dict(sorted(runs.items()))


def _stored_seeds(directory: Path, meta: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """Every seed record in ``directory`` made by the same commit with the same settings, by seed."""
    out = {}
    for path in sorted(directory.glob("seed*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if all(record.get(k) == v for k, v in meta.items()):
            out[int(record["seed"])] = record["results"]
    return dict(sorted(out.items()))


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
    for name, _, stage, options in PRETRAINED_VARIANTS:
        if name not in skip:
            target = exp.target if stage == "warmup" else None
            results[name] = exp.train(exp.adapter(pretrained=True, **options), stage, name, cfg.source_steps,
                                      target=target)
    warm = exp.adapter()
    warm.load_state_dict(exp.state("warmup"))
    pseudo = exp.pseudo_labels(warm)
    for name, _, make, online in SELECTORS:
        if name in skip:
            continue
        _, results[name] = exp.self_training(name, exp.state("warmup"), None if online else pseudo, **make())
    return results


def _row(shift: str, name: str, label: str, runs: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """One row over the seeds that measured it (None if none did); gap closed against each seed's own baselines."""
    seeds = [seed for seed, r in runs.items() if name in r]
    if not seeds:
        return None
    per_seed = [runs[s][name] for s in seeds]
    base, oracle = [runs[s]["source_only"] for s in seeds], [runs[s]["oracle"] for s in seeds]
    values = [100 * r["miou"] for r in per_seed]
    gaps = [(r["miou"] - b["miou"]) / (o["miou"] - b["miou"]) for r, b, o in zip(per_seed, base, oracle, strict=True)
            if o["miou"] > b["miou"]]
    row = {"name": f"{shift}/{name}", "shift": shift, "variant": label, "miou": statistics.fmean(values),
           "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
           "seed_ids": seeds, "per_seed": values, "gap_closed": 100 * statistics.fmean(gaps) if gaps else None}
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
    for st in DYNAMIC:
        if f"{shift}/{st}" not in by:
            continue
        if not m(st) >= m("warmup"):
            failed.append(f"{shift}: {st} {m(st):.1f} < warm-up {m('warmup'):.1f}")
        warm = dict(zip(by[f"{shift}/warmup"]["seed_ids"], by[f"{shift}/warmup"]["per_seed"], strict=True))
        worst = min(v - warm[seed] for seed, v in zip(by[f"{shift}/{st}"]["seed_ids"], by[f"{shift}/{st}"]["per_seed"],
                                                      strict=True))
        if worst < -1.0:
            failed.append(f"{shift}: a seed's {st} ends {-worst:.1f} below its warm-up")
    if not m("warmup") >= m("source_only"):
        failed.append(f"{shift}: warm-up {m('warmup'):.1f} < source-only {m('source_only'):.1f}")
    if f"{shift}/warmup_paper_loss" in by and not m("warmup") >= m("warmup_paper_loss"):  # our difference earns it
        failed.append(f"{shift}: warm-up {m('warmup'):.1f} < the paper's loss {m('warmup_paper_loss'):.1f}")
    thresholds = [m(n) for n in THRESHOLDS if f"{shift}/{n}" in by]
    best = max(thresholds, default=float("-inf"))
    if f"{shift}/st_dynamic" in by and not m("st_dynamic") >= best:  # the default, offline as the thresholds
        failed.append(f"{shift}: st_dynamic {m('st_dynamic'):.1f} < best fixed threshold {best:.1f}")
    return failed


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ablation(bench, tmp_path):
    cfg = _config(bench, tmp_path)
    labels = {"source_only": "source-only", "oracle": "target oracle (target labels, same model and budget)",
              **{n: lbl for n, lbl, _ in WARMUP_VARIANTS}, **{n: lbl for n, lbl, _, _ in PRETRAINED_VARIANTS},
              **{n: lbl for n, lbl, _, _ in SELECTORS}}
    failed: list[str] = []
    skip = _skipped()  # this process's seeds leave them out; other seeds' records may still hold them
    meta = {"commit": _commit(), "settings": _settings(cfg)}
    for shift in _shifts(bench):
        mine: dict[int, dict[str, dict[str, Any]]] = {}  # this process's seeds (all there is without a commit)
        for seed in cfg.seeds:  # rewritten after every seed: a stopped run keeps the seeds it finished
            results = _run_seed(cfg, seed, bench.device, shift, skip)
            with _results_lock():
                stored = _save_seed(_record_dir(bench, shift), seed, results, meta)
                _free_work_dir(cfg)
                mine[seed] = stored[seed]
                runs = stored if meta["commit"] else dict(mine)
                rows = [row for name, label in labels.items() if (row := _row(shift, name, label, runs))]
                write_rows(SUITE, rows, mode=bench.mode, device=bench.device, title=TITLE, description=DESCRIPTION,
                           columns=COLUMNS, notes=NOTES, plot=PLOT)
        by = {r["name"]: r for r in rows}
        for r in rows:
            assert 0 <= r["miou"] <= 100
        for name in DYNAMIC:  # the baselines may collapse: that is their row's point
            if f"{shift}/{name}" in by:
                assert not by[f"{shift}/{name}"].get("collapse"), f"{shift}/{name} reported a collapse"
        if bench.full:
            failed += _check(by, shift)
    assert not failed, "; ".join(failed)


def test_seed_ids_and_records(tmp_path):
    """Seeds run in separate processes assemble into one table; bad seed lists are refused."""
    assert _seed_ids({}) == (0, 1, 2)
    assert _seed_ids({"DIGA_BENCH_QUALITY_SEEDS": "2"}) == (0, 1)
    assert _seed_ids({"DIGA_BENCH_QUALITY_SEEDS": "5", "DIGA_BENCH_QUALITY_SEED_IDS": "2, 0"}) == (2, 0)
    for bad in ("a", "1,1", "-1", ","):
        with pytest.raises(ValueError, match="DIGA_BENCH_QUALITY_SEED_IDS"):
            _seed_ids({"DIGA_BENCH_QUALITY_SEED_IDS": bad})
    with pytest.raises(ValueError, match="DIGA_BENCH_QUALITY_SEEDS"):
        _seed_ids({"DIGA_BENCH_QUALITY_SEEDS": "0"})

    def result(miou):
        return {"miou": miou, "iou": [miou, float("nan")], "history": [(1, miou)]}

    meta = {"commit": "abc", "settings": {"lr": 1e-3}}
    _save_seed(tmp_path, 0, {"source_only": result(0.2), "oracle": result(0.6), "warmup": result(0.3),
                             "st_dynamic": result(0.4)}, meta)
    _save_seed(tmp_path, 1, {"source_only": result(0.1), "oracle": result(0.5), "warmup": result(0.3),
                             "st_dynamic": result(0.35)}, meta)
    returned = _save_seed(tmp_path, 1, {"source_only": result(0.1), "oracle": result(0.5), "warmup": result(0.3)},
                          meta)
    assert returned == _stored_seeds(tmp_path, meta) and "st_dynamic" in returned[1]  # what the table reads
    alone = _save_seed(tmp_path / "no-commit", 0, {"warmup": result(0.3)}, {**meta, "commit": None})
    assert list(alone) == [0] and alone[0]["warmup"]["miou"] == 0.3 and "history" not in alone[0]["warmup"]
    _save_seed(tmp_path, 2, {"source_only": result(0.0), "oracle": result(0.9), "warmup": result(0.9)},
               {**meta, "commit": "other"})  # another commit's numbers stay out
    (tmp_path / "seed3.json").write_text("{torn")  # a half-written file from a killed run stays out
    runs = _stored_seeds(tmp_path, meta)
    assert sorted(runs) == [0, 1] and "history" not in runs[0]["warmup"]
    warm = _row("appearance", "warmup", "warm-up", runs)
    assert warm["seed_ids"] == [0, 1] and warm["per_seed"] == pytest.approx([30.0, 30.0])
    assert warm["gap_closed"] == pytest.approx(100 * (0.25 + 0.5) / 2)
    dynamic = _row("appearance", "st_dynamic", "dynamic", runs)  # seed 1's second run skipped it: kept
    assert dynamic["seed_ids"] == [0, 1] and dynamic["per_seed"] == pytest.approx([40.0, 35.0])
    assert _row("appearance", "st_threshold_0.7", "thr", runs) is None
    by = {r["name"]: r for r in (warm, dynamic, _row("appearance", "source_only", "src", runs))}
    assert _check(by, "appearance") == []
    by["appearance/st_dynamic"] = {**dynamic, "miou": 31.0, "per_seed": [40.0, 20.0]}
    assert any("a seed's st_dynamic ends 10.0 below" in f for f in _check(by, "appearance"))
