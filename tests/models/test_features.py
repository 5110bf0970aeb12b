"""with_features: logits + hooked features from smp, timm and plain models."""

from __future__ import annotations

import copy
import gc
import io
import os
import weakref

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

import diga
from diga import EMATeacher
from diga.models import DeepLabV2, FeatureSegmenter, TimmSegmenter, encoder_mean_std, with_features

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# arch -> (input size, feature channels, feature size) for a resnet18 encoder
SMP_ARCHS = {
    "Unet": (64, 16, 64),
    "UnetPlusPlus": (64, 16, 64),
    "FPN": (64, 128, 16),
    "DeepLabV3": (64, 256, 8),
    "DeepLabV3Plus": (64, 256, 16),
    "PSPNet": (64, 512, 8),
    "Linknet": (64, 32, 64),
    "MAnet": (64, 16, 64),
    "PAN": (128, 32, 32),  # its pyramid attention pools a stride-16 map three times
    "UPerNet": (64, 256, 16),
    "Segformer": (64, 256, 16),
}


def images(batch=2, size=64, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))


def seen_input(model: nn.Module) -> dict:
    """Record what the wrapped model itself receives."""
    seen = {}
    model.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0].detach()))
    return seen


def check_through(net: FeatureSegmenter, size: int, num_classes: int, logits_size: int, feat_dim: int,
                  feat_size: int, mean, std) -> None:
    """Shapes, normalisation seen by the model, and gradients from both outputs to the first conv.

    Batch 1 in eval mode keeps it cheap (batch-norm needs 2 samples in train mode).
    """
    net.eval()
    x = images(batch=1, size=size)
    seen = seen_input(net.model)
    logits, features = net(x)
    assert logits.shape == (1, num_classes, logits_size, logits_size)
    assert features.shape == (1, feat_dim, feat_size, feat_size)
    assert net.num_classes == num_classes and net.feature_dim == feat_dim
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["x"], expected)
    conv = first_conv(net.model).weight
    for out in (logits, features):
        conv.grad = None
        out.sum().backward(retain_graph=True)
        assert conv.grad is not None and conv.grad.abs().sum() > 0
    assert net._catcher.value is None  # nothing kept after the call


class TestSmpModels:
    @pytest.mark.parametrize("arch", list(SMP_ARCHS))
    def test_arch(self, arch):
        torch.manual_seed(0)
        size, dim, feat = SMP_ARCHS[arch]
        model = getattr(smp, arch)("resnet18", encoder_weights=None, classes=3)
        net = with_features(model)
        assert net.layer == "segmentation_head" and net.hook == "input"
        check_through(net, size, 3, size, dim, feat, *IMAGENET)

    def test_dpt_with_timm_vit(self):
        torch.manual_seed(0)
        model = smp.DPT(
            "tu-vit_tiny_patch16_224", encoder_weights=None, classes=3, dynamic_img_size=True,
            decoder_intermediate_channels=(32, 32, 32, 32), decoder_fusion_channels=32,
        )
        net = with_features(model)
        check_through(net, 64, 3, 64, 32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's ViT statistics

    def test_aux_head_is_dropped(self):
        model = smp.Unet("resnet18", encoder_weights=None, classes=3, aux_params={"classes": 7})
        logits, features = with_features(model)(images())
        assert logits.shape == (2, 3, 64, 64) and features.shape[1] == 16

    def test_encoder_statistics_without_download(self):
        assert encoder_mean_std("resnet18") == IMAGENET
        assert encoder_mean_std("mit_b0", "imagenet") == IMAGENET
        assert encoder_mean_std("xception") == ((0.5,) * 3, (0.5,) * 3)
        assert encoder_mean_std("timm-efficientnet-b0", "advprop") == ((0.5,) * 3, (0.5,) * 3)
        assert encoder_mean_std("timm-efficientnet-b0", "imagenet") == IMAGENET
        mean, std = encoder_mean_std("dpn68")
        assert mean[0] == pytest.approx(124 / 255) and std[0] == pytest.approx(1 / (0.0167 * 255))
        assert encoder_mean_std("tu-vit_tiny_patch16_224") == ((0.5,) * 3, (0.5,) * 3)

    def test_smp_preprocessing_parameters_from_the_local_cache(self, tmp_path, monkeypatch):
        import huggingface_hub

        config = tmp_path / "config.json"
        config.write_text('{"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}')
        asked = []

        def cached(repo_id, filename, revision=None, **kwargs):
            asked.append((repo_id, filename))
            return str(config)

        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cached)
        assert encoder_mean_std("resnet18", "imagenet") == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
        assert asked == [("smp-hub/resnet18.imagenet", "config.json")]
        assert encoder_mean_std("resnet18") == IMAGENET  # random weights: no lookup
        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
        assert encoder_mean_std("xception", "imagenet") == ((0.5,) * 3, (0.5,) * 3)  # not cached: the table


class TestOtherModels:
    def test_timm_segmenter_and_deeplabv2_hook_their_head(self):
        torch.manual_seed(0)
        net = with_features(TimmSegmenter("convnext_atto", 4, decoder_dim=32))
        check_through(net, 64, 4, 16, 32, 16, *IMAGENET)
        net = with_features(DeepLabV2("resnet18", 4, head="sum"))
        check_through(net, 64, 4, 8, 512, 8, *IMAGENET)

    def test_layer_on_sequential(self):
        torch.manual_seed(0)
        seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
        net = with_features(seq, layer="0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        assert net.hook == "output" and net.feature_dim == 8 and net.num_classes is None
        x = images()
        logits, features = net(x)
        z = (x - 0.5) / 0.25
        torch.testing.assert_close(features, seq[0](z))
        torch.testing.assert_close(logits, seq(z))
        features.sum().backward()
        assert seq[0].weight.grad is not None

    def test_dotted_layer_and_dict_output(self):
        class DictNet(nn.Module):  # torchvision's segmentation models return {"out": ..., "aux": ...}
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Sequential(nn.ReLU(), nn.Identity()))
                self.cls = nn.Conv2d(6, 2, 1)

            def forward(self, x):
                f = self.body(x)
                return {"out": self.cls(f), "aux": f}

        net = with_features(DictNet(), layer="body.1.1")
        logits, features = net(images())
        assert logits.shape == (2, 2, 64, 64) and features.shape == (2, 6, 64, 64)

    def test_auxiliary_output(self):
        class AuxNet(nn.Module):  # a main and an auxiliary head, as HRNet-OCR or torchvision's FCN
            def __init__(self, as_dict):
                super().__init__()
                self.as_dict = as_dict
                self.body = nn.Conv2d(3, 6, 1)
                self.aux_head = nn.Conv2d(6, 2, 1)
                self.segmentation_head = nn.Conv2d(6, 2, 1)

            def forward(self, x):
                f = self.body(x)
                out, aux = self.segmentation_head(f), self.aux_head(f)[..., ::2, ::2]
                return {"out": out, "aux": aux} if self.as_dict else (out, aux)

        torch.manual_seed(0)
        x = images()
        for as_dict in (True, False):
            model = AuxNet(as_dict)
            net = with_features(model)
            logits, features, aux = net(x, aux=True)
            z = (x - net.mean) / net.std
            torch.testing.assert_close(aux, model.aux_head(model.body(z))[..., ::2, ::2])
            assert logits.shape == (2, 2, 64, 64) and features.shape == (2, 6, 64, 64)
            assert len(net(x)) == 2  # without aux=True: (logits, features), as every model
            aux.sum().backward()
            assert model.aux_head.weight.grad is not None
        # no auxiliary map: None (smp's image-level aux_params classifier is not one)
        assert with_features(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")(x, aux=True)[2] is None
        smp_aux = smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
                           decoder_channels=(16, 8, 8), aux_params={"classes": 7})
        assert with_features(smp_aux)(x, aux=True)[2] is None

    def test_default_mean_std_is_imagenet(self):
        net = with_features(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")
        torch.testing.assert_close(net.mean.flatten(), torch.tensor(IMAGENET[0]))
        assert "mean" not in net.state_dict()  # the state dict stays the model's

    def test_idempotent(self):
        net = with_features(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")
        assert with_features(net) is net


class TestCopiesAndModes:
    def unet(self):
        torch.manual_seed(0)
        model = smp.Unet("resnet18", encoder_weights=None, classes=3, decoder_channels=(32, 16, 8, 8, 8))
        return with_features(model)

    def test_deepcopy_captures_into_the_copy(self):
        net = self.unet().eval()
        twin = copy.deepcopy(net)
        with torch.no_grad():  # make the copy differ, so a leaked hook would show
            for p in twin.model.decoder.parameters():
                p.mul_(1.5)
        a, b = images(seed=1), images(seed=2)
        la, fa = net(a)
        lb, fb = twin(b)
        assert fb.shape == fa.shape and not torch.allclose(fa, fb)
        for out, ref in zip((la, fa, lb, fb), (*net(a), *twin(b)), strict=True):
            torch.testing.assert_close(out, ref)
        hook = next(iter(twin.model.segmentation_head._forward_pre_hooks.values()))
        assert hook is twin._catcher and twin._catcher is not net._catcher

    def test_ema_teacher(self):
        student = self.unet()
        teacher = EMATeacher(student)
        teacher.update(student)
        x = images()
        logits, features = teacher(x)
        student.eval()
        torch.testing.assert_close(features, student(x)[1])
        assert not features.requires_grad

    def test_train_eval_passthrough(self):
        net = self.unet()
        net.eval()
        assert not net.model.training and not net.model.decoder.training
        net.train()
        assert net.model.training and net.model.encoder.training

    def test_hook_idle_outside_forward(self):
        net = self.unet()
        net.model(net.normalize(images()))  # the bare model: the hook stores nothing
        assert net._catcher.value is None
        logits, features = net(images())
        ref = weakref.ref(features)
        del logits, features
        gc.collect()
        assert ref() is None  # the wrapper kept no reference

    def test_autocast_bf16(self):
        net = self.unet().eval()
        x = images()
        with torch.no_grad():
            l32, f32 = net(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                l16, f16 = net(x)
        assert l16.dtype == torch.bfloat16 and f16.dtype == torch.bfloat16
        torch.testing.assert_close(f16.float(), f32, atol=0.1, rtol=0.1)
        torch.testing.assert_close(l16.float(), l32, atol=0.1, rtol=0.1)

    def test_float64_inputs(self):
        net = with_features(nn.Sequential(nn.Conv2d(3, 2, 1)).double(), layer="0")
        logits, features = net(images().double())
        assert logits.dtype == features.dtype == torch.float64


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.segmentation_head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.segmentation_head(self.encoder(x))


class TestCompile:
    def test_compiled_matches_eager(self):
        torch._dynamo.reset()
        torch.manual_seed(0)
        net = with_features(_Tiny()).eval()
        compiled = torch.compile(net, backend="aot_eager")
        for seed in (0, 1):
            x = images(seed=seed)
            for out, ref in zip(compiled(x), net(x), strict=True):
                torch.testing.assert_close(out, ref)
        assert net._catcher.value is None

    def test_one_graph_without_value_checks(self):
        torch._dynamo.reset()
        net = with_features(_Tiny()).eval()
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        with diga.value_checks(False):
            logits, features = compiled(images())
        torch.testing.assert_close(features, net(images())[1])

    @pytest.mark.skipif(
        os.environ.get("DIGA_SLOW_TESTS") != "1", reason="inductor on CPU: ~30 s (set DIGA_SLOW_TESTS=1)"
    )
    def test_inductor(self):
        torch._dynamo.reset()
        net = with_features(smp.Unet("resnet18", encoder_weights=None, classes=3)).eval()
        compiled = torch.compile(net)
        x = images()
        for out, ref in zip(compiled(x), net(x), strict=True):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


class TestDevicesAndPickle:
    def test_device(self, device):
        torch.manual_seed(0)
        net = with_features(_Tiny()).to(device).eval()
        x = images().to(device)
        logits, features = net(x)
        assert logits.device.type == features.device.type == device.type
        assert net.mean.device.type == device.type

    def test_pickle_round_trip_keeps_its_own_hook(self):
        net = with_features(_Tiny()).eval()
        buffer = io.BytesIO()
        torch.save(net, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        hook = next(iter(loaded.model.segmentation_head._forward_pre_hooks.values()))
        assert hook is loaded._catcher
        for out, ref in zip(loaded(images()), net(images()), strict=True):
            torch.testing.assert_close(out, ref)


class TestBadInput:
    def net(self):
        return with_features(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")

    def test_pixels_0_255(self):
        with pytest.raises(ValueError, match=r"`images` must be RGB in \[0, 1\]"):
            self.net()(images() * 255)

    def test_one_channel(self):
        with pytest.raises(ValueError, match="`images` must have 3 channels"):
            self.net()(torch.rand(2, 1, 8, 8))

    def test_wrong_rank_and_nonfinite(self):
        with pytest.raises(ValueError, match="images"):
            self.net()(torch.rand(3, 8, 8))
        x = images()
        x[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="`images` must be finite"):
            self.net()(x)

    def test_unknown_layer_lists_submodules(self):
        seq = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        with pytest.raises(ValueError, match=r"`layer` must name a submodule.*'nope'.*'0', '1'"):
            with_features(seq, layer="nope")

    def test_no_layer_for_unknown_model(self):
        with pytest.raises(ValueError, match=r"`layer` must name .*segmentation_head.*got layer=None"):
            with_features(nn.Sequential(nn.Conv2d(3, 2, 1)))

    def test_bad_statistics(self):
        seq = nn.Sequential(nn.Conv2d(3, 2, 1))
        with pytest.raises(ValueError, match="`mean` must be three"):
            with_features(seq, layer="0", mean=(0.5, 0.5))
        with pytest.raises(ValueError, match="`std` must be three positive"):
            with_features(seq, layer="0", std=(0.5, 0.0, 0.5))

    def test_not_a_module(self):
        with pytest.raises(ValueError, match="`model` must be an nn.Module"):
            with_features(lambda x: x)

    def test_layer_that_does_not_run(self):
        class Skips(nn.Module):
            def __init__(self):
                super().__init__()
                self.used, self.unused = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1)

            def forward(self, x):
                return self.used(x)

        with pytest.raises(ValueError, match="`layer` 'unused' must give features.*did not run"):
            with_features(Skips(), layer="unused")(images())

    def test_rewrap_with_settings(self):
        with pytest.raises(ValueError, match="already a FeatureSegmenter"):
            with_features(self.net(), layer="0")
