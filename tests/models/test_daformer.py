"""DAFormer / DAFormerDecoder over smp's MiT encoders, through with_features."""

from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from diga.inference import export_model, load_model
from diga.models import DAFormer, DAFormerDecoder, create_model, model_from_config, param_groups, with_features

SMALL = {"embed_dim": 16, "decoder_dim": 24}


def tiny(num_classes: int = 3, seed: int = 0, **kwargs) -> DAFormer:
    torch.manual_seed(seed)
    return DAFormer("mit_b0", num_classes, **{**SMALL, **kwargs})


def images(b: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


class TestDAFormerDecoder:
    def test_matches_spelled_out(self):
        torch.manual_seed(0)
        dec = DAFormerDecoder([4, 6, 8], embed_dim=5, decoder_dim=7, dilations=(1, 2, 3)).eval()
        g = torch.Generator().manual_seed(1)
        maps = [torch.randn(2, c, s, s, generator=g) for c, s in ((4, 8), (6, 4), (8, 2))]
        embedded = [dec.proj[0](maps[0])] + [
            F.interpolate(dec.proj[i](maps[i]), size=(8, 8), mode="bilinear", align_corners=False) for i in (1, 2)
        ]
        x = torch.cat(embedded, dim=1)
        branches = []
        for d, branch in zip((1, 2, 3), dec.fuse.branches, strict=True):
            if d == 1:  # 1x1 conv-BN-ReLU
                conv, bn = branch[0], branch[1]
                assert conv.kernel_size == (1, 1)
                branches.append(F.relu(bn(conv(x))))
            else:  # depthwise 3x3 at dilation d, BN, ReLU; pointwise 1x1, BN, ReLU
                dw, bn1, pw, bn2 = branch[0], branch[1], branch[3], branch[4]
                assert dw.groups == 15 and dw.dilation == (d, d) and dw.kernel_size == (3, 3)
                y = F.relu(bn1(F.conv2d(x, dw.weight, padding=d, dilation=d, groups=15)))
                branches.append(F.relu(bn2(pw(y))))
        conv, bn = dec.fuse.bottleneck[0], dec.fuse.bottleneck[1]
        assert conv.kernel_size == (3, 3)
        ref = F.relu(bn(conv(torch.cat(branches, dim=1))))
        torch.testing.assert_close(dec(maps), ref)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="`in_channels`"):
            DAFormerDecoder([])
        with pytest.raises(ValueError, match="`dilations`"):
            DAFormerDecoder([4], dilations=())
        with pytest.raises(ValueError, match="`dilations`"):
            DAFormerDecoder([4], dilations=(1, 0))
        with pytest.raises(ValueError, match="`embed_dim`"):
            DAFormerDecoder([4], embed_dim=0)
        with pytest.raises(ValueError, match="`features` must hold 2 levels"):
            DAFormerDecoder([4, 4], embed_dim=2, decoder_dim=2)([torch.rand(1, 4, 2, 2)])


class TestDAFormer:
    def test_outputs_through_with_features(self):
        model = tiny(4)
        net = with_features(model)
        assert net.feature_dim == 24 and net.num_classes == 4
        assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
        for mode in (True, False):
            net.train(mode)
            logits, features, aux = net(images(size=62), aux=True)
            assert logits.shape == (2, 4, 16, 16) and features.shape == (2, 24, 16, 16)
            assert aux is None  # no auxiliary head
        torch.testing.assert_close(logits, model.segmentation_head(features))  # eval: dropout off
        maps = model.encoder(net.normalize(images(size=62)))[2:]
        assert [m.shape[1] for m in maps] == [32, 64, 160, 256]
        torch.testing.assert_close(features, model.decoder(maps))

    def test_gradients_reach_encoder_and_head(self):
        model = tiny()
        logits, features = with_features(model)(images())
        logits.square().mean().backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []
        assert model.encoder.patch_embed1.proj.weight.grad.abs().sum() > 0
        assert model.decoder.fuse.branches[1][0].weight.grad.abs().sum() > 0

    def test_train_and_eval_mode(self):
        model = tiny()
        net = with_features(model).eval()
        with torch.no_grad():
            torch.testing.assert_close(net(images())[0], net(images())[0])
        net.train()
        assert model.segmentation_head[0].p == 0.1 and model.segmentation_head[0].training
        with torch.no_grad():
            a, b = net(images())[0], net(images())[0]
        assert not torch.allclose(a, b)  # Dropout2d is on in train mode

    def test_seeded_construction_is_deterministic(self):
        a, b, c = tiny(seed=3).eval(), tiny(seed=3).eval(), tiny(seed=4).eval()
        with torch.no_grad():
            torch.testing.assert_close(a(images()), b(images()))
            assert not torch.allclose(a(images()), c(images()))
        assert a.segmentation_head[1].weight.std() < 0.02 and a.segmentation_head[1].bias.abs().sum() == 0

    def test_export_load_round_trip(self, tmp_path):
        torch.manual_seed(0)
        model = create_model("daformer", num_classes=3, encoder_name="mit_b0", dilations=(1, 2), **SMALL)
        config = {"name": "daformer", "encoder_name": "mit_b0", "num_classes": 3,
                  "kwargs": {"dilations": [1, 2], **SMALL}}
        assert model.diga_config == config
        rebuilt = model_from_config(json.loads(json.dumps(config)))
        assert isinstance(rebuilt, DAFormer) and list(rebuilt.state_dict()) == list(model.state_dict())
        net = with_features(model).eval()
        loaded, meta = load_model(export_model(net, tmp_path / "m.safetensors"))
        assert meta["config"] == config and not loaded.training
        with torch.no_grad():
            for e, g in zip(net(images()), loaded(images()), strict=True):
                torch.testing.assert_close(e, g, rtol=0, atol=0)

    def test_param_groups(self):
        model = tiny()
        enc, rest = param_groups(with_features(model), 6e-5)
        assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
        head = [*model.decoder.parameters(), *model.segmentation_head.parameters()]
        assert {id(p) for p in rest["params"]} == {id(p) for p in head}
        assert rest["lr"] == pytest.approx(6e-4)
        assert [g["lr"] for g in model.param_groups(1.0, head_lr_mult=2.0)] == [1.0, 2.0]

    def test_default_encoder_and_pretrained_only_when_asked(self, monkeypatch):
        seen = []
        real = smp.encoders.get_encoder

        def spy(name, **kwargs):
            seen.append((name, kwargs["weights"]))
            return real("mit_b0", **{**kwargs, "weights": None})

        monkeypatch.setattr(smp.encoders, "get_encoder", spy)
        model = create_model("daformer", num_classes=19, **SMALL)  # DAFormer's MiT-B5 (mit_b0 built here)
        assert model.diga_config["encoder_name"] == "mit_b5" and model.diga_config["kwargs"] == SMALL
        create_model("daformer", num_classes=2, encoder_name="mit_b0", pretrained=True, **SMALL)
        model_from_config(model.diga_config)
        assert seen == [("mit_b5", None), ("mit_b0", "imagenet"), ("mit_b5", None)]

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`encoder_name` must be an smp MiT encoder.*'mit_b5'.*got 'resnet18'"):
            DAFormer("resnet18", 3)
        with pytest.raises(ValueError, match="`encoder_name`"):
            create_model("daformer", num_classes=3, encoder_name="hrnet_w48")
        with pytest.raises(ValueError, match="`num_classes`"):
            DAFormer("mit_b0", 0)
        with pytest.raises(ValueError, match="`num_classes`"):
            create_model("daformer", num_classes=0)
        with pytest.raises(ValueError, match="`dropout`"):
            DAFormer("mit_b0", 3, dropout=1.0)
        with pytest.raises(ValueError, match="`decoder_dim`"):
            DAFormer("mit_b0", 3, decoder_dim=0)
