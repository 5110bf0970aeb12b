"""DeepLabV2: stride-8 ResNet encoder, the classic summed ASPP and DiGA's head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.models import ASPPSumHead, DeepLabV2, DiGAASPPDecoder, SqueezeExcitation, with_features


def x64(batch=2):
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class TestDeepLabV2:
    @pytest.mark.parametrize(("head", "dim"), [("diga", 256), ("sum", 512)])
    def test_shapes_at_stride_8(self, head, dim):
        torch.manual_seed(0)
        net = with_features(DeepLabV2("resnet18", 5, head=head))
        logits, features = net(x64())
        assert logits.shape == (2, 5, 8, 8) and features.shape == (2, dim, 8, 8)
        assert net.feature_dim == dim and net.num_classes == 5
        assert net.model.encoder.output_stride == 8
        assert net.model.mean == (0.485, 0.456, 0.406)

    def test_sum_head_is_the_sum_of_four_dilated_convs(self):
        torch.manual_seed(0)
        head = ASPPSumHead(16, 3).double()
        x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
        ref = torch.zeros(2, 3, 9, 9, dtype=torch.float64)
        for d, conv in zip((6, 12, 18, 24), head.branches, strict=True):  # the paper's loop
            ref += F.conv2d(x, conv.weight, conv.bias, padding=d, dilation=d)
        torch.testing.assert_close(head(x), ref)
        assert torch.autograd.gradcheck(head, (x[:1, :, :4, :4].clone().requires_grad_(),))

    def test_sum_head_features_are_the_encoder_output(self):
        torch.manual_seed(0)
        model = DeepLabV2("resnet18", 3, head="sum").eval()
        x = x64(1)
        _, features = with_features(model, mean=(0, 0, 0), std=(1, 1, 1))(x)
        torch.testing.assert_close(features, model.encoder(x)[-1])

    def test_diga_head_structure(self):
        model = DeepLabV2("resnet18", 19)
        dec = model.decoder
        assert isinstance(dec, DiGAASPPDecoder) and len(dec.branches) == 5
        kinds = [(b[0].kernel_size, b[0].dilation, b[0].out_channels) for b in dec.branches]
        assert kinds == [((1, 1), (1, 1), 256)] + [((3, 3), (d, d), 256) for d in (6, 12, 18, 24)]
        assert all(b[1].num_groups == 32 and isinstance(b[2], nn.ReLU) for b in dec.branches)
        se, conv, gn = dec.bottleneck
        assert isinstance(se, SqueezeExcitation) and se.fc[0].out_features == 1280 // 16
        assert conv.in_channels == 1280 and conv.out_channels == 256 and conv.kernel_size == (3, 3)
        assert gn.num_groups == 32 and dec.dropout.p == 0.1 and isinstance(dec.dropout, nn.Dropout2d)
        cls = model.segmentation_head
        assert cls.kernel_size == (1, 1) and cls.bias is None and cls.weight.std() < 0.002

    def test_diga_features_follow_the_dropout(self):
        torch.manual_seed(0)
        model = DeepLabV2("resnet18", 3)
        net = with_features(model, mean=(0, 0, 0), std=(1, 1, 1))
        x = x64(1)
        net.eval()
        _, features = net(x)
        torch.testing.assert_close(features, model.decoder(model.encoder(x)[-1]))
        net.train()
        torch.manual_seed(1)
        logits, features = net(torch.cat([x, x]))
        dropped = (features.flatten(2) == 0).all(-1)  # whole channels zeroed by Dropout2d
        assert dropped.any()
        torch.testing.assert_close(logits, model.segmentation_head(features))

    def test_squeeze_excitation_spelled_out(self):
        torch.manual_seed(0)
        se = SqueezeExcitation(32)
        x = torch.rand(2, 32, 3, 3)
        w = torch.sigmoid(se.fc[2](torch.relu(se.fc[0](x.mean((2, 3))))))
        torch.testing.assert_close(se(x), x * w[:, :, None, None])

    def test_param_groups(self):
        model = DeepLabV2("resnet18", 3)
        enc, head = model.param_groups(1e-3)
        assert enc["lr"] == 1e-3 and head["lr"] == pytest.approx(1e-2)
        assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
        rest = [*model.decoder.parameters(), *model.segmentation_head.parameters()]
        assert {id(p) for p in head["params"]} == {id(p) for p in rest}

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="`head` must be 'diga' or 'sum', got 'max'"):
            DeepLabV2("resnet18", 3, head="max")
        with pytest.raises(ValueError, match="`encoder_name` 'resnet7' is not an smp encoder"):
            DeepLabV2("resnet7", 3)
        with pytest.raises(ValueError, match="`num_classes`"):
            DeepLabV2("resnet18", 0)
        with pytest.raises(ValueError, match="`dim` must be divisible"):
            DiGAASPPDecoder(8, dim=48)
