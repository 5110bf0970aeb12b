"""run_pipeline in the two other settings, on tiny replicas of the real layouts (CPU, a small U-Net).

Domain generalisation: the warm-up alone on GTA5, no target stage, one row per evaluation target
(Cityscapes, BDD100k, Mapillary) and their mean in results.json. Semi-supervised: the split written
to the work dir, the labelled images as the source, pseudo-labels for the unlabelled ones only.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from diga.adapter import AblationOptions
from diga.engine.data_specs import cityscapes_split_lists, dg_data, ssl_data
from diga.engine.pipeline import build_adapter, run_pipeline
from diga.engine.recipes import get_recipe
from diga.models import create_model
from tests.data.replicas import make_bdd100k, make_cityscapes, make_gta5, make_mapillary


def tiny_model():
    torch.manual_seed(0)
    return create_model("unet", num_classes=19, encoder_name="resnet18", encoder_depth=3,
                        decoder_channels=[16, 8, 8])


def fast(recipe):
    return replace(recipe.with_steps(2, 2), checkpoint_every=1, image_every=0, log_every=1,
                   eval_size=None if recipe.setting != "dg" else (32, 64))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    make_gta5(root / "gta5", count=3, size=(72, 120))
    make_cityscapes(root / "cityscapes", split="train", per_city=4, size=(64, 128))
    make_cityscapes(root / "cityscapes", split="val", cities=("lindau",), per_city=1, size=(64, 128))
    make_bdd100k(root / "bdd", count=2, size=(40, 64))
    make_mapillary(root / "mapillary", count=2)
    return root


def test_dg_trains_on_the_source_alone_and_evaluates_every_target(data, tmp_path):
    recipe = fast(get_recipe("gta5_dg", "tiny"))
    assert recipe.setting == "dg" and recipe.rounds == 0 and recipe.warmup.sharpness_p == 0.0
    spec = dg_data(recipe, source_root=data / "gta5", cityscapes_root=data / "cityscapes", bdd_root=data / "bdd",
                   mapillary_root=data / "mapillary")
    work = tmp_path / "dg"
    results = run_pipeline(recipe, spec, model=tiny_model(), work_dir=work, show_progress=False)
    assert list(results["stages"]) == ["warmup"]
    stage = results["stages"]["warmup"]
    assert list(stage["targets"]) == ["cityscapes", "bdd100k", "mapillary"]
    rows = stage["targets"]
    assert rows["bdd100k"]["images"] == 2 and rows["mapillary"]["size"] == [32, 64]
    assert stage["mean_miou"] == pytest.approx(sum(r["miou"] for r in rows.values()) / 3)
    on_disk = json.loads((work / "results.json").read_text())
    assert on_disk["final"]["targets"].keys() == rows.keys()
    assert not list(work.glob("pseudo_round*")) and not list((work / "checkpoints").glob("centroids*"))
    assert (work / "model.safetensors").exists()


def test_dg_adapter_from_the_recipe(data):
    recipe = get_recipe("gta5_dg")
    adapter = build_adapter(tiny_model(), recipe, ablation=AblationOptions(teacher_train_mode=True))
    assert adapter.setting == "dg" and adapter.st_augment is None and adapter.translator is None
    assert adapter.ablation == AblationOptions(cross_domain_mix=False, mixed_view_ce=False, teacher_train_mode=True)
    with pytest.raises(ValueError, match="data.target"):
        run_pipeline(recipe, ssl_data(get_recipe("cityscapes_ssl", "tiny"), root=data / "cityscapes",
                                      work_dir=data / "unused"), model=tiny_model(), work_dir=data / "unused2")


def test_ssl_split_lists(data, tmp_path):
    labelled, unlabelled = cityscapes_split_lists(data / "cityscapes", tmp_path, fraction="1/4", seed=0)
    lab, unl = labelled.read_text().split(), unlabelled.read_text().split()
    assert len(lab) == 2 and len(unl) == 6 and not set(lab) & set(unl)
    again = cityscapes_split_lists(data / "cityscapes", tmp_path, fraction="1/4", seed=0)
    assert again[0].read_text().split() == lab
    published = tmp_path / "list.txt"
    published.write_text("bochum/bochum_000001_000019_leftImg8bit.png\n")
    lab2 = cityscapes_split_lists(data / "cityscapes", tmp_path / "p", labelled_list=published)[0]
    assert lab2.read_text().split() == ["bochum/bochum_000001_000019_leftImg8bit"]
    with pytest.raises(ValueError, match="fraction"):
        cityscapes_split_lists(data / "cityscapes", tmp_path / "bad", fraction="3/2")


def test_ssl_labelled_as_source_unlabelled_as_target(data, tmp_path):
    recipe = replace(fast(get_recipe("cityscapes_ssl", "tiny")), labelled_fraction="1/4")
    assert recipe.setting == "ssl" and recipe.optim.head_lr_mult == 1.0 and recipe.rounds == 1
    work = tmp_path / "ssl"
    spec = ssl_data(recipe, root=data / "cityscapes", work_dir=work, seed=0)
    results = run_pipeline(recipe, spec, model=tiny_model(), work_dir=work, show_progress=False)
    assert list(results["stages"]) == ["warmup", "self_training_1"]
    unlabelled = (work / "split" / "unlabelled.txt").read_text().split()
    pseudo = sorted(p.relative_to(work / "pseudo_round1").with_suffix("").as_posix()
                    for p in (work / "pseudo_round1").rglob("*.png"))
    assert pseudo == sorted(unlabelled)  # pseudo-labels for the unlabelled images only
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    st = [r for r in records if r.get("stage") == "self_training_1" and "kd" in r]
    assert st and all("ce_mix" in r for r in st)
    config = json.loads((work / "config.json").read_text())
    assert config["recipe"]["setting"] == "ssl" and config["recipe"]["labelled_fraction"] == "1/4"
