"""FourierTranslator against the paper's fourier_exchange, written its way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diga import FourierTranslator, IdentityTranslator, Translator, fourier_translate


def paper_fourier_exchange(src, trg, L=0.01):
    """The paper's util/utils.py fourier_exchange: corner slices of the unshifted spectrum."""
    fs = torch.fft.fftn(src, dim=(-2, -1))
    ft = torch.fft.fftn(trg, dim=(-2, -1))
    amp_s, pha_s = fs.abs(), torch.atan2(fs.imag, fs.real)
    amp_t = ft.abs()
    _, _, h, w = amp_s.shape
    b = int(np.floor(np.amin((h, w)) * L))
    amp = amp_s.clone()
    amp[:, :, 0:b, 0:b] = amp_t[:, :, 0:b, 0:b]
    amp[:, :, 0:b, w - b : w] = amp_t[:, :, 0:b, w - b : w]
    amp[:, :, h - b : h, 0:b] = amp_t[:, :, h - b : h, 0:b]
    amp[:, :, h - b : h, w - b : w] = amp_t[:, :, h - b : h, w - b : w]
    out = torch.complex(torch.cos(pha_s) * amp, torch.sin(pha_s) * amp)
    return torch.fft.ifftn(out, dim=(-2, -1)).real


class TestFourierTranslator:
    @pytest.mark.parametrize("beta, size", [(0.01, (200, 300)), (0.1, (32, 48)), (0.12, (31, 17))])
    def test_matches_paper(self, gen, dtype, beta, size):
        src = torch.rand(2, 3, *size, generator=gen, dtype=dtype)
        tgt = torch.rand(2, 3, *size, generator=gen, dtype=dtype)
        ref = paper_fourier_exchange(src, tgt, beta).clamp(0, 1)
        torch.testing.assert_close(fourier_translate(src, tgt, beta=beta), ref, atol=1e-5, rtol=1e-5)

    def test_beta_zero_is_identity(self, gen):
        src, tgt = torch.rand(2, 2, 3, 16, 16, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(FourierTranslator(beta=0.0)(src, tgt), src)

    @pytest.mark.parametrize("beta, size", [(0.01, (48, 64)), (0.02, (48, 64)), (0.01, (99, 120))])
    def test_small_images_swap_a_one_pixel_band(self, gen, beta, size):
        # The paper's formula gives b = 0 here (the source back); ours swaps the b = 1 band.
        src = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
        tgt = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(paper_fourier_exchange(src, tgt, beta), src)
        ref = paper_fourier_exchange(src, tgt, 1.0 / min(size)).clamp(0, 1)
        torch.testing.assert_close(fourier_translate(src, tgt, beta=beta), ref)
        dark = 0.5 * src
        assert (fourier_translate(dark, tgt, beta=beta).mean() - tgt.mean()).abs() < 0.02

    def test_takes_target_low_frequencies(self, gen):
        src = 0.25 + 0.5 * torch.rand(1, 3, 64, 64, generator=gen, dtype=torch.float64)
        tgt = torch.full((1, 3, 64, 64), 0.7, dtype=torch.float64)
        out = FourierTranslator(beta=0.05)(src, tgt)
        # The DC term is the mean colour: it becomes the target's.
        torch.testing.assert_close(out.mean(dim=(2, 3)), tgt.mean(dim=(2, 3)), atol=1e-3, rtol=0)

    def test_target_broadcast_and_resize(self, gen):
        src = torch.rand(3, 3, 16, 16, generator=gen)
        tgt = torch.rand(1, 3, 20, 24, generator=gen)
        out = fourier_translate(src, tgt, beta=0.1)
        resized = torch.nn.functional.interpolate(tgt, (16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[2:], fourier_translate(src[2:], resized, beta=0.1))

    def test_low_precision_and_device(self, gen, device, low_dtype):
        src, tgt = torch.rand(2, 1, 3, 16, 16, generator=gen).to(device=device, dtype=low_dtype)
        out = fourier_translate(src, tgt, beta=0.1)
        assert out.dtype == low_dtype and out.device.type == device.type

    def test_protocol(self):
        assert isinstance(FourierTranslator(), Translator)
        assert isinstance(IdentityTranslator(), Translator)
        x = torch.rand(1, 3, 4, 4)
        assert IdentityTranslator()(x, x) is x

    @pytest.mark.parametrize(
        "src, tgt, match",
        [(torch.rand(3, 8, 8), torch.rand(1, 3, 8, 8), "source"),
         (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), "target"),
         (torch.zeros(0, 3, 8, 8), torch.rand(1, 3, 8, 8), "source")],
    )
    def test_bad_input(self, src, tgt, match):
        with pytest.raises(ValueError, match=match):
            fourier_translate(src, tgt)

    def test_bad_beta(self):
        with pytest.raises(ValueError, match="beta"):
            FourierTranslator(beta=0.9)
