"""The paper's strong photometric augmentation, sampled per image, in few fused kernels."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d
from torch import Tensor, nn

from diga._checks import check_images, check_number
from diga._ops import host_to_device

__all__ = ["StrongPhotometric", "strong_photometric"]

# Rows of the (9, B) table of uniform draws, in the order they are drawn (a seed fixes a result).
_JITTER, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _GRAY, _BLUR, _SHARP_FACTOR, _SHARP = range(9)
_FLAGS = (_JITTER, _GRAY, _BLUR, _SHARP)


def _draws(b: int, generator, device) -> Tensor:
    """The ``(9, b)`` uniform draws of one call, row by row from ``generator`` (or the global stream of
    ``device`` without one). On a CPU generator one ``rand(9, b)`` gives the very numbers nine
    ``rand(b)`` calls give (its stream is serial); elsewhere the nine calls are kept."""
    gen_device = generator.device if generator is not None else torch.device(device)
    if gen_device.type == "cpu":
        return torch.rand(9, b, generator=generator, device=gen_device)
    return torch.stack([torch.rand(b, generator=generator, device=gen_device) for _ in range(9)])


@functools.lru_cache(maxsize=32)
def _draw_table(
    brightness: float, contrast: float, saturation: float, hue: float, sharpness_max: float,
    jitter_p: float, grayscale_p: float, blur_p: float, sharpness_p: float, device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(9, 1)`` scale, offset and threshold columns that turn the uniform draws into the
    call's values (``draws * scale + offset``) and flags (``draws < threshold``).

    Value rows: brightness as its additive offset ``factor - 1`` in ``[-brightness, brightness]``,
    contrast and saturation factors, the hue shift in sextants of the hue circle (``6 x turns``),
    the sharpness factor. Flag rows keep the draw itself (scale 1, offset 0).
    """
    scale, offset, threshold = [1.0] * 9, [0.0] * 9, [0.0] * 9
    for row, lo, hi in ((_BRIGHTNESS, -brightness, brightness), (_CONTRAST, 1 - contrast, 1 + contrast),
                        (_SATURATION, 1 - saturation, 1 + saturation), (_HUE, -6 * hue, 6 * hue),
                        (_SHARP_FACTOR, 0.0, sharpness_max)):
        scale[row], offset[row] = hi - lo, lo
    for row, p in zip(_FLAGS, (jitter_p, grayscale_p, blur_p, sharpness_p), strict=True):
        threshold[row] = p
    return tuple(torch.tensor(v, device=device)[:, None] for v in (scale, offset, threshold))


@functools.lru_cache(maxsize=32)
def _hue_constants(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(3, 1, 1)`` sextant offsets of the maximal channel (R, G, B: 0, 2, 4) and the channels'
    phases on the hue circle (5, 3, 1), built once per device instead of copied per call."""
    offsets = torch.tensor([0.0, 2.0, 4.0], dtype=dtype)[:, None, None]
    return offsets.to(device), (5.0 - offsets).to(device)


@functools.lru_cache(maxsize=32)
def _gray_weights(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, 3, 1, 1)`` luma weights (kornia's ``rgb_to_grayscale``: 0.299, 0.587, 0.114)."""
    return torch.tensor([0.299, 0.587, 0.114], dtype=dtype).reshape(1, 3, 1, 1).to(device)


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(channels, 1, size, size)`` depthwise Gaussian: the outer product of kornia's 1-D kernel,
    built once per setting and device."""
    k = get_gaussian_kernel1d(size, sigma)[0].double()
    kernel = (k[:, None] * k[None, :]).to(dtype).expand(channels, 1, size, size).contiguous()
    if device.type == "cpu":  # the CPU's fast depthwise convolution is the channels-last one
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    return kernel.to(device)


def _adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Scale the HSV saturation of RGB ``(B, 3, H, W)`` by ``factor`` ``(B, 1, 1, 1)``, clamped to 1.

    In closed form, without an HSV image: the value ``M`` (channel maximum) is kept and every
    channel moves towards it, ``M - (M - x) min(factor, M / (M - min))`` (kornia's
    ``adjust_saturation``, equal to float rounding and its ``1e-8`` guard).
    """
    low, top = torch.aminmax(x, dim=-3, keepdim=True)
    limit = top / (top - low).clamp_min(1e-12)  # the factor that takes the saturation to 1
    return torch.lerp(top, x, torch.minimum(limit, factor))


def _rotate_hue(x: Tensor, sextants: Tensor) -> Tensor:
    """Rotate the hue of RGB ``(B, 3, H, W)`` in ``[0, 1]`` by ``sextants`` ``(B, 1, 1, 1)``
    (sixths of the hue circle).

    No HSV image: value ``M = max(rgb)``, chroma ``C = M - min(rgb)`` and the hue in sextants
    (``[-1, 5)``) as kornia's ``rgb_to_hsv`` makes them, then each channel as ``hsv_to_rgb``'s
    closed form ``M - C clamp(min(k, 4 - k), 0, 1)`` with ``k = (phase + hue) mod 6``. Equal to
    kornia's ``adjust_hue`` to within the tests' 1e-5 (its ``1e-8`` saturation guard and float
    rounding); gray and black pixels are left exactly.
    """
    offsets, phases = _hue_constants(x.device, x.dtype)
    top, first = x.max(dim=-3, keepdim=True)  # first maximal channel, as kornia breaks ties
    chroma = top - x.amin(dim=-3, keepdim=True)
    # Hue in sextants: (g - b) / C, (b - r) / C + 2 or (r - g) / C + 4 by the maximal channel.
    sextant = torch.roll(x, -1, dims=-3) - torch.roll(x, -2, dims=-3) + offsets * chroma
    hue = sextant.gather(-3, first) / chroma.clamp_min(1e-12)  # gray: 0 / tiny = 0
    k = torch.remainder(hue + (phases + sextants), 6.0)
    return torch.addcmul(top, chroma, torch.minimum(k, 4 - k).clamp_(0, 1), value=-1)


def _blur(x: Tensor, size: int, sigma: float) -> Tensor:
    """Gaussian blur with reflect borders (kornia's ``gaussian_blur2d``), ``(B, C, H, W)`` -> same.

    One depthwise convolution with the 2-D kernel (equal to kornia's two separable passes to float
    rounding); the kernel is built once per setting. On the CPU the convolution runs channels-last
    (several times faster there at these shapes) and the result comes back contiguous.
    """
    r = size // 2
    kernel = _gaussian_kernel(size, float(sigma), x.shape[1], x.device, x.dtype)
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    if x.device.type == "cpu":
        padded = padded.contiguous(memory_format=torch.channels_last)
        return F.conv2d(padded, kernel, groups=x.shape[1]).contiguous()
    return F.conv2d(padded, kernel, groups=x.shape[1])


def _sharpen(x: Tensor, factor: Tensor) -> Tensor:
    """kornia's ``sharpness`` with ``factor`` ``(B, 1, 1, 1)``: the interior blended from the
    ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` smoothing (clamped) towards the image by ``factor``,
    clamped; the one-pixel border kept. The smoothing is ``9/13`` of a 3 x 3 mean plus ``4/13`` of
    the centre pixel (equal to kornia's convolution to float rounding)."""
    inner = x[..., 1:-1, 1:-1]
    smooth = torch.lerp(F.avg_pool2d(x, 3, stride=1), inner, 4.0 / 13.0).clamp_(0, 1)
    out = x.clone()
    out[..., 1:-1, 1:-1] = torch.lerp(smooth, inner, factor).clamp_(0, 1)
    return out


def _check_params(
    *, beta, brightness, contrast, saturation, hue, jitter_p, grayscale_p, blur_kernel,
    blur_sigma, blur_p, sharpness_max, sharpness_p,
) -> None:
    check_number(beta, "beta", low=0, high=1)
    for name, value in (
        ("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("blur_p", blur_p),
        ("sharpness_p", sharpness_p),
    ):
        check_number(value, name, low=0, high=1)
    check_number(brightness, "brightness", low=0, high=1)
    check_number(contrast, "contrast", low=0, high=1)
    check_number(saturation, "saturation", low=0, high=1)
    check_number(hue, "hue", low=0, high=0.5)
    check_number(blur_kernel, "blur_kernel", low=1, integer=True)
    if blur_kernel % 2 == 0:
        raise ValueError(f"`blur_kernel` must be odd, got {blur_kernel}")
    check_number(blur_sigma, "blur_sigma", low=0, low_open=True)
    check_number(sharpness_max, "sharpness_max", low=0)


def strong_photometric(
    images: Tensor,
    *,
    beta: float = 0.4,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    jitter_p: float = 0.5,
    grayscale_p: float = 0.3,
    blur_kernel: int = 3,
    blur_sigma: float = 2.0,
    blur_p: float = 0.8,
    sharpness_max: float = 0.5,
    sharpness_p: float = 0.3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DiGA's strong augmentation, blended with the clean image: ``beta * aug(x) + (1 - beta) * x``.

    ``aug`` is, in order and sampled independently per image: colour jitter
    (brightness, contrast, saturation, hue; probability ``jitter_p``; the four
    steps in one random order per call), grayscale (``grayscale_p``), Gaussian
    blur (``blur_kernel`` square kernel, ``blur_sigma``; ``blur_p``) and
    sharpness (factor uniform in ``[0, sharpness_max]``; ``sharpness_p``). The
    colour jitter follows the kornia ``ColorJitter`` the paper used (kornia
    0.5, today's ``ColorJiggle``): brightness additive (factor - 1), contrast a
    raw multiplicative scale, saturation in HSV, hue in turns of the hue circle.
    An image a step does not select is left bit-exact by that step.

    Deliberate difference: the paper applies this to mean-subtracted images
    and re-normalises; we apply it to RGB in ``[0, 1]``, the range kornia's
    kernels expect.

    Speed: every step is a few fused tensor operations on any device, equal to
    kornia's ``adjust_*``, ``rgb_to_grayscale``, ``gaussian_blur2d`` and
    ``sharpness`` to float rounding (the tests hold each step and the whole
    augmentation to 1e-5 of a kornia composition on the same draws): saturation
    and hue in closed form without an HSV image, the blur as one depthwise
    convolution with its kernel built once per setting. With a CPU generator
    (the default in the trainers) the draws stay on the host, so a step that no
    image drew is skipped, and one that every image drew needs no selection,
    without a device read.

    Args:
        images: ``(B, 3, H, W)`` RGB floats in ``[0, 1]``.
        beta: blend weight of the augmented image (0.4 in warm-up, 0.3 in
            the paper's self-training).
        generator: random source for every draw; a CPU generator with CUDA
            images samples on the CPU and moves the draws.

    Returns:
        ``(B, 3, H, W)`` images in ``[0, 1]``, the input's dtype.

    Example:
        >>> x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> y = strong_photometric(x, generator=torch.Generator().manual_seed(1))
        >>> y.shape, bool((y >= 0).all() and (y <= 1).all())
        (torch.Size([4, 3, 16, 16]), True)
    """
    _check_params(
        beta=beta, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
        jitter_p=jitter_p, grayscale_p=grayscale_p, blur_kernel=blur_kernel,
        blur_sigma=blur_sigma, blur_p=blur_p, sharpness_max=sharpness_max,
        sharpness_p=sharpness_p,
    )
    check_images(images, "images")
    if sharpness_p > 0 and min(images.shape[-2:]) < 3:
        raise ValueError(
            f"`images` must be at least 3x3 for the sharpness step, got {tuple(images.shape)}"
        )

    b, device, dtype = images.shape[0], images.device, images.dtype
    with torch.autocast(device_type=device.type, enabled=False):  # float32 kernels, as kornia's
        x = images.float().clamp(0, 1)

        # Draw every random number first, in a fixed order, so a seed fixes the result. The draws
        # are made where the generator lives (the host, for a CPU generator) and moved in two
        # copies; a step no image drew is then skipped, and one every image drew needs no
        # selection, without reading the device.
        order = torch.randperm(4, generator=generator, device=generator.device if generator else "cpu")
        u = _draws(b, generator, device)
        scale, offset, threshold = _draw_table(
            float(brightness), float(contrast), float(saturation), float(hue), float(sharpness_max),
            float(jitter_p), float(grayscale_p), float(blur_p), float(sharpness_p), u.device,
        )
        hits = u < threshold
        if u.device.type == "cpu":
            counts = hits.sum(dim=1).tolist()  # per row: how many images drew it (flag rows only)
            drawn = [p > 0 and counts[row] > 0 for p, row in zip(
                (jitter_p, grayscale_p, blur_p, sharpness_p), _FLAGS, strict=True)]
            every = [counts[row] == b for row in _FLAGS]
        else:
            drawn, every = [p > 0 for p in (jitter_p, grayscale_p, blur_p, sharpness_p)], [False] * 4
        hits, values = host_to_device(hits, device), host_to_device(u * scale + offset, device)
        flag = {row: hits[row][:, None, None, None] for row in _FLAGS}
        value = {row: values[row][:, None, None, None] for row in
                 (_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _SHARP_FACTOR)}

        steps = (
            lambda t: torch.add(t, value[_BRIGHTNESS]).clamp_(0, 1),
            lambda t: torch.mul(t, value[_CONTRAST]).clamp_(0, 1),
            lambda t: _adjust_saturation(t, value[_SATURATION]),
            lambda t: _rotate_hue(t, value[_HUE]),
        )

        def sel(step: int, new: Tensor, old: Tensor) -> Tensor:
            """``new`` for the images that drew the step, ``old`` for the others."""
            return new if every[step] else torch.where(flag[_FLAGS[step]], new, old)

        x_aug = x
        if drawn[0]:
            jittered = x
            for idx in order.tolist():  # four steps, a permutation of a CPU tensor: no device sync
                jittered = steps[idx](jittered)
            x_aug = sel(0, jittered.clamp_(0, 1), x)
        if drawn[1]:
            gray = F.conv2d(x_aug, _gray_weights(device, x.dtype)).expand_as(x_aug)
            x_aug = sel(1, gray, x_aug)
        if drawn[2]:
            x_aug = sel(2, _blur(x_aug, blur_kernel, blur_sigma), x_aug)
        if drawn[3]:
            x_aug = sel(3, _sharpen(x_aug, value[_SHARP_FACTOR]), x_aug)
        return torch.lerp(x, x_aug, beta).to(dtype)


class StrongPhotometric(nn.Module):
    """Module form of :func:`strong_photometric` with the paper's defaults.

    Example:
        >>> aug = StrongPhotometric(beta=0.4)
        >>> aug(torch.rand(2, 3, 8, 8), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        *,
        beta: float = 0.4,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        jitter_p: float = 0.5,
        grayscale_p: float = 0.3,
        blur_kernel: int = 3,
        blur_sigma: float = 2.0,
        blur_p: float = 0.8,
        sharpness_max: float = 0.5,
        sharpness_p: float = 0.3,
    ) -> None:
        super().__init__()
        self.params = dict(
            beta=beta, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
            jitter_p=jitter_p, grayscale_p=grayscale_p, blur_kernel=blur_kernel,
            blur_sigma=blur_sigma, blur_p=blur_p, sharpness_max=sharpness_max,
            sharpness_p=sharpness_p,
        )
        _check_params(**self.params)

    @property
    def beta(self) -> float:
        return self.params["beta"]

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return strong_photometric(images, generator=generator, **self.params)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())
