"""The paper's strong photometric augmentation, sampled per image, on kornia's kernels."""

from __future__ import annotations

import functools
import math

import torch
from kornia.color import rgb_to_grayscale
from kornia.enhance import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, sharpness
from kornia.filters import filter2d_separable, gaussian_blur2d, get_gaussian_kernel1d
from torch import Tensor, nn

from diga._checks import check_images, check_number
from diga._ops import host_to_device

__all__ = ["StrongPhotometric", "strong_photometric"]


def _draw(n: int, generator, device) -> Tensor:
    """``n`` uniform draws from ``generator`` (or the global stream of ``device`` without one)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device)


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, size)`` Gaussian, built once per setting and device (kornia's kernel, same values)."""
    return get_gaussian_kernel1d(size, sigma).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _hue_constants(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(3, 1, 1)`` sextant offsets of the maximal channel (R, G, B: 0, 2, 4) and the channels'
    phases on the hue circle (5, 3, 1), built once per device instead of copied per call."""
    offsets = torch.tensor([0.0, 2.0, 4.0], dtype=dtype)[:, None, None]
    return offsets.to(device), (5.0 - offsets).to(device)


def _rotate_hue(x: Tensor, turns: Tensor, fused: bool | None = None) -> Tensor:
    """Rotate the hue of RGB ``(B, 3, H, W)`` in ``[0, 1]`` by ``turns`` ``(B,)`` of the hue circle.

    ``fused=None``: :func:`kornia.enhance.adjust_hue` (HSV there and back) on the CPU; elsewhere
    (``fused=True``) the same rotation without building an HSV image: value ``M = max(rgb)``,
    ``M * saturation`` and the hue in sextants (``[0, 6)``) as kornia's ``rgb_to_hsv`` makes them,
    then each channel as ``hsv_to_rgb``'s closed form ``M - M s clamp(min(k, 4 - k), 0, 1)``
    with ``k = (phase + hue) mod 6``: far fewer kernel launches (counted in docs/benchmarks.md);
    the two agree to within the tests' 1e-5, gray and black pixels exactly.
    """
    if fused is None:
        fused = x.device.type != "cpu"
    if not fused:
        return adjust_hue(x, turns * 2 * math.pi)
    offsets, phases = _hue_constants(x.device, x.dtype)
    top, first = x.max(dim=-3, keepdim=True)  # first maximal channel, as kornia breaks ties
    chroma = top - x.amin(dim=-3, keepdim=True)
    top_sat = top * (chroma / torch.where(top == 0, 1.0, top + 1e-8))  # V * S of rgb_to_hsv
    # Hue in sextants: (g - b) / C, (b - r) / C + 2 or (r - g) / C + 4 by the maximal channel.
    sextant = torch.roll(x, -1, dims=-3) - torch.roll(x, -2, dims=-3) + offsets * chroma
    hue = sextant.gather(-3, first) / torch.where(chroma == 0, 1.0, chroma)
    hue = hue + 6 * turns[:, None, None, None]
    k = torch.remainder(phases + hue, 6.0)
    return top - top_sat * torch.minimum(k, 4 - k).clamp(0, 1)


def _blur(x: Tensor, size: int, sigma: float, cached: bool | None = None) -> Tensor:
    """kornia's separable Gaussian blur with reflect borders, ``(B, C, H, W)`` -> same.

    ``cached=None``: on the CPU, :func:`kornia.filters.gaussian_blur2d` itself (it has a fast CPU
    kernel); elsewhere (``cached=True``) the separable filter it calls there, with the kernel
    built once per setting instead of rebuilt by small kernel launches at every call.
    """
    if cached is None:
        cached = x.device.type != "cpu"
    if not cached:
        return gaussian_blur2d(x, (size, size), (sigma, sigma))
    kernel = _gaussian_kernel(size, float(sigma), x.device, x.dtype).expand(x.shape[0], -1)
    return filter2d_separable(x, kernel, kernel, border_type="reflect")


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

    Speed: with a CPU generator (the default in the trainers) the draws stay on
    the host, so a step that no image drew is skipped without a device read.
    On the CPU every step is kornia's kernel, bit for bit. Elsewhere (a GPU)
    the blur kernel is built once per setting and the hue is rotated in closed
    form, without an HSV image (equal to kornia's ``adjust_hue`` within the
    tests' 1e-5): fewer kernel launches than the kornia path (docs/benchmarks.md).

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

    b, device = images.shape[0], images.device
    dtype = images.dtype
    x = images.float().clamp(0, 1)

    # Draw every random number first, in a fixed order, so a seed fixes the result. The draws
    # are made where the generator lives (the host, for a CPU generator) and moved in two
    # copies; a step no image drew is then skipped without reading the device.
    order = torch.randperm(4, generator=generator, device=generator.device if generator else "cpu")
    u = [_draw(b, generator, device) for _ in range(9)]
    flags = torch.stack([u[0] < jitter_p, u[5] < grayscale_p, u[6] < blur_p, u[8] < sharpness_p])
    ranges = ((1 - brightness, 1 + brightness), (1 - contrast, 1 + contrast),
              (1 - saturation, 1 + saturation), (-hue, hue), (0.0, sharpness_max))
    values = torch.stack([lo + (hi - lo) * v for (lo, hi), v in zip(ranges, (*u[1:5], u[7]), strict=True)])
    drawn = flags.any(dim=1).tolist() if flags.device.type == "cpu" else [True] * 4
    flags, values = host_to_device(flags, device), host_to_device(values, device)
    do_jitter, do_gray, do_blur, do_sharp = flags
    factors, sharp = values[:4], values[4]

    steps = (
        lambda t, f: adjust_brightness(t, f - 1),
        adjust_contrast,
        adjust_saturation,
        _rotate_hue,
    )

    def sel(flag: Tensor, new: Tensor, old: Tensor) -> Tensor:
        return torch.where(flag[:, None, None, None], new, old)

    # A step whose probability is 0, or that no image drew, is skipped (its draws are still made).
    jitter_on, gray_on, blur_on, sharp_on = (
        p > 0 and d for p, d in zip((jitter_p, grayscale_p, blur_p, sharpness_p), drawn, strict=True)
    )
    x_aug = x
    if jitter_on:
        jittered = x
        for idx in order.tolist():  # four steps, a permutation of a CPU tensor: no device sync
            jittered = steps[idx](jittered, factors[idx])
        x_aug = sel(do_jitter, jittered.clamp(0, 1), x)
    if gray_on:
        x_aug = sel(do_gray, rgb_to_grayscale(x_aug).expand_as(x_aug), x_aug)
    if blur_on:
        x_aug = sel(do_blur, _blur(x_aug, blur_kernel, blur_sigma), x_aug)
    if sharp_on:
        x_aug = sel(do_sharp, sharpness(x_aug, sharp), x_aug)
    return (beta * x_aug + (1 - beta) * x).to(dtype)


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
