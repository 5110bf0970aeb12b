"""The learned translator's networks and losses, checked against the paper's architecture and plain loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diga
from diga.translation import (
    PAPER_LAYER_WEIGHTS,
    LearnedTranslator,
    LSGANLoss,
    MultiScaleDiscriminator,
    PerceptualLoss,
    ReconstructionLoss,
    SemanticEdgeLoss,
    TranslatorDecoder,
    TranslatorEncoder,
    TranslatorGenerator,
    VGG19Features,
    lsgan_loss,
    perceptual_loss,
    reconstruction_loss,
    semantic_edge_loss,
    semantic_edge_mask,
    vgg19_features,
)

TINY = {"dim": 8, "n_res": 1}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


# ------------------------------------------------------------------------------------------ networks


class TestTranslatorGenerator:
    def test_paper_architecture_parameter_counts(self):
        # ImgEncoder(dim=64, n_downsample=2, n_res=4) and ImgDecoder(dim=256, n_upsample=2, n_res=4).
        res = 2 * conv(256, 256, 3)
        encoder = conv(3, 64, 7) + conv(64, 128, 4) + conv(128, 256, 4) + 4 * res
        decoder = 4 * res + conv(256, 128, 5) + conv(128, 64, 5) + conv(64, 3, 7)
        g = TranslatorGenerator()
        assert n_params(g.encoder) == encoder and n_params(g.decoder) == decoder
        assert g.encoder.out_channels == 256
        assert sum(isinstance(m, nn.InstanceNorm2d) for m in g.modules()) == 3 + 8 + 8 + 2
        assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 3 + 8 + 8 + 3

    def test_shapes_any_size_and_range(self):
        g = TranslatorGenerator(**TINY, generator=seeded())
        assert TranslatorEncoder(dim=8, n_res=1)(torch.zeros(2, 3, 16, 24)).shape == (2, 32, 4, 6)
        assert TranslatorDecoder(in_channels=32, n_res=1)(torch.zeros(2, 32, 4, 6)).shape == (2, 3, 16, 24)
        for size in [(16, 24), (30, 45), (8, 8)]:
            y = g(torch.rand(2, 3, *size, generator=seeded(1))).detach()
            assert y.shape == (2, 3, *size) and y.dtype == torch.float32
            assert 0 <= float(y.min()) and float(y.max()) <= 1

    def test_signed_space_round_trip(self):
        g = TranslatorGenerator(**TINY, generator=seeded())
        x = torch.rand(1, 3, 16, 16, generator=seeded(1))
        torch.testing.assert_close(g(x), (g.decode(g.encode(x * 2 - 1)) + 1) / 2)

    def test_seeded_init(self):
        a = TranslatorGenerator(**TINY, generator=seeded(3)).state_dict()
        b = TranslatorGenerator(**TINY, generator=seeded(3)).state_dict()
        c = TranslatorGenerator(**TINY, generator=seeded(4)).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)

    def test_gradients_reach_every_parameter(self):
        g = TranslatorGenerator(**TINY, generator=seeded())
        g(torch.rand(1, 3, 16, 16)).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())

    @pytest.mark.parametrize(
        ("images", "match"),
        [
            (torch.rand(3, 16, 16), r"`images` must be \(B, 3, H, W\)"),
            (torch.rand(1, 4, 16, 16), "must have 3 channels"),
            (torch.rand(1, 3, 16, 16) * 255, r"RGB in \[0, 1\]"),
            (torch.rand(1, 3, 6, 16), "at least 8x8"),
            (torch.randint(0, 2, (1, 3, 16, 16)), "floating-point"),
        ],
    )
    def test_bad_images(self, images, match):
        with pytest.raises(ValueError, match=match):
            TranslatorGenerator(**TINY)(images)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="pad_type"):
            TranslatorGenerator(pad_type="circular")
        with pytest.raises(ValueError, match="dim"):
            TranslatorGenerator(dim=0)
        with pytest.raises(ValueError, match="in_channels"):
            TranslatorDecoder(in_channels=6, n_upsample=2)


class TestMultiScaleDiscriminator:
    def test_paper_architecture(self):
        d = MultiScaleDiscriminator()
        per_scale = (conv(3, 64, 4, False) + conv(64, 128, 4, False) + conv(128, 256, 4, False)
                     + conv(256, 512, 4, False) + conv(512, 1, 1))
        assert n_params(d) == 3 * per_scale and d.min_size == 64
        scores = d(torch.zeros(1, 3, 64, 128))
        assert [tuple(s.shape) for s in scores] == [(1, 1, 4, 8), (1, 1, 2, 4), (1, 1, 1, 2)]

    def test_downsampling_between_scales(self):
        d = MultiScaleDiscriminator(dim=4, n_layers=1, num_scales=2, generator=seeded())
        x = torch.rand(1, 3, 8, 8, generator=seeded(1))
        pooled = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        torch.testing.assert_close(d(x)[1], d.nets[1](pooled))

    def test_bad_inputs(self):
        d = MultiScaleDiscriminator(dim=4, n_layers=2, num_scales=2)
        with pytest.raises(ValueError, match="at least 8x8"):
            d(torch.zeros(1, 3, 4, 16))
        with pytest.raises(ValueError, match="3 channels"):
            d(torch.zeros(1, 1, 16, 16))
        with pytest.raises(ValueError, match="num_scales"):
            MultiScaleDiscriminator(num_scales=0)


class TestLearnedTranslator:
    def make(self, **kw) -> LearnedTranslator:
        return LearnedTranslator(TranslatorGenerator(**TINY, generator=seeded()), **kw)

    def test_protocol_and_target_ignored(self):
        t = self.make()
        assert isinstance(t, diga.Translator)
        src = torch.rand(2, 3, 16, 24, generator=seeded(1))
        out = t(src)
        assert out.shape == src.shape
        torch.testing.assert_close(t(src, torch.rand(5, 3, 40, 8)), out)
        torch.testing.assert_close(out, t.generator(src))

    def test_frozen_by_default_and_stays_eval(self):
        t = self.make()
        assert not any(p.requires_grad for p in t.parameters())
        parent = nn.ModuleDict({"translator": t}).train()
        assert not parent["translator"].training and not t.generator.training
        trainable = self.make(frozen=False).train()
        assert trainable.training and all(p.requires_grad for p in trainable.parameters())

    def test_no_gradient_into_frozen_translator(self):
        t = self.make()
        src = torch.rand(1, 3, 16, 16, requires_grad=True)
        t(src).sum().backward()
        assert src.grad is not None and all(p.grad is None for p in t.parameters())

    def test_dtype_kept(self):
        t = self.make()
        out = t(torch.rand(1, 3, 16, 16, dtype=torch.float64))
        assert out.dtype == torch.float64

    def test_bad_inputs(self):
        t = self.make()
        with pytest.raises(ValueError, match="`source`"):
            t(torch.rand(1, 3, 16, 16) + 2)
        with pytest.raises(ValueError, match="`target`"):
            t(torch.rand(1, 3, 16, 16), torch.rand(3, 16, 16))
        with pytest.raises(ValueError, match="`source` must be at least"):
            t(torch.rand(1, 3, 4, 16))
        with pytest.raises(ValueError, match="generator"):
            LearnedTranslator(nn.Conv2d(3, 3, 1))

    def test_save_and_load(self, tmp_path):
        t = self.make()
        t.save(tmp_path / "t.pt", note="hi")
        loaded = LearnedTranslator.from_checkpoint(tmp_path / "t.pt")
        x = torch.rand(1, 3, 16, 16, generator=seeded(2))
        torch.testing.assert_close(loaded(x), t(x))
        assert loaded.frozen and loaded.generator.config == t.generator.config

    def test_load_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            LearnedTranslator.from_checkpoint(tmp_path / "missing.pt")
        torch.save({"adapter": {}}, tmp_path / "other.pt")
        with pytest.raises(ValueError, match="not a translator checkpoint"):
            LearnedTranslator.from_checkpoint(tmp_path / "other.pt")
        ckpt = self.make().checkpoint()
        ckpt["generator_config"]["dim"] = 16
        torch.save(ckpt, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="do not fit"):
            LearnedTranslator.from_checkpoint(tmp_path / "bad.pt")

    def test_inside_adapter_warmup(self):
        import segmentation_models_pytorch as smp

        from diga.adapter import Adapter

        torch.manual_seed(0)
        net = smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
                       decoder_channels=(8, 8, 8))
        adapter = Adapter(net, num_classes=3, translator=self.make()).train()
        before = {k: v.clone() for k, v in adapter.translator.state_dict().items()}
        src = torch.rand(2, 3, 32, 32, generator=seeded(1))
        labels = torch.randint(0, 3, (2, 32, 32), generator=seeded(2))
        out = adapter.warmup_step(src, labels, torch.rand(2, 3, 32, 32), generator=seeded(3))
        out.loss.backward()
        assert torch.isfinite(out.loss) and not adapter.translator.training
        assert all(torch.equal(before[k], v) for k, v in adapter.translator.state_dict().items())


# ------------------------------------------------------------------------------------------ losses


class TestLSGANLoss:
    def test_against_paper_loop(self):
        g = seeded()
        real = [torch.randn(2, 1, 4, 8, generator=g), torch.randn(2, 1, 2, 4, generator=g)]
        fake = [torch.randn(2, 1, 4, 8, generator=g), torch.randn(2, 1, 2, 4, generator=g)]
        d_ref, g_ref = 0, 0
        for r, f in zip(real, fake, strict=True):  # the script's loops over scales
            d_ref += torch.mean((r - 1) ** 2) + torch.mean((f - 0) ** 2)
            g_ref += torch.mean((f - 1) ** 2)
        torch.testing.assert_close(lsgan_loss(real, real=True) + lsgan_loss(fake, real=False), d_ref)
        torch.testing.assert_close(LSGANLoss()(fake, real=True), g_ref)
        torch.testing.assert_close(lsgan_loss(real[0], real=True), torch.mean((real[0] - 1) ** 2))

    def test_dtype_and_grad(self, dtype):
        s = torch.randn(2, 1, 3, 3, dtype=dtype, requires_grad=True)
        out = lsgan_loss([s], real=False)
        out.backward()
        assert out.dtype == dtype
        torch.testing.assert_close(s.grad, 2 * s.detach() / s.numel())

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="scores"):
            lsgan_loss([], real=True)
        with pytest.raises(ValueError, match=r"scores\[1\]"):
            lsgan_loss([torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long)], real=True)


class TestReconstructionLoss:
    def test_against_l1(self, dtype):
        g = seeded()
        a, b = torch.rand(2, 2, 3, 5, 7, generator=g, dtype=dtype)
        torch.testing.assert_close(reconstruction_loss(a, b), F.l1_loss(a, b))
        torch.testing.assert_close(ReconstructionLoss()(a, b), F.l1_loss(a, b))

    def test_gradcheck(self):
        a = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        b = torch.rand(1, 3, 4, 4, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x: reconstruction_loss(x, b), (a,))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="must have the same shape"):
            reconstruction_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
        with pytest.raises(ValueError, match="`output`"):
            reconstruction_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))


class _TwoLayers(nn.Module):
    """A tiny frozen-able feature extractor returning two maps (a stand-in for VGG19)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        f1 = torch.relu(self.a(x))
        return [f1, torch.relu(self.b(self.drop(f1)))]


class TestPerceptualLoss:
    def test_against_paper_loop(self):
        torch.manual_seed(0)
        net = _TwoLayers().eval()
        g = seeded(1)
        x, y = torch.rand(2, 2, 3, 8, 20, generator=g)
        weights = (0.25, 1.0)
        # The paper's VGGLoss: halve both while wider than the limit, weighted L1 per layer, target detached.
        xr, yr = x, y
        while xr.shape[3] > 6:
            xr, yr = F.avg_pool2d(xr, 2, stride=2), F.avg_pool2d(yr, 2, stride=2)
        fx, fy = net(xr), net(yr)
        ref = sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(weights, fx, fy, strict=True))
        torch.testing.assert_close(perceptual_loss(x, y, net=net, layer_weights=weights, max_width=6), ref)
        module = PerceptualLoss(net, layer_weights=weights, max_width=6)
        torch.testing.assert_close(module(x, y), ref)

    def test_gradient_to_output_not_net(self):
        net = _TwoLayers()
        loss_fn = PerceptualLoss(net, layer_weights=(1.0, 1.0)).train()
        assert not net.training  # pinned to eval (dropout off) even when the loss module trains
        x = torch.rand(1, 3, 8, 8, requires_grad=True)
        y = torch.rand(1, 3, 8, 8, requires_grad=True)
        loss_fn(x, y).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert y.grad is None  # target features carry no gradient
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())

    def test_bad_inputs(self):
        net = _TwoLayers()
        with pytest.raises(ValueError, match="one feature map per layer weight"):
            perceptual_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), net=net, layer_weights=(1.0,))
        with pytest.raises(ValueError, match="net"):
            PerceptualLoss(None)
        with pytest.raises(ValueError, match=r"layer_weights\[0\]"):
            PerceptualLoss(net, layer_weights=(-1.0, 1.0))
        assert len(PAPER_LAYER_WEIGHTS) == 5 and PAPER_LAYER_WEIGHTS[0] == 1 / 32


class TestVGG19Features:
    def test_torchvision_layer_indices(self):
        # torchvision's vgg19().features: convs at these indices; the paper cuts after 1, 6, 11, 20, 29.
        net = VGG19Features()
        convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
        assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]
        assert net._indices == [1, 6, 11, 20, 29] and len(net.features) == 30
        assert [type(net.features[i]) for i in net._indices] == [nn.ReLU] * 5

    def test_load_local_weights(self, tmp_path):
        src = VGG19Features(layers=("relu1_1", "relu2_1"))
        state = {f"features.{k}": v for k, v in src.features.state_dict().items()}
        state["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file carries more: ignored
        torch.save(state, tmp_path / "vgg19.pth")
        net = vgg19_features(tmp_path / "vgg19.pth", layers=("relu1_1", "relu2_1"))
        x = torch.rand(1, 3, 8, 8, generator=seeded())
        for a, b in zip(net(x), src(x), strict=True):
            torch.testing.assert_close(a, b)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        # normalisation: ImageNet mean/std applied inside
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(net(x)[0], torch.relu(net.features[0]((x - mean) / std)))

    def test_load_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="never downloaded"):
            vgg19_features(tmp_path / "nope.pth")
        torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
        with pytest.raises(ValueError, match="missing"):
            vgg19_features(tmp_path / "partial.pth", layers=("relu1_1",))
        (tmp_path / "junk.pth").write_text("not a checkpoint")
        with pytest.raises(ValueError, match="cannot read"):
            vgg19_features(tmp_path / "junk.pth")
        with pytest.raises(ValueError, match="layers"):
            VGG19Features(layers=("relu9_9",))
        with pytest.raises(ValueError, match="network order"):
            VGG19Features(layers=("relu2_1", "relu1_1"))


def _paper_edge_loss(rgb_out, rgb_in, labels):
    """The paper's ``seg_edge_loss``, one sample at a time, with the 5x5 Laplacian written out."""
    kernel = torch.ones(5, 5, dtype=torch.float64)
    kernel[2, 2] = -24
    kernel = (kernel / kernel.abs().sum()).view(1, 1, 5, 5)
    total = 0.0
    for i in range(labels.shape[0]):
        lab = F.pad(labels[i].double()[None, None], (2, 2, 2, 2), mode="reflect")
        edges = (F.conv2d(lab, kernel).abs() > 0.1).double()
        edges = torch.cat([edges, edges, edges], 1)[0]
        total += (rgb_in[i].double() * edges - rgb_out[i].double() * edges).abs().sum()
    return total / rgb_out.numel()


class TestSemanticEdgeLoss:
    def test_against_paper_loop(self):
        g = seeded()
        blocks = torch.randint(0, 19, (3, 4, 6), generator=g)
        blocks[0, 1, 2] = 255  # the ignore value is a label value like any other in the paper
        labels = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
        out, inp = torch.rand(2, 3, 3, 16, 24, generator=g)
        ref = _paper_edge_loss(out, inp, labels).float()
        torch.testing.assert_close(semantic_edge_loss(out, inp, labels), ref)
        torch.testing.assert_close(SemanticEdgeLoss()(out, inp, labels), ref)

    def test_mask_band_and_gradient_only_on_edges(self):
        labels = torch.zeros(1, 8, 12, dtype=torch.long)
        labels[:, :, 6:] = 3
        mask = semantic_edge_mask(labels)
        assert mask.shape == (1, 1, 8, 12)
        assert mask[0, 0].any(0).nonzero().flatten().tolist() == [4, 5, 6, 7]  # two pixels each side
        x = torch.rand(1, 3, 8, 12, requires_grad=True)
        semantic_edge_loss(x, torch.rand(1, 3, 8, 12), labels).backward()
        assert torch.equal(x.grad[0].abs().sum(0) > 0, mask[0, 0])

    def test_flat_labels_no_loss(self):
        labels = torch.full((2, 8, 8), 7)
        assert float(semantic_edge_loss(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), labels)) == 0.0

    def test_autocast_keeps_exact_edges(self):
        g = seeded()
        labels = torch.randint(0, 19, (2, 4, 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = semantic_edge_mask(labels)
        assert torch.equal(low, semantic_edge_mask(labels))

    def test_dtype(self, dtype):
        labels = torch.randint(0, 3, (1, 8, 8))
        x, y = torch.rand(2, 1, 3, 8, 8, dtype=dtype)
        out = semantic_edge_loss(x, y, labels)
        assert out.dtype == dtype

    def test_bad_inputs(self):
        x = torch.rand(1, 3, 8, 8)
        with pytest.raises(ValueError, match="`labels` must be an integer"):
            semantic_edge_loss(x, x, torch.zeros(1, 8, 8))
        with pytest.raises(ValueError, match="`labels` must be"):
            semantic_edge_loss(x, x, torch.zeros(2, 8, 8, dtype=torch.long))
        with pytest.raises(ValueError, match="same shape"):
            semantic_edge_loss(x, torch.rand(1, 3, 8, 9), torch.zeros(1, 8, 8, dtype=torch.long))
        with pytest.raises(ValueError, match="kernel_size"):
            SemanticEdgeLoss(kernel_size=4)
        with pytest.raises(ValueError, match="`translated` must be finite"):
            semantic_edge_loss(x * float("nan"), x, torch.zeros(1, 8, 8, dtype=torch.long))
