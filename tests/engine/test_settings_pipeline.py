"""The other two settings' pipeline pieces: the DG adapter a recipe builds, a target-less data spec only for
DG, and the semi-supervised split lists (whole runs: tests/engine/test_settings_trainers.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diga.adapter import AblationOptions
from diga.engine.data_specs import cityscapes_split_lists, ssl_data
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
