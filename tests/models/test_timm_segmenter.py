"""TimmSegmenter: timm CNN and ViT backbones + the MLP decoder, through with_features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.models import MLPDecoder, TimmSegmenter, with_features

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# name -> (kwargs, input size, output size, stride, statistics)
BACKBONES = {
    "resnet18": ({}, 64, 16, 4, IMAGENET),
    "convnext_atto": ({}, 64, 16, 4, IMAGENET),
    "vit_tiny_patch16_224": ({"dynamic_img_size": True}, 64, 4, 16, HALF),
    "vit_small_patch14_dinov2": ({"dynamic_img_size": True, "img_size": 56}, 56, 4, 14, IMAGENET),
    # a one-block-per-stage Swin: timm gives channels-last (B, h, w, C) maps
    "swin_tiny_patch4_window7_224": (
        {"img_size": 64, "window_size": 2, "embed_dim": 24, "depths": (1,) * 4, "num_heads": (1,) * 4},
        64, 16, 4, IMAGENET,
    ),
}


class TestTimmSegmenter:
    @pytest.mark.parametrize("name", list(BACKBONES))
    def test_backbone(self, name):
        torch.manual_seed(0)
        kwargs, size, out, stride, (mean, std) = BACKBONES[name]
        model = TimmSegmenter(name, 3, decoder_dim=32, **kwargs)
        assert model.output_stride == stride and model.mean == mean and model.std == std
        net = with_features(model).eval()
        seen = {}
        model.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        logits, features = net(x)
        assert logits.shape == (1, 3, out, out) and features.shape == (1, 32, out, out)
        expected = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        torch.testing.assert_close(seen["x"], expected)
        conv = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
        for y in (logits, features):
            conv.weight.grad = None
            y.sum().backward(retain_graph=True)
            assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0

    def test_default_levels_skip_stride_two(self):
        model = TimmSegmenter("resnet18", 2, decoder_dim=16)
        assert model.levels == (1, 2, 3, 4) and len(model.decoder.proj) == 4
        picked = TimmSegmenter("resnet18", 2, decoder_dim=16, out_indices=(2, 3))
        assert picked.output_stride == 8 and picked.levels == (0, 1)
        assert picked(torch.rand(1, 3, 64, 64)).shape == (1, 2, 8, 8)

    def test_features_are_the_head_input(self):
        torch.manual_seed(0)
        model = TimmSegmenter("resnet18", 4, decoder_dim=16).eval()
        logits, features = with_features(model)(torch.rand(1, 3, 64, 64))
        torch.testing.assert_close(logits, model.segmentation_head[1](features))
        assert with_features(model).feature_dim == 16 and with_features(model).num_classes == 4

    def test_mlp_decoder_matches_spelled_out(self):
        torch.manual_seed(0)
        dec = MLPDecoder([4, 6], 8, finest=1).eval()
        a, b = torch.rand(2, 4, 3, 3), torch.rand(2, 6, 6, 6)
        pa = F.interpolate(dec.proj[0](a), size=(6, 6), mode="bilinear", align_corners=False)
        ref = dec.fuse(torch.cat([pa, dec.proj[1](b)], dim=1))
        torch.testing.assert_close(dec([a, b]), ref)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="`encoder_name` must be a timm model name.*'no_such_net'"):
            TimmSegmenter("no_such_net", 3)
        with pytest.raises(ValueError, match="`num_classes`"):
            TimmSegmenter("resnet18", 0)
        with pytest.raises(ValueError, match="`decoder_dim`"):
            TimmSegmenter("resnet18", 3, decoder_dim=0)
        with pytest.raises(ValueError, match="`features` must hold 2 levels"):
            MLPDecoder([4, 4], 8)([torch.rand(1, 4, 2, 2)])


class TestAnyInputSize:
    """ViTs accept any size: dynamic position embeddings by default, sides resized to multiples of the patch."""

    def test_vit_gets_dynamic_size_and_resizes_to_the_patch_grid(self):
        torch.manual_seed(0)
        model = TimmSegmenter("vit_small_patch14_dinov2", 3, decoder_dim=16, depth=3, img_size=56).eval()
        assert model.patch_size == (14, 14) and model.encoder.model.dynamic_img_size
        x = torch.rand(1, 3, 50, 90, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(x)
            # the reference: resize to the nearest multiples of 14 (56 x 84) by hand, then the same network
            ref = model(F.interpolate(x, size=(56, 84), mode="bilinear", align_corners=False))
            whole = model(torch.rand(2, 3, 28, 98))  # multiples: no resize, any grid
        assert out.shape == (1, 3, 4, 6)
        torch.testing.assert_close(out, ref)
        assert whole.shape == (2, 3, 2, 7)
        with torch.no_grad():
            assert model(torch.rand(1, 3, 5, 30)).shape == (1, 3, 1, 2)  # at least one patch

    def test_explicit_kwargs_win(self):
        fixed = TimmSegmenter("vit_small_patch14_dinov2", 3, decoder_dim=16, depth=3, img_size=28,
                              dynamic_img_size=False)
        assert fixed.patch_size is None
        with pytest.raises(AssertionError):  # timm's own check: a fixed-size ViT
            fixed(torch.rand(1, 3, 56, 56))
        padded = TimmSegmenter("vit_small_patch14_dinov2", 3, decoder_dim=16, depth=3, img_size=28,
                               dynamic_img_size=True, dynamic_img_pad=True)
        assert padded.patch_size is None and padded(torch.rand(1, 3, 30, 30)).shape == (1, 3, 3, 3)

    def test_cnn_is_not_resized(self):
        model = TimmSegmenter("resnet18", 2, decoder_dim=8)
        assert model.patch_size is None and model(torch.rand(1, 3, 50, 70)).shape == (1, 2, 13, 18)
