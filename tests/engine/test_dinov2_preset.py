"""The foundation-model presets: ``dinov2`` (a DINOv2 ViT-B/14 as VFM-UDA trains one) and ``dinov2_tiny``,
its CPU twin, run through every stage of run_pipeline on tiny replicas of the real layouts (UDA and DG).

The pipeline is given the recipe's sliding window the way the trainers give theirs (``inference_window``).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from diga.engine.data_specs import benchmark_data, dg_data
from diga.engine.evaluation import inference_window
from diga.engine.optim import make_optimizer
from diga.engine.pipeline import run_pipeline
from diga.engine.recipes import PRESETS, Recipe, get_recipe, list_presets, recipe_model
from diga.models import TimmSegmenter
from tests.data.replicas import make_cityscapes, make_gta5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()  # a tiny ViT: a contended thread pool is slower than one thread
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dinov2")
    make_gta5(root / "gta5", count=2, size=(72, 120))
    make_cityscapes(root / "cityscapes", split="train", cities=("aachen",), per_city=2, size=(64, 128))
    make_cityscapes(root / "cityscapes", split="val", cities=("lindau",), per_city=1, size=(64, 128))
    return root


class TestPresetValues:
    @pytest.mark.parametrize("benchmark, batch", [("gta5", 3), ("gta5_dg", 4)])
    def test_vfm_uda_settings(self, benchmark, batch):
        r, paper = get_recipe(benchmark, "dinov2"), get_recipe(benchmark, "paper")
        o = r.optim
        assert (r.model, r.encoder, r.model_kwargs) == ("timm", "vit_base_patch14_dinov2", {})
        assert (o.optimizer, o.weight_decay, o.head_lr_mult, o.layer_decay, o.warmup_steps) == \
            ("adamw", 0.01, 10.0, 0.9, 1500)
        assert (o.schedule, o.power) == ("poly", 1.0)  # linear decay to 0
        assert o.lr * o.head_lr_mult == pytest.approx(5e-5 * math.sqrt(batch))  # VFM-UDA's rule at our batch
        assert all(v % 14 == 0 for v in r.crop_size) and r.eval_window == r.crop_size
        assert r.eval_stride == (r.crop_size[0] // 2, r.crop_size[1] // 2)
        # everything else is DiGA's recipe
        for key in ("setting", "rounds", "warmup", "self_training", "teacher_momentum", "scales", "eval_size",
                    "source_low_size", "target_low_size", "num_classes"):
            assert getattr(r, key) == getattr(paper, key), key
        assert r.target_low_size is None or r.crop_size[0] <= r.target_low_size[0]  # no padded target crop

    def test_tiny_twin_has_the_same_structure(self):
        for benchmark in ("gta5", "gta5_dg"):
            big, tiny = get_recipe(benchmark, "dinov2"), get_recipe(benchmark, "dinov2_tiny")
            assert (tiny.model, tiny.setting, tiny.rounds) == (big.model, big.setting, big.rounds)
            assert replace(tiny.optim, lr=big.optim.lr, warmup_steps=big.optim.warmup_steps) == big.optim
            assert tiny.encoder.endswith("patch14_dinov2") and all(v % 14 == 0 for v in tiny.crop_size)
            assert tiny.eval_window == tiny.crop_size

    def test_presets_listed(self):
        assert set(PRESETS) == {"paper", "tiny", "dinov2", "dinov2_tiny"}
        assert "dinov2" not in list_presets("synthia") and "dinov2" in list_presets("gta5_dg")
        with pytest.raises(ValueError, match="preset"):
            get_recipe("synthia", "dinov2")
        with pytest.raises(ValueError, match="benchmark"):
            list_presets("kitti")

    def test_bad_window_fields(self):
        base = get_recipe("gta5", "tiny")
        with pytest.raises(ValueError, match="eval_stride"):
            replace(base, eval_stride=(8, 8))
        with pytest.raises(ValueError, match="eval_window"):
            replace(base, eval_window=(8, 8), eval_stride=(16, 16))
        with pytest.raises(ValueError, match="eval_window"):
            replace(base, eval_window=(0, 8))
        with pytest.raises(ValueError, match="model_kwargs"):
            replace(base, model_kwargs=[("depth", 2)])

    def test_model_and_optimiser(self):
        r = get_recipe("gta5", "dinov2_tiny")
        net = recipe_model(r)
        assert isinstance(net, TimmSegmenter) and len(net.encoder.model.blocks) == 3 and net.patch_size == (14, 14)
        opt, sched = make_optimizer(net, r.optim, r.warmup.steps)
        lrs = [g["initial_lr"] for g in opt.param_groups]  # stem, 3 blocks, head
        assert lrs == pytest.approx([r.optim.lr * 0.9 ** k for k in (3, 2, 1, 0)] + [r.optim.lr * 10])
        assert sched.get_last_lr()[-1] == pytest.approx(r.optim.lr * 10 * 1e-3)  # warm-up starts at 1e-3


def run(recipe: Recipe, spec, work, seen):
    torch.manual_seed(0)
    model = recipe_model(recipe)
    model.register_forward_pre_hook(lambda mod, args: seen.add(tuple(args[0].shape[-2:])))
    with inference_window(recipe.eval_window, recipe.eval_stride):  # what the trainers do with --slide
        return run_pipeline(recipe, spec, model=model, work_dir=work, show_progress=False)


def test_uda_every_stage(data, tmp_path):
    # a window other than the crop, so that a window-sized input can only come from sliding
    recipe = replace(get_recipe("gta5", "dinov2_tiny"), image_every=0, eval_window=(48, 70), eval_stride=(24, 35))
    spec = benchmark_data("gta5", recipe, source_root=data / "gta5", target_root=data / "cityscapes")
    seen: set = set()
    results = run(recipe, spec, tmp_path / "uda", seen)
    assert list(results["stages"]) == ["warmup", "self_training_1", "self_training_2"]
    assert all(math.isfinite(s["miou"]) for s in results["stages"].values())
    records = [json.loads(line) for line in (tmp_path / "uda" / "log.jsonl").read_text().splitlines()]
    for stage in ("warmup", "self_training_1", "self_training_2"):
        steps = [r for r in records if r.get("stage") == stage and "loss" in r]
        assert len(steps) == recipe.warmup.steps and all(math.isfinite(r["loss"]) for r in steps), stage
    assert len(list((tmp_path / "uda" / "pseudo_round2").rglob("*.png"))) == 2
    # training crops at the recipe's crop; 64 x 128 images predicted in 48 x 70 windows (whole at half scale)
    assert recipe.crop_size in seen and recipe.eval_window in seen and (32, 64) in seen


def test_dg_warmup_and_every_target(data, tmp_path):
    recipe = replace(get_recipe("gta5_dg", "dinov2_tiny"), image_every=0)
    spec = dg_data(recipe, source_root=data / "gta5", cityscapes_root=data / "cityscapes")
    seen: set = set()
    results = run(recipe, spec, tmp_path / "dg", seen)
    assert list(results["stages"]) == ["warmup"] and list(results["final"]["targets"]) == ["cityscapes"]
    assert math.isfinite(results["final"]["mean_miou"]) and recipe.crop_size in seen
    config = json.loads((tmp_path / "dg" / "config.json").read_text())
    assert config["recipe"]["optim"]["layer_decay"] == 0.9 and config["recipe"]["eval_window"] == [56, 84]
    assert config["recipe"]["model_kwargs"] == recipe.model_kwargs
