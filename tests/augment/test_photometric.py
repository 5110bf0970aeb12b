"""StrongPhotometric: each step against kornia's kernels, per-image sampling statistics."""

from __future__ import annotations

import math

import pytest
import torch
from kornia.augmentation import RandomGaussianBlur, RandomGrayscale
from kornia.color import rgb_to_grayscale
from kornia.enhance import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, sharpness
from kornia.filters import gaussian_blur2d

import diga.augment.photometric as photometric
from diga import StrongPhotometric, strong_photometric

OFF = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, sharpness_p=0.0)


def only(**kw):
    return {**OFF, "beta": 1.0, **kw}


def _corner_cases(gen: torch.Generator) -> torch.Tensor:
    """Twelve 9 x 10 images: black, gray, a primary, ties for the maximum, the cube's corners, random."""
    x = torch.rand(12, 3, 9, 10, generator=gen)
    x[0] = 0.0  # black
    x[1] = 0.37  # gray
    x[2] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # a primary
    x[3, 1] = x[3, 0]  # red and green tied for the maximum
    x[4, 2] = x[4, 1]  # green and blue tied
    x[5] = x[5].round()  # corners of the cube
    return x


class TestStrongPhotometric:
    def test_beta_zero_is_identity(self, gen):
        x = torch.rand(3, 3, 8, 8, generator=gen)
        assert torch.equal(strong_photometric(x, beta=0.0, generator=gen), x)

    def test_all_steps_off_is_identity(self, gen):
        x = torch.rand(3, 3, 8, 8, generator=gen)
        assert torch.equal(strong_photometric(x, **only(), generator=gen), x)

    def test_grayscale_matches_kornia(self, gen):
        x = torch.rand(2, 3, 8, 8, generator=gen)
        out = strong_photometric(x, **only(grayscale_p=1.0), generator=gen)
        torch.testing.assert_close(out, rgb_to_grayscale(x).expand_as(x))
        torch.testing.assert_close(out, RandomGrayscale(p=1.0)(x))

    def test_blur_matches_kornia(self, gen):
        x = torch.rand(2, 3, 9, 9, generator=gen)
        out = strong_photometric(x, **only(blur_p=1.0), generator=gen)
        torch.testing.assert_close(out, RandomGaussianBlur((3, 3), (2.0, 2.0), p=1.0)(x))

    @pytest.mark.parametrize("size, sigma", [(3, 2.0), (5, 1.3)])
    def test_blur_is_kornias(self, gen, size, sigma):
        # One depthwise convolution with the kernel built once: kornia's two separable passes to
        # float rounding, batch after batch, on both sides of the size where kornia's CPU path
        # switches from convolution to weighted slices (256 x 256 pixels).
        big = ((1, 256, 256),) if size == 3 else ()
        for b, h, w in ((1, 11, 13), (4, 11, 13), (4, 11, 13), *big):
            x = torch.rand(b, 3, h, w, generator=gen)
            out = photometric._blur(x, size, sigma)
            torch.testing.assert_close(out, gaussian_blur2d(x, (size, size), (sigma, sigma)), rtol=0, atol=1e-6)
            assert out.is_contiguous()
        assert photometric._gaussian_kernel.cache_info().currsize >= 1

    @pytest.mark.parametrize("step", ["hue", "saturation", "sharpness"])
    def test_step_matches_kornia(self, gen, step):
        # (ours, kornia's, factor range, special factors); ours takes (B, 1, 1, 1) factors.
        ours, theirs, (low, high), special = {
            "hue": (lambda x, t: photometric._rotate_hue(x, 6 * t), lambda x, t: adjust_hue(x, t * 2 * math.pi),
                    (-0.1, 0.1), [0.5, -0.5, 0.0]),
            "saturation": (photometric._adjust_saturation, adjust_saturation, (0.0, 2.0), [0.0, 1.0, 2.0]),
            "sharpness": (photometric._sharpen, sharpness, (0.0, 0.5), [0.0, 0.5, 2.0]),
        }[step]
        x = _corner_cases(gen)
        factor = low + (high - low) * torch.rand(12, generator=gen)
        factor[6:9] = torch.tensor(special)
        out = ours(x, factor[:, None, None, None])
        torch.testing.assert_close(out, theirs(x, factor), rtol=0, atol=1e-5)
        assert torch.equal(out[:2], x[:2])  # black and gray: left exactly

    @pytest.mark.parametrize("seed", range(6))
    def test_matches_a_kornia_composition(self, seed, device):
        # The whole augmentation against its steps spelled out with kornia's functions on the
        # same draws (one random jitter order per call; each step kept per image by its flag),
        # on the CPU; on a GPU too, with the draws made by the CPU generator and moved.
        b = 8
        x = torch.rand(b, 3, 12, 14, generator=torch.Generator().manual_seed(100 + seed))
        kw = dict(beta=0.4, hue=0.5, jitter_p=0.6, grayscale_p=0.4, blur_p=0.6, sharpness_p=0.5)
        out = strong_photometric(x.to(device), **kw, generator=torch.Generator().manual_seed(seed)).cpu()

        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(4, generator=g).tolist()
        u = [torch.rand(b, generator=g) for _ in range(9)]
        flag = [(u[i] < p)[:, None, None, None] for i, p in ((0, 0.6), (5, 0.4), (6, 0.6), (8, 0.5))]
        factors = [0.6 + 0.8 * u[1], 0.6 + 0.8 * u[2], 0.8 + 0.4 * u[3], -0.5 + 1.0 * u[4]]
        steps = [lambda t: adjust_brightness(t, factors[0] - 1), lambda t: adjust_contrast(t, factors[1]),
                 lambda t: adjust_saturation(t, factors[2]), lambda t: adjust_hue(t, factors[3] * 2 * math.pi)]
        jittered = x
        for i in order:
            jittered = steps[i](jittered)
        ref = torch.where(flag[0], jittered.clamp(0, 1), x)
        ref = torch.where(flag[1], rgb_to_grayscale(ref).expand_as(ref), ref)
        ref = torch.where(flag[2], gaussian_blur2d(ref, (3, 3), (2.0, 2.0)), ref)
        ref = torch.where(flag[3], sharpness(ref, 0.5 * u[7]), ref)
        torch.testing.assert_close(out, 0.4 * ref + 0.6 * x, rtol=0, atol=1e-5)

    def test_step_no_image_drew_is_skipped(self, gen, monkeypatch):
        calls = {"hue": 0, "blur": 0}

        def counting(name, fn):
            def wrapped(*args, **kwargs):
                calls[name] += 1
                return fn(*args, **kwargs)
            return wrapped

        monkeypatch.setattr(photometric, "_rotate_hue", counting("hue", photometric._rotate_hue))
        monkeypatch.setattr(photometric, "_blur", counting("blur", photometric._blur))
        x = torch.rand(4, 3, 8, 8, generator=gen)
        # Probabilities so small that no image draws the step: skipped, output unchanged.
        out = strong_photometric(x, **only(jitter_p=1e-9, blur_p=1e-9), generator=gen)
        assert calls == {"hue": 0, "blur": 0} and torch.equal(out, x)
        strong_photometric(x, **only(jitter_p=1.0, blur_p=1.0), generator=gen)
        assert calls == {"hue": 1, "blur": 1}

    def test_sharpness_factor_range(self, gen):
        # sharpness factor u ~ U[0, 0.5]: out = blend(smoothed, x, u); recover u per image.
        x = torch.rand(400, 3, 6, 6, generator=gen)
        out = strong_photometric(x, **only(sharpness_p=1.0), generator=gen)
        smooth = sharpness(x, torch.zeros(400))
        u = ((out - smooth).flatten(1) * (x - smooth).flatten(1)).sum(1) / (
            (x - smooth).flatten(1).pow(2).sum(1)
        )
        assert u.min() >= -1e-4 and u.max() <= 0.5 + 1e-4
        assert abs(u.mean().item() - 0.25) < 0.03

    def test_brightness_uniform_and_probability(self):
        # Mid-grey images, brightness only: out - x is the additive factor - 1 ~ U[-0.4, 0.4].
        g = torch.Generator().manual_seed(3)
        x = torch.full((2000, 3, 2, 2), 0.5)
        out = strong_photometric(
            x, **only(jitter_p=0.5, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0), generator=g
        )
        shift = (out - x).mean(dim=(1, 2, 3))
        jittered = shift != 0
        assert abs(jittered.float().mean().item() - 0.5) < 0.05
        s = shift[jittered]
        assert s.abs().max() <= 0.4 + 1e-6
        assert abs(s.mean().item()) < 0.02 and abs(s.var().item() - 0.8**2 / 12) < 0.01
        # Untouched images are bit-exact.
        assert torch.equal(out[~jittered], x[~jittered])

    def test_step_probabilities(self):
        g = torch.Generator().manual_seed(4)
        x = torch.rand(1000, 3, 4, 4, generator=g)
        out = strong_photometric(x, **only(grayscale_p=0.3), generator=g)
        gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
        assert abs(gray.float().mean().item() - 0.3) < 0.05

    def test_sampled_per_image(self, gen):
        x = torch.rand(1, 3, 8, 8, generator=gen).expand(16, 3, 8, 8).contiguous()
        out = StrongPhotometric()(x, generator=gen)
        assert len({tuple(o.flatten()[:5].tolist()) for o in out}) > 4

    def test_blend(self, gen):
        x = torch.rand(2, 3, 8, 8, generator=gen)
        aug = strong_photometric(x, **only(grayscale_p=1.0), generator=gen)
        out = strong_photometric(x, **{**only(grayscale_p=1.0), "beta": 0.4}, generator=gen)
        torch.testing.assert_close(out, 0.4 * aug + 0.6 * x)

    def test_seeded_determinism(self):
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        a = StrongPhotometric()(x, generator=torch.Generator().manual_seed(5))
        b = StrongPhotometric()(x, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b)

    def test_range_dtype_device(self, gen, device, low_dtype):
        x = torch.rand(4, 3, 8, 8, generator=gen).to(device=device, dtype=low_dtype)
        out = StrongPhotometric()(x, generator=torch.Generator().manual_seed(0))
        assert out.dtype == low_dtype and out.device.type == device.type
        assert out.min() >= 0 and out.max() <= 1
        # A generator on the images' device draws there (nine draws, every step computed and selected).
        again = [StrongPhotometric()(x, generator=torch.Generator(device=device).manual_seed(1)) for _ in range(2)]
        assert torch.equal(*again) and again[0].min() >= 0 and again[0].max() <= 1

    @pytest.mark.parametrize(
        "images, match",
        [
            (torch.rand(3, 8, 8), "images"),
            (torch.rand(1, 1, 8, 8), "channels"),
            (torch.rand(1, 3, 8, 8) * 255, r"\[0, 1\]"),
            (torch.zeros(0, 3, 8, 8), "empty"),
            (torch.full((1, 3, 8, 8), float("nan")), "finite"),
        ],
    )
    def test_bad_images(self, images, match):
        with pytest.raises(ValueError, match=match):
            strong_photometric(images)

    @pytest.mark.parametrize(
        "kwargs, match",
        [({"beta": 1.5}, "beta"), ({"blur_p": -0.1}, "blur_p"), ({"blur_kernel": 4}, "blur_kernel"),
         ({"hue": 0.7}, "hue"), ({"blur_sigma": 0.0}, "blur_sigma")],
    )
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            StrongPhotometric(**kwargs)
