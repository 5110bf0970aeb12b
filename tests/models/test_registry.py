"""create_model / model_from_config / param_groups."""

from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from diga.models import (
    DeepLabV2,
    TimmSegmenter,
    create_model,
    list_models,
    model_from_config,
    param_groups,
    with_features,
)

SMP_NAMES = [
    "deeplabv3", "deeplabv3plus", "fpn", "linknet", "manet", "pan", "pspnet",
    "segformer", "unet", "unetplusplus", "upernet",
]


def same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)


class TestCreateModel:
    def test_list_models(self):
        names = list_models()
        assert names == sorted(names)
        assert set(SMP_NAMES) | {"daformer", "deeplabv2", "hrnet_ocr", "timm"} <= set(names)

    @pytest.mark.parametrize(
        ("name", "encoder", "kwargs", "cls"),
        [
            ("unet", "resnet18", {"decoder_channels": (32, 16, 8, 8, 8)}, smp.Unet),
            ("segformer", None, {"decoder_segmentation_channels": 32}, smp.Segformer),
            ("deeplabv2", "resnet18", {"head": "sum"}, DeepLabV2),
            ("timm", "resnet18", {"decoder_dim": 16, "out_indices": (2, 3, 4)}, TimmSegmenter),
        ],
    )
    def test_round_trip_through_config(self, name, encoder, kwargs, cls):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, encoder_name=encoder, **kwargs)
        assert isinstance(model, cls)
        config = json.loads(json.dumps(model.diga_config))  # as a checkpoint would store it
        assert config["name"] == name and config["num_classes"] == 3
        assert config["encoder_name"] == (encoder or "mit_b0")
        rebuilt = model_from_config(config)
        same_model(model, rebuilt)
        rebuilt.load_state_dict(model.state_dict())
        x = torch.rand(1, 3, 64, 64)
        model.eval()
        rebuilt.eval()
        torch.testing.assert_close(model(x), rebuilt(x))
        assert rebuilt.diga_config == config

    @pytest.mark.parametrize("name", SMP_NAMES)
    def test_every_smp_name_builds(self, name):
        model = create_model(name, num_classes=2, encoder_name="resnet18")
        assert model.config["encoder_weights"] is None and model.config["classes"] == 2
        assert model.diga_config["encoder_name"] == "resnet18"

    def test_defaults(self):
        model = create_model("deeplabv2", num_classes=2, encoder_name="resnet18")
        expected = {"name": "deeplabv2", "encoder_name": "resnet18", "num_classes": 2, "kwargs": {}}
        assert model.diga_config == expected
        assert model.head == "diga"

    def test_config_saved_by_diga_0_1_names_the_encoder_encoder(self):
        old = {"name": "deeplabv2", "encoder": "resnet18", "num_classes": 2, "kwargs": {}}
        assert model_from_config(old).diga_config == {**{k: v for k, v in old.items() if k != "encoder"},
                                                      "encoder_name": "resnet18"}
        assert model_from_config(old).encoder_name == "resnet18"

    def test_pretrained_means_imagenet_weights(self, monkeypatch):
        seen = {}

        def fake(**kwargs):
            seen.update(kwargs)
            return nn.Identity()

        monkeypatch.setattr(smp, "Unet", fake)
        create_model("unet", num_classes=2, pretrained=True)
        assert seen == {"encoder_name": "resnet50", "classes": 2, "encoder_weights": "imagenet"}
        create_model("unet", num_classes=2, encoder_name="tu-resnet18", pretrained=True)
        assert seen["encoder_weights"] is True  # smp's timm encoders take a flag
        model = create_model("unet", num_classes=2, pretrained=True, encoder_weights="ssl")
        assert seen["encoder_weights"] == "ssl" and model.diga_config["kwargs"] == {"encoder_weights": "ssl"}

    def test_unknown_name_lists_valid_ones(self):
        match = r"`name` must be one of \[.*'deeplabv2'.*'unet'.*\], got 'unet3'"
        with pytest.raises(ValueError, match=match):
            create_model("unet3", num_classes=2)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`encoder_name` must name a timm model"):
            create_model("timm", num_classes=2)
        with pytest.raises(ValueError, match="`num_classes`"):
            create_model("unet", num_classes=0, encoder_name="resnet18")
        with pytest.raises(ValueError, match="`kwargs` must be JSON-serialisable.*activation"):
            create_model("unet", num_classes=2, encoder_name="resnet18", activation=torch.sigmoid)
        with pytest.raises(ValueError, match="`config` must have keys"):
            model_from_config({"encoder": "resnet18"})


class TestParamGroups:
    def test_smp_split(self):
        model = create_model("fpn", num_classes=2, encoder_name="resnet18")
        enc, rest = param_groups(model, 0.01)
        assert enc["lr"] == 0.01 and rest["lr"] == pytest.approx(0.1)
        assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
        assert len(enc["params"]) + len(rest["params"]) == len(list(model.parameters()))
        torch.optim.SGD([enc, rest], lr=0.01)  # a valid optimiser spec

    def test_through_wrappers_and_frozen(self):
        model = create_model("timm", num_classes=2, encoder_name="resnet18", decoder_dim=16)
        model.encoder.conv1.weight.requires_grad_(False)
        enc, rest = param_groups(with_features(model), 1.0, head_lr_mult=5.0)
        assert rest["lr"] == 5.0
        ids = {id(p) for p in enc["params"]}
        assert id(model.encoder.conv1.weight) not in ids
        assert ids == {id(p) for p in model.encoder.parameters() if p.requires_grad}
        assert {id(p) for p in rest["params"]} == {
            id(p) for p in [*model.decoder.parameters(), *model.segmentation_head.parameters()]
        }

    def test_bad_input(self):
        with pytest.raises(ValueError, match="`model` must have an `encoder` submodule"):
            param_groups(nn.Conv2d(3, 2, 1), 0.1)
        with pytest.raises(ValueError, match="`lr`"):
            param_groups(create_model("fpn", num_classes=2, encoder_name="resnet18"), -1.0)
