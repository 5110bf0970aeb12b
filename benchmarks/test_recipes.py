"""Recipe timing: each trainer's stages at the paper's crop and batch, on stand-in data of the real sizes.

Full mode builds synthetic stand-ins with the real image sizes (GTA5 1914x1052,
SYNTHIA 1280x760, Cityscapes 2048x1024, in the real folder layouts), runs the
paper's recipe (DeepLabV2 ResNet-101, batch composition, crops, augmentation,
Fourier translation) for a number of iterations per stage, with and without
``--amp``, and reports iterations per second, peak memory and the projected
wall time of the whole recipe (warm-up, two rounds of pseudo-labels, centroids
and self-training over Cityscapes' 2975 training images, evaluation on its
500 validation images). Quick mode runs the tiny preset on small stand-ins.

``test_dinov2_recipe_timing`` does the same for the ``dinov2`` preset (DINOv2
ViT-B/14, 504 x 896 crops, AdamW with layer decay, pseudo-labels and evaluation
in sliding windows); quick mode runs ``dinov2_tiny``. ``test_dinov2_cpu_step``
(full mode on the CPU only) times one warm-up step of ViT-B/14 at the crop with
one source and one target image, for machines without a GPU.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import replace

import pytest
import torch
from _harness import MIB, sync, write_rows

from diga import FourierTranslator, create_model
from diga.engine.data_specs import benchmark_data
from diga.engine.distributed import DistInfo
from diga.engine.pipeline import build_adapter
from diga.engine.recipes import get_recipe, recipe_model
from diga.engine.sampling import infinite_loader
from diga.engine.stages import (
    as_batch,
    autocast_context,
    concat_batches,
    generate_pseudo_labels,
    make_optimizer,
    optimizer_step,
    run_step,
)
from diga.inference import predict_logits

SUITE = "recipes"
TITLE = "Recipes: iterations per second, peak memory, projected wall time"
DESCRIPTION = (
    "Each trainer's stages at the paper's crop and batch on stand-in data of the real image sizes "
    "(benchmarks/test_recipes.py). Projected time = warm-up + 2 x (pseudo-labels and centroids over "
    "2975 Cityscapes training images + self-training) + evaluation on 500 validation images."
)
COLUMNS = [
    ["benchmark", "Benchmark"], ["what", "Stage"], ["model", "Model"], ["amp", "AMP"], ["batch", "Batch"],
    ["it_per_s", "it/s"], ["s_per_it", "s/it"], ["peak_mib", "Peak memory (MiB)"], ["memory_kind", "Memory"],
    ["iterations_timed", "Iterations timed"],
    ["projected_h", "Projected full recipe (h)"],
]
NOTES = [
    "Peak memory on CUDA: torch.cuda.max_memory_allocated over the stage's iterations. On CPU: the process's "
    "peak resident set size (ru_maxrss, includes the interpreter, libraries and data loading).",
    "Stand-in data: random images and labels of the real sizes and layouts; timings do not depend on content.",
    "CITYSCAPES_TRAIN = 2975 and CITYSCAPES_VAL = 500 images; the projection sums the recipe's iterations at "
    "the measured rates and the measured per-image times of pseudo-labelling, centroid pass and evaluation.",
]
CITYSCAPES_TRAIN, CITYSCAPES_VAL = 2975, 500
REAL_SIZES = {"gta5": (1052, 1914), "synthia": (760, 1280), "cityscapes": (1024, 2048)}


def _stand_ins(root, full: bool):
    from tests.data.replicas import make_cityscapes, make_gta5, make_synthia

    size = (lambda k: REAL_SIZES[k]) if full else (lambda k: (96, 160) if k != "cityscapes" else (64, 128))
    make_gta5(root / "gta5", count=4, size=size("gta5"), mismatched=())
    make_synthia(root / "synthia", count=4, size=size("synthia"))
    make_cityscapes(root / "cityscapes", split="train", per_city=2, size=size("cityscapes"))
    make_cityscapes(root / "cityscapes", split="val", cities=("lindau",), per_city=2, size=size("cityscapes"))
    return root


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB, "CUDA allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def _time_stage(adapter, recipe, stage_recipe, data, stage, pseudo_dir, iters, warm, amp, device):
    parts = [("low", stage_recipe.batch_low), ("high", stage_recipe.batch_high)]
    src = [infinite_loader(data.source(s, stage_recipe), batch_size=n, seed=k) for k, (s, n) in enumerate(parts) if n]
    tgt = [infinite_loader(data.target(s, stage_recipe, pseudo_dir), batch_size=n, seed=7 + k)
           for k, (s, n) in enumerate(parts) if n]
    opt, sched = make_optimizer(adapter.student, recipe.optim, 10_000)
    autocast, scaler = autocast_context(device, amp)
    adapter.train()
    times = []
    _peak_reset(device)
    for i in range(warm + iters):
        s = {k: v.to(device) if torch.is_tensor(v) else v
             for k, v in concat_batches([as_batch(next(it)) for it in src]).items()}
        t = {k: v.to(device) if torch.is_tensor(v) else v
             for k, v in concat_batches([as_batch(next(it)) for it in tgt]).items()}
        sync(device)
        start = time.perf_counter()
        with autocast:  # what train_stage does each step
            out = run_step(adapter, stage, s, t, torch.Generator().manual_seed(i))
        optimizer_step(out.loss, opt, sched, scaler)
        adapter.update_teacher()
        sync(device)
        if i >= warm:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times), _peak(device)


def _per_image(fn, items, device) -> float:
    fn(items[0])
    sync(device)
    start = time.perf_counter()
    for item in items[1:]:
        fn(item)
    sync(device)
    return (time.perf_counter() - start) / max(len(items) - 1, 1)


@pytest.mark.parametrize("which", ["gta5", "synthia"])
@pytest.mark.parametrize("amp", [False, True])
def test_recipe_timing(bench, tmp_path_factory, which, amp):
    _recipe_timing(bench, tmp_path_factory, which, "paper", amp)


@pytest.mark.parametrize("amp", [False, True])
def test_dinov2_recipe_timing(bench, tmp_path_factory, amp):
    _recipe_timing(bench, tmp_path_factory, "gta5", "dinov2", amp)


def _recipe_timing(bench, tmp_path_factory, which, preset, amp):
    full = bench.full
    device = bench.device
    if amp and device.type == "cpu" and not full:
        pytest.skip("quick mode on CPU times fp32 only")
    root = _stand_ins(tmp_path_factory.mktemp("standins"), full)
    recipe = get_recipe(which, preset if full else {"paper": "tiny"}.get(preset, f"{preset}_tiny"))
    torch.manual_seed(0)
    if preset == "paper":
        encoder = "resnet101" if full else "resnet18"
        if not full:
            recipe = replace(recipe, crop_size=(64, 96))
        model = create_model("deeplabv2", num_classes=recipe.num_classes, encoder_name=encoder)
        model_name, prefix, label = f"deeplabv2 {encoder}", which, which
    else:  # the preset's own network (no weights: timings do not depend on them)
        model = recipe_model(recipe)
        model_name, prefix, label = f"{recipe.model} {recipe.encoder}", f"{which}_{preset}", f"{which} ({preset})"
    data = benchmark_data(which, recipe, source_root=root / which, target_root=root / "cityscapes")
    window = {"window": recipe.eval_window, "stride": recipe.eval_stride}
    dist = DistInfo(0, 1, 0, device)
    adapter = build_adapter(model, recipe, translator=FourierTranslator(beta=recipe.fourier_beta), dist=dist)
    if device.type == "cuda":  # DIGA_BENCH_RECIPE_ITERS shortens it where device time is scarce
        iters = int(os.environ.get("DIGA_BENCH_RECIPE_ITERS", "200"))
        warm = max(1, min(10, iters // 5))
    else:
        iters, warm = 2, 1
    amp_flag = "bf16" if amp else False

    # Pseudo-labels (timed per image), centroid pass and evaluation per image on full-size images.
    pseudo_dir = tmp_path_factory.mktemp("pseudo")
    start = time.perf_counter()
    generate_pseudo_labels(adapter, data.target_full(), pseudo_dir, scales=recipe.scales, dist=dist, amp=amp_flag,
                           show_progress=False, **window)
    pseudo_s = (time.perf_counter() - start) / len(data.target_full())
    cent = data.target_centroid()
    centroid_s = _per_image(lambda i: adapter.init_centroids([cent[i]["image"][None].to(device)]),
                            list(range(len(cent))), device)
    val = data.val()
    with autocast_context(device, amp_flag)[0]:
        eval_s = _per_image(lambda i: predict_logits(adapter.student, val[i]["image"][None].to(device), recipe.scales,
                                                     **window), list(range(len(val))), device)

    rows = []
    rates = {}
    for stage, stage_recipe in (("warmup", recipe.warmup), ("self_training", recipe.self_training)):
        s_per_it, (peak, kind) = _time_stage(adapter, recipe, stage_recipe, data, stage, pseudo_dir, iters, warm,
                                             amp_flag, device)
        rates[stage] = s_per_it
        rows.append({"name": f"{prefix}_{stage}_{'amp' if amp else 'fp32'}_{bench.mode}", "benchmark": label,
                     "what": stage.replace("_", "-"), "model": model_name,
                     "amp": "bf16" if amp else "off", "batch": f"{stage_recipe.batch_size} x {recipe.crop_size[0]}x"
                     f"{recipe.crop_size[1]}", "it_per_s": 1 / s_per_it, "s_per_it": s_per_it, "peak_mib": peak,
                     "memory_kind": kind, "projected_h": None, "iterations_timed": iters})
    paper = get_recipe(which, preset)
    total = (paper.warmup.steps * rates["warmup"]
             + paper.rounds * (paper.self_training.steps * rates["self_training"]
                               + CITYSCAPES_TRAIN * (pseudo_s + centroid_s))
             + CITYSCAPES_VAL * eval_s)
    rows.append({"name": f"{prefix}_projected_{'amp' if amp else 'fp32'}_{bench.mode}", "benchmark": label,
                 "what": f"whole recipe (pseudo-label {pseudo_s:.2f} s/img, centroids {centroid_s:.2f} s/img, "
                         f"eval {eval_s:.2f} s/img)", "model": model_name,
                 "amp": "bf16" if amp else "off", "batch": "-", "it_per_s": None, "s_per_it": None,
                 "peak_mib": None, "memory_kind": "-", "projected_h": total / 3600})
    write_rows(SUITE, rows, mode=bench.mode, device=device, title=TITLE, description=DESCRIPTION, columns=COLUMNS,
               notes=NOTES)
    assert all(r["s_per_it"] is None or r["s_per_it"] > 0 for r in rows)


def test_dinov2_cpu_step(bench):
    """One warm-up step of the ``dinov2`` preset's ViT-B/14 at its crop on the CPU (full mode only): one source
    crop with its label, one target crop, as Adapter.warmup_step runs them (the student's forward and backward on
    the clean and mixed views, the teacher's forward), then AdamW with layer decay. Peak: the process's RSS."""
    device = bench.device
    if device.type != "cpu" or not bench.full:
        pytest.skip("full mode on the CPU only (CUDA: test_dinov2_recipe_timing; quick: its tiny twin)")
    recipe = get_recipe("gta5", "dinov2")
    torch.manual_seed(0)
    model = recipe_model(recipe)
    adapter = build_adapter(model, recipe, translator=FourierTranslator(beta=recipe.fourier_beta),
                            dist=DistInfo(0, 1, 0, device))
    opt, sched = make_optimizer(adapter.student, recipe.optim, recipe.warmup.steps)
    gen = torch.Generator().manual_seed(0)
    h, w = recipe.crop_size
    src = {"image": torch.rand(1, 3, h, w, generator=gen),
           "label": torch.randint(0, recipe.num_classes, (1, h, w), generator=gen)}
    tgt = {"image": torch.rand(1, 3, h, w, generator=gen)}
    adapter.train()
    times = []
    for amp in (False, "bf16"):
        autocast, scaler = autocast_context(device, amp)
        for i in range(2):  # the first warms up
            start = time.perf_counter()
            with autocast:
                out = run_step(adapter, "warmup", src, tgt, torch.Generator().manual_seed(i))
            optimizer_step(out.loss, opt, sched, scaler)
            adapter.update_teacher()
            if i:
                times.append((amp, time.perf_counter() - start, _peak(device)[0]))
    rows = [{"name": f"gta5_dinov2_cpu_step_{'amp' if amp else 'fp32'}_{bench.mode}", "benchmark": "gta5 (dinov2)",
             "what": "one warm-up step (CPU)", "model": f"{recipe.model} {recipe.encoder}",
             "amp": "bf16" if amp else "off", "batch": f"1 source + 1 target x {h}x{w}", "it_per_s": 1 / s,
             "s_per_it": s, "peak_mib": peak, "memory_kind": "process peak RSS", "projected_h": None,
             "iterations_timed": 1} for amp, s, peak in times]
    write_rows(SUITE, rows, mode=bench.mode, device=device, title=TITLE, description=DESCRIPTION, columns=COLUMNS,
               notes=NOTES)
    assert all(r["s_per_it"] > 0 for r in rows)
