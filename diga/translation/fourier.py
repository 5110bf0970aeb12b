"""Fourier domain adaptation (FDA): the zero-training source -> target translator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_images, check_number

__all__ = ["FourierTranslator", "fourier_translate"]


def _low_frequency_mask(h: int, w: int, beta: float, device) -> Tensor:
    """True on the four ``b x b`` corners of the (unshifted) spectrum.

    ``b = floor(min(h, w) * beta)`` (the paper's), but at least 1 for ``beta > 0``.
    """
    b = max(1, int(min(h, w) * beta)) if beta > 0 else 0
    rows = torch.zeros(h, dtype=torch.bool, device=device)
    cols = torch.zeros(w, dtype=torch.bool, device=device)
    if b > 0:
        rows[:b] = True
        rows[h - b :] = True
        cols[:b] = True
        cols[w - b :] = True
    return rows[:, None] & cols[None, :]


def fourier_translate(source: Tensor, target: Tensor, *, beta: float = 0.01) -> Tensor:
    """Give each source image the low-frequency amplitude spectrum of a target image.

    The paper's ``fourier_exchange`` (after FDA, Yang & Soatto 2020): full
    2-D FFT per channel, the amplitude in the four ``b x b`` corners of the
    unshifted spectrum (``b = floor(min(H, W) * beta)``) replaced by the
    target's, phase kept, inverse FFT, real part. We then clamp to ``[0, 1]``,
    since downstream components expect pixel-space images.

    One deliberate difference: for ``beta > 0`` the band is at least one
    pixel (``b >= 1``: the mean colour and the lowest frequencies). The
    paper's formula gives ``b = 0`` on any image under ``1 / beta`` pixels
    (under 100 at the paper's 0.01), where its translation silently returns
    the source; at the paper's sizes (``min(H, W) * beta >= 1``) the two agree
    exactly. ``beta=0`` is the identity.

    What it cannot tell apart: the band holds the image's mean colour, which
    depends on what a scene shows as well as on how it is rendered. Where
    source and target differ in content rather than look (another city of the
    same simulator: more buildings, fewer trees), the swap paints source
    classes in colours the target never gives them, and the warm-up pays for
    it (the built-in ``layout`` shift: docs/findings.md, "What does each part buy");
    there, pass no translator.

    Pairing: source ``i`` takes target ``i % B_t``, so a single target image
    styles the whole batch. A target of another size is resized bilinearly to
    the source's size first. FFTs run in float32 (float64 if given float64);
    the result has the source's dtype.

    Args:
        source: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        target: ``(B_t, 3, H', W')`` RGB in ``[0, 1]``, the style reference.
        beta: size of the swapped band as a fraction of ``min(H, W)``, in ``[0, 0.5]``;
            at least one pixel when ``beta > 0``, none (the identity) at 0.

    Returns:
        ``(B, 3, H, W)`` translated source.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> src, tgt = torch.rand(2, 2, 3, 32, 32, generator=g)
        >>> out = fourier_translate(src, tgt, beta=0.1)
        >>> out.shape
        torch.Size([2, 3, 32, 32])
        >>> bool(torch.allclose(fourier_translate(src, tgt, beta=0.0), src, atol=1e-5))
        True
    """
    check_number(beta, "beta", low=0, high=0.5)
    check_images(source, "source", pixel_range=False)
    check_images(target, "target", pixel_range=False)
    b, _, h, w = source.shape
    if target.shape[-2:] != source.shape[-2:]:
        target = F.interpolate(target, size=(h, w), mode="bilinear", align_corners=False)
    if target.shape[0] != b:
        target = target[torch.arange(b, device=target.device) % target.shape[0]]
    work = torch.float64 if source.dtype == torch.float64 else torch.float32
    fft_src = torch.fft.fft2(source.to(work))
    fft_tgt = torch.fft.fft2(target.to(device=source.device, dtype=work))
    mask = _low_frequency_mask(h, w, beta, source.device)
    amplitude = torch.where(mask, fft_tgt.abs(), fft_src.abs())
    out = torch.fft.ifft2(torch.polar(amplitude, fft_src.angle())).real
    return out.clamp(0, 1).to(source.dtype)


class FourierTranslator(nn.Module):
    """Module form of :func:`fourier_translate`; meets the :class:`~diga.Translator` protocol.

    Args:
        beta: swapped low-frequency band as a fraction of ``min(H, W)`` (paper: 0.01);
            at least one pixel for ``beta > 0``, where the paper's formula swaps
            nothing on images under ``1 / beta`` pixels.

    It carries the target's mean colour whatever made it (look or content): see
    :func:`fourier_translate` for when that costs.

    Example:
        >>> translator = FourierTranslator(beta=0.01)
        >>> translator(torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64)).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, *, beta: float = 0.01) -> None:
        super().__init__()
        check_number(beta, "beta", low=0, high=0.5)
        self.beta = float(beta)

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        return fourier_translate(source, target, beta=self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
