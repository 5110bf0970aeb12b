"""Sliding-window inference: windows batched, logits averaged where they overlap, every scale slid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.inference import HRDA_WINDOW, WHOLE_IMAGE_MAX_PIXELS, check_window, predict_logits, resolve_window


def pointwise(classes: int = 5, seed: int = 0) -> nn.Module:
    """1x1 convolutions only: each pixel's logits depend on that pixel alone (receptive field 1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))


def spatial(classes: int = 4, seed: int = 0) -> nn.Module:
    """A 5 x 5 receptive field: window borders see zero padding, so only the averaging rule makes it agree."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, classes, 3, padding=1))


def reference_slide(model: nn.Module, image: torch.Tensor, window, stride) -> torch.Tensor:
    """mmseg/HRDA's ``slide_inference`` written as its loop: per window, per image, a count map."""
    _, _, h, w = image.shape
    wh, ww = window
    sh, sw = stride
    rows = max(h - wh + sh - 1, 0) // sh + 1
    cols = max(w - ww + sw - 1, 0) // sw + 1
    out, count = None, torch.zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = r * sh, c * sw
            y2, x2 = min(y1 + wh, h), min(x1 + ww, w)
            y1, x1 = max(y2 - wh, 0), max(x2 - ww, 0)
            logits = model(image[:, :, y1:y2, x1:x2])
            if out is None:
                out = torch.zeros(image.shape[0], logits.shape[1], h, w)
            out[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def images(shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


class TestSlidingWindow:
    @pytest.mark.parametrize("shape, window, stride", [
        ((1, 3, 37, 53), (16, 16), (8, 8)),
        ((2, 3, 40, 64), (24, 20), (10, 7)),     # strides that do not divide: the last window flush with the end
        ((1, 3, 12, 70), (32, 32), (16, 16)),    # taller window than the image: that axis runs whole
        ((1, 3, 20, 20), (20, 20), (20, 20)),    # one window: the whole image
    ])
    @pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.5), (0.75, 1.25)])
    def test_equals_whole_image_inference_where_the_receptive_field_fits(self, shape, window, stride, scales):
        model, x = pointwise(), images(shape)
        slid = predict_logits(model, x, scales, window=window, stride=stride, batch_size=3)
        torch.testing.assert_close(slid, predict_logits(model, x, scales), atol=1e-5, rtol=0)

    @pytest.mark.parametrize("window, stride", [((16, 16), (8, 8)), ((24, 20), (10, 7)), ((48, 80), (16, 16))])
    def test_overlaps_are_averaged_as_the_reference_loop(self, window, stride):
        model, x = spatial(), images((2, 3, 40, 64), seed=1)
        expected = reference_slide(model.eval(), x, (min(window[0], 40), min(window[1], 64)), stride)
        got = predict_logits(model, x, (1.0,), window=window, stride=stride, batch_size=5)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(got, predict_logits(model, x, (1.0,)), atol=1e-5) or window == (48, 80)

    def test_every_scale_slides_and_is_max_fused(self):
        model, x = spatial(), images((1, 3, 48, 64), seed=2)
        got = predict_logits(model, x, (1.0, 0.5), window=16, stride=8)
        half = F.interpolate(x, size=(24, 32), mode="bilinear", align_corners=True)
        small = F.interpolate(reference_slide(model.eval(), half, (16, 16), (8, 8)), size=(48, 64),
                              mode="bilinear", align_corners=True)
        expected = torch.maximum(reference_slide(model, x, (16, 16), (8, 8)), small)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    def test_the_model_sees_at_most_batch_size_windows(self):
        seen = []

        class Recorder(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = pointwise(3)

            def forward(self, x):
                seen.append(tuple(x.shape))
                return self.net(x)

        model, x = Recorder(), images((2, 3, 50, 90))
        out = predict_logits(model, x, (1.0, 0.5), window=(16, 24), stride=(8, 12), batch_size=4)
        assert out.shape == (2, 3, 50, 90)
        assert all(b <= 4 and h <= 16 and w <= 24 for b, _, h, w in seen), seen
        by_batch = predict_logits(model, x, (1.0, 0.5), window=(16, 24), stride=(8, 12), batch_size=1)
        torch.testing.assert_close(out, by_batch, atol=1e-6, rtol=0)

    def test_a_coarse_model_output_is_resized_per_window(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1))  # logits at 1/4
        out = predict_logits(model, images((1, 3, 41, 67)), (1.0,), window=16, stride=8)
        assert out.shape == (1, 4, 41, 67) and out.dtype == torch.float32 and torch.isfinite(out).all()

    def test_model_mode_is_restored(self):
        model = pointwise().train()
        predict_logits(model, images((1, 3, 16, 16)), window=8)
        assert model.training

    @pytest.mark.parametrize("kwargs, match", [
        ({"window": 0}, "window"),
        ({"window": (16, -1)}, "window"),
        ({"window": (16, 16, 16)}, "window"),
        ({"window": 16.0}, "window"),
        ({"window": (16, 16), "stride": (17, 8)}, "stride"),
        ({"window": (16, 16), "stride": 0}, "stride"),
        ({"stride": (8, 8)}, "stride"),
        ({"window": 16, "batch_size": 0}, "batch_size"),
        ({"scales": (float("inf"),)}, "scales"),
        ({"scales": (float("nan"),)}, "scales"),
        ({"scales": (0.0,)}, "scales"),
        ({"scales": ()}, "scales"),
    ])
    def test_bad_values(self, kwargs, match):
        scales = kwargs.pop("scales", (1.0,))
        with pytest.raises(ValueError, match=match):
            predict_logits(pointwise(), images((1, 3, 16, 16)), scales, **kwargs)


class TestResolveWindow:
    def test_whole_image_below_the_bound_hrda_above_it(self):
        assert resolve_window((1024, 2048)) == (None, None)
        assert resolve_window((4096, 4096)) == (None, None)
        assert resolve_window((4096, 4097)) == HRDA_WINDOW == ((1024, 1024), (512, 512))
        assert resolve_window((9000, 9000), max_pixels=None) == (None, None)
        assert WHOLE_IMAGE_MAX_PIXELS == 4096 * 4096

    def test_a_given_window_wins_and_stride_defaults_to_half(self):
        assert resolve_window((10, 10), (512, 768)) == ((512, 768), (256, 384))
        assert check_window(7) == ((7, 7), (4, 4))
        with pytest.raises(ValueError, match="stride"):
            resolve_window((10, 10), None, (4, 4))
