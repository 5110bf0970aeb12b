"""HRNetOCR / OCRDecoder: the OCR attention against a per-sample, per-class loop; outputs through with_features."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

from diga.inference import export_model, load_model
from diga.models import (
    HRNetOCR,
    OCRDecoder,
    create_model,
    model_from_config,
    object_context,
    object_region_representations,
    param_groups,
    with_features,
)

SMALL = {"mid_channels": 32, "key_channels": 16}


def tiny(num_classes: int = 3, seed: int = 0, **kwargs) -> HRNetOCR:
    torch.manual_seed(seed)
    return HRNetOCR("hrnet_w18_small", num_classes, **{**SMALL, **kwargs})


def images(b: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ocr_loop(dec: OCRDecoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The OCR head as the paper describes it, one sample, one region and one pixel at a time."""
    feats, regs = [], []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        regions = dec.aux_head(xb)[0].flatten(1)  # (K, N)
        pixels = dec.pixels(xb)  # (1, D, h, w)
        pix = pixels[0].flatten(1)  # (D, N)
        num_regions, n_pix = regions.shape
        objects = []
        for k in range(num_regions):  # object region representation: spatial softmax-weighted pixel sum
            weights = torch.exp(regions[k] - regions[k].max())
            weights = weights / weights.sum()
            objects.append(sum(weights[n] * pix[:, n] for n in range(n_pix)))
        obj = torch.stack(objects, dim=1)[None, :, :, None]  # (1, D, K, 1)
        key = dec.key(obj)[0, :, :, 0]  # (Dk, K)
        value = dec.value(obj)[0, :, :, 0]
        query = dec.query(pixels)[0].flatten(1)  # (Dk, N)
        context = torch.zeros(value.shape[0], n_pix, dtype=x.dtype)
        for n in range(n_pix):  # pixel-region relation: softmax over regions of q.k / sqrt(Dk)
            sims = torch.stack([query[:, n] @ key[:, k] for k in range(num_regions)]) / math.sqrt(key.shape[0])
            rel = torch.softmax(sims, dim=0)
            context[:, n] = sum(rel[k] * value[:, k] for k in range(num_regions))
        context = dec.up(context.view(1, -1, *xb.shape[-2:]))
        feats.append(dec.fuse(torch.cat([context, pixels], dim=1)))
        regs.append(regions.view(1, num_regions, *xb.shape[-2:]))
    return torch.cat(feats), torch.cat(regs)


class TestOCRFunctions:
    def test_region_representations_match_loop(self):
        g = torch.Generator().manual_seed(0)
        pixels, regions = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 3, 3, 4, generator=g)
        out = object_region_representations(pixels, regions)
        for b in range(2):
            for k in range(3):
                w = torch.softmax(regions[b, k].flatten(), dim=0)
                torch.testing.assert_close(out[b, :, k], (pixels[b].flatten(1) * w).sum(dim=1))

    def test_object_context_matches_loop(self):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(2, 4, 2, 3, generator=g)
        k, v = torch.randn(2, 4, 5, generator=g), torch.randn(2, 6, 5, generator=g)
        out = object_context(q, k, v)
        for b in range(2):
            for n in range(6):
                i, j = divmod(n, 3)
                rel = torch.softmax(torch.stack([q[b, :, i, j] @ k[b, :, c] for c in range(5)]) / 2.0, dim=0)
                torch.testing.assert_close(out[b, :, i, j], sum(rel[c] * v[b, :, c] for c in range(5)))

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(0)
        p, r = (torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
        assert torch.autograd.gradcheck(object_region_representations, (p, r))
        q = torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
        k = torch.randn(1, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
        v = torch.randn(1, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(object_context, (q, k, v))

    def test_decoder_matches_loop(self):
        torch.manual_seed(0)
        dec = OCRDecoder(6, 3, mid_channels=8, key_channels=4).double()
        for m in dec.modules():  # non-trivial BN statistics, then eval (one sample == the batch)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        dec.eval()
        x = torch.randn(2, 6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        features, regions = dec(x)
        ref_features, ref_regions = ocr_loop(dec, x)
        torch.testing.assert_close(regions, ref_regions)
        torch.testing.assert_close(features, ref_features)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="`pixels`"):
            object_region_representations(torch.rand(2, 4, 4), torch.rand(2, 3, 4, 4))
        with pytest.raises(ValueError, match="`pixels`.*`regions`.*must share"):
            object_region_representations(torch.rand(2, 4, 4, 4), torch.rand(2, 3, 4, 5))
        with pytest.raises(ValueError, match="`query`.*`key`.*must agree"):
            object_context(torch.rand(1, 4, 2, 2), torch.rand(1, 3, 5), torch.rand(1, 6, 5))
        with pytest.raises(ValueError, match="`key_channels`"):
            OCRDecoder(6, 3, key_channels=0)
        with pytest.raises(ValueError, match="`dropout`"):
            OCRDecoder(6, 3, dropout=1.0)


class TestHRNetOCR:
    def test_outputs_through_with_features(self):
        model = tiny(4)
        net = with_features(model)
        assert net.feature_dim == 32 and net.num_classes == 4
        assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
        for mode in (True, False):
            net.train(mode)
            logits, features, aux = net(images(size=60), aux=True)  # stride 4, rounded up
            assert logits.shape == (2, 4, 15, 15) and aux.shape == (2, 4, 15, 15)
            assert features.shape == (2, 32, 15, 15)
            torch.testing.assert_close(logits, model.segmentation_head(features))
        out = model(net.normalize(images()))
        assert set(out) == {"out", "aux"}  # eval mode too: inference takes "out"
        logits, features = net(images())
        torch.testing.assert_close(logits, out["out"])

    def test_features_are_the_ocr_representation(self):
        model = tiny().eval()
        logits, features, aux = with_features(model)(images(), aux=True)
        x = with_features(model).normalize(images())
        branches = model.encoder(x)
        cat = torch.cat([branches[0]] + [
            torch.nn.functional.interpolate(b, size=branches[0].shape[-2:], mode="bilinear", align_corners=True)
            for b in branches[1:]
        ], dim=1)
        assert cat.shape[1] == 16 + 32 + 64 + 128
        ref_features, ref_regions = model.decoder(cat)
        torch.testing.assert_close(features, ref_features)
        torch.testing.assert_close(aux, ref_regions)

    def test_gradients_reach_backbone_and_both_heads(self):
        model = tiny()
        logits, features, aux = with_features(model)(images(), aux=True)
        aux.square().mean().backward(retain_graph=True)
        assert model.segmentation_head.weight.grad is None  # the aux head does not feed the main head
        assert model.decoder.aux_head[-1].weight.grad.abs().sum() > 0
        assert model.encoder.conv1.weight.grad.abs().sum() > 0
        model.zero_grad(set_to_none=True)
        logits.square().mean().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert unused == []  # the main loss reaches everything, the soft regions included (DDP-safe)

    def test_train_and_eval_mode(self):
        model = tiny()
        net = with_features(model)
        net.eval()
        with torch.no_grad():
            a, b = net(images())[0], net(images())[0]
        torch.testing.assert_close(a, b)
        net.train()
        bn = model.decoder.fuse[1]
        before = bn.running_mean.clone()
        with torch.no_grad():
            net(images())
        assert not torch.equal(before, bn.running_mean)
        assert model.decoder.fuse[-1].p == 0.05 and model.decoder.fuse[-1].training

    def test_seeded_construction_is_deterministic(self):
        a, b, c = tiny(seed=3).eval(), tiny(seed=3).eval(), tiny(seed=4).eval()
        with torch.no_grad():
            torch.testing.assert_close(a(images())["out"], b(images())["out"])
            assert not torch.allclose(a(images())["out"], c(images())["out"])

    def test_export_load_round_trip(self, tmp_path):
        torch.manual_seed(0)
        model = create_model("hrnet_ocr", num_classes=3, encoder_name="hrnet_w18_small", **SMALL)
        assert model.diga_config == {
            "name": "hrnet_ocr", "encoder_name": "hrnet_w18_small", "num_classes": 3, "kwargs": SMALL
        }
        rebuilt = model_from_config(json.loads(json.dumps(model.diga_config)))
        assert isinstance(rebuilt, HRNetOCR) and list(rebuilt.state_dict()) == list(model.state_dict())
        net = with_features(model).eval()
        loaded, meta = load_model(export_model(net, tmp_path / "m.safetensors"))
        assert meta["config"]["name"] == "hrnet_ocr" and not loaded.training
        with torch.no_grad():
            expected = net(images(), aux=True)
            got = loaded(images(), aux=True)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(e, g, rtol=0, atol=0)

    def test_param_groups(self):
        model = tiny()
        enc, rest = param_groups(with_features(model), 1e-3, head_lr_mult=1.0)  # the SSL scripts: one rate
        assert enc["lr"] == rest["lr"] == 1e-3
        assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
        head = [*model.decoder.parameters(), *model.segmentation_head.parameters()]
        assert {id(p) for p in rest["params"]} == {id(p) for p in head}
        assert [g["lr"] for g in model.param_groups(0.01)] == [0.01, pytest.approx(0.1)]

    def test_w48_channel_plan(self):
        model = create_model("hrnet_ocr", num_classes=19)  # the scripts' config_default: W48
        assert model.encoder.feature_info.channels() == [48, 96, 192, 384]
        assert model.encoder.feature_info.reduction() == [4, 8, 16, 32]
        assert model.decoder.pixels[0].in_channels == 720 and model.decoder.aux_head[0].out_channels == 720
        assert model.feature_dim == 512 and model.decoder.key[0].out_channels == 256
        assert model.segmentation_head.out_channels == 19 and model.decoder.aux_head[-1].out_channels == 19
        assert sum(p.numel() for p in model.parameters()) == 70_371_446  # HRNetV2-W48 + OCR: 70.4M
        ups = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Upsample)]
        assert ups and all(m.mode == "bilinear" and m.align_corners for m in ups)  # the scripts' fusion

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`encoder_name` must be a timm HRNet.*'hrnet_w48'.*got 'resnet18'"):
            HRNetOCR("resnet18", 3)
        with pytest.raises(ValueError, match="`encoder_name`"):
            create_model("hrnet_ocr", num_classes=3, encoder_name="mit_b0")
        with pytest.raises(ValueError, match="`num_classes`"):
            HRNetOCR("hrnet_w18_small", 0)
        with pytest.raises(ValueError, match="`num_classes`"):
            create_model("hrnet_ocr", num_classes=0)
        with pytest.raises(ValueError, match="`mid_channels`"):
            HRNetOCR("hrnet_w18_small", 3, mid_channels=0)

    def test_pretrained_only_when_asked(self, monkeypatch):
        calls = []
        monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda *a, **k: calls.append(k))
        tiny()
        create_model("hrnet_ocr", num_classes=2, encoder_name="hrnet_w18_small", **SMALL)
        assert calls == []  # no download at construction by default
        model = create_model("hrnet_ocr", num_classes=2, encoder_name="hrnet_w18_small", pretrained=True, **SMALL)
        assert len(calls) == 1 and model.diga_config["kwargs"] == SMALL  # weights never enter the config
        assert model_from_config(model.diga_config) is not None and len(calls) == 1
