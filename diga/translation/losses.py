"""The image translator's losses, as the paper's ``train_domain_translator.py`` uses them.

- adversarial: least-squares GAN (LSGAN), summed over the discriminator's scales;
- reconstruction: L1, for the cycle (source -> target -> source and back,
  weight 10) and the self-reconstruction (each image through its own
  encoder and the other direction's decoder, weight 0.001) terms;
- perceptual: weighted L1 between feature maps of a frozen network (VGG19 in
  the paper; here any network you pass, since we never download weights);
- semantic edge: L1 between the translated and the input image on the edges
  of the source label map (a Laplacian of the label ids), weight 20.

Each is a function with a thin module on top. Arithmetic is float32 (float64
when given float64); losses have the input's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.filters import laplacian
from torch import Tensor, nn

from diga._checks import (
    check_finite,
    check_floating,
    check_labels,
    check_ndim,
    check_nonempty,
    check_number,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "LSGANLoss",
    "PerceptualLoss",
    "ReconstructionLoss",
    "SemanticEdgeLoss",
    "lsgan_loss",
    "perceptual_loss",
    "reconstruction_loss",
    "semantic_edge_loss",
    "semantic_edge_mask",
]

#: The paper's per-layer weights of the perceptual loss (relu1_1 ... relu5_1).
PAPER_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _acc(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _check_image_like(x: object, name: str) -> Tensor:
    x = check_ndim(x, name, 4, "(B, C, H, W)")
    check_floating(x, name)
    check_nonempty(x, name)
    return x


# ----------------------------------------------------------------------------- adversarial


def lsgan_loss(scores: Tensor | Sequence[Tensor], *, real: bool) -> Tensor:
    """Least-squares GAN loss, summed over scales: ``sum_k mean((scores_k - y)^2)``, ``y = 1`` if real else 0.

    The paper's discriminator loss is ``lsgan_loss(D(real), real=True) +
    lsgan_loss(D(fake.detach()), real=False)``; its generator loss is
    ``lsgan_loss(D(fake), real=True)``.

    Args:
        scores: one score map ``(B, 1, h, w)`` or a list of them (one per scale), any shapes.
        real: push the scores towards 1 (True) or 0 (False).

    Returns:
        Scalar loss in the first score map's dtype.

    Example:
        >>> lsgan_loss([torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)], real=True)
        tensor(1.)
    """
    if isinstance(scores, Tensor):
        scores = [scores]
    if not isinstance(scores, Sequence) or len(scores) == 0:
        raise ValueError(f"`scores` must be a tensor or a non-empty list of tensors, got {scores!r}")
    total = None
    for k, s in enumerate(scores):
        name = f"scores[{k}]"
        check_tensor(s, name)
        check_floating(s, name)
        check_nonempty(s, name)
        term = (_acc(s) - (1.0 if real else 0.0)).square().mean()
        total = term if total is None else total + term
    return total.to(scores[0].dtype)


class LSGANLoss(nn.Module):
    """Module form of :func:`lsgan_loss` (the paper's adversarial loss, generator and discriminator sides).

    Shapes:
        ``forward(scores: (B, 1, h, w) or a list of them, *, real: bool) -> ()``.

    Example:
        >>> loss = LSGANLoss()
        >>> d_real, d_fake = [torch.full((1, 1, 2, 2), 0.5)], [torch.full((1, 1, 2, 2), 0.5)]
        >>> loss(d_real, real=True) + loss(d_fake, real=False)
        tensor(0.5000)
    """

    def forward(self, scores: Tensor | Sequence[Tensor], *, real: bool) -> Tensor:
        return lsgan_loss(scores, real=real)


# ----------------------------------------------------------------------------- reconstruction


def reconstruction_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error ``mean |output - target|`` (the paper's cycle and self-reconstruction terms).

    Args:
        output: ``(B, C, H, W)`` reconstruction.
        target: same shape, the original images.

    Returns:
        Scalar loss in ``output``'s dtype.

    Example:
        >>> reconstruction_loss(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
        tensor(1.)
    """
    _check_image_like(output, "output")
    _check_image_like(target, "target")
    check_same_shape(output, target, "output", "target")
    return (_acc(output) - _acc(target)).abs().mean().to(output.dtype)


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss`.

    Shapes:
        ``forward(output (B, C, H, W), target (B, C, H, W)) -> ()``.

    Example:
        >>> ReconstructionLoss()(torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5))
        tensor(0.5000)
    """

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return reconstruction_loss(output, target)


# ----------------------------------------------------------------------------- perceptual


def _features(net: nn.Module, images: Tensor, name: str) -> list[Tensor]:
    feats = net(images)
    if isinstance(feats, Tensor):
        feats = [feats]
    if not isinstance(feats, (list, tuple)) or not all(isinstance(f, Tensor) for f in feats):
        raise ValueError(f"`net` must return a list of feature maps for `{name}`, got {type(feats).__name__}")
    return list(feats)


def perceptual_loss(
    output: Tensor,
    target: Tensor,
    *,
    net: nn.Module,
    layer_weights: Sequence[float] = PAPER_LAYER_WEIGHTS,
    max_width: int | None = 1024,
) -> Tensor:
    """Weighted L1 between a frozen network's feature maps of ``output`` and ``target``.

    As the paper's ``VGGLoss``: both images are average-pooled by 2 while
    wider than ``max_width``; then ``sum_i w_i * mean |f_i(output) - f_i(target)|``,
    with the target's features computed without gradient. The paper's net is
    an ImageNet VGG19 cut at relu1_1 ... relu5_1 with weights 1/32 ... 1
    (see :func:`~diga.translation.vgg19_features`). Gradient flows through ``net`` to ``output``;
    ``net``'s own parameters should be frozen (:class:`PerceptualLoss` does it).

    Args:
        output: ``(B, 3, H, W)`` images, in whatever range ``net`` expects
            (:class:`~diga.translation.VGG19Features`: RGB in ``[0, 1]``).
        target: same shape.
        net: maps images to a list of feature maps, one per entry of ``layer_weights``.
        layer_weights: weight of each feature map.
        max_width: halve both images while wider than this (None: never).

    Returns:
        Scalar loss in ``output``'s dtype.

    Example:
        >>> net = lambda x: [x, F.avg_pool2d(x, 2)]
        >>> x = torch.rand(1, 3, 8, 8)
        >>> float(perceptual_loss(x, x, net=net, layer_weights=(1.0, 1.0)))
        0.0
    """
    _check_image_like(output, "output")
    _check_image_like(target, "target")
    check_same_shape(output, target, "output", "target")
    if not callable(net):
        raise ValueError(f"`net` must be a callable feature extractor, got {type(net).__name__}")
    weights = [float(w) for w in layer_weights]
    if max_width is not None:
        check_number(max_width, "max_width", low=1, integer=True)
        while output.shape[-1] > max_width:
            output = F.avg_pool2d(output, 2, stride=2)
            target = F.avg_pool2d(target, 2, stride=2)
    out_feats = _features(net, output, "output")
    with torch.no_grad():
        tgt_feats = _features(net, target, "target")
    if len(out_feats) != len(weights):
        raise ValueError(
            f"`net` must return one feature map per layer weight ({len(weights)}), got {len(out_feats)}"
        )
    total = output.new_zeros((), dtype=_acc(output).dtype)
    for w, a, b in zip(weights, out_feats, tgt_feats, strict=True):
        total = total + w * (_acc(a) - _acc(b.detach())).abs().mean()
    return total.to(output.dtype)


class PerceptualLoss(nn.Module):
    """Module form of :func:`perceptual_loss`; freezes ``net`` and keeps it in eval mode.

    No network is built by default: we never download weights, and a VGG19
    with random weights measures nothing. Pass :func:`vgg19_features` on a
    local weight file (the paper's choice) or any frozen feature extractor.

    Args:
        net: images -> list of feature maps.
        layer_weights: weight per feature map (paper: 1/32, 1/16, 1/8, 1/4, 1).
        max_width: halve inputs while wider than this (paper: 1024).

    Shapes:
        ``forward(output (B, 3, H, W), target (B, 3, H, W)) -> ()``.

    Example:
        >>> net = nn.Conv2d(3, 4, 3)
        >>> loss_fn = PerceptualLoss(lambda x: [net(x)], layer_weights=(1.0,))
        >>> x = torch.rand(1, 3, 8, 8, requires_grad=True)
        >>> loss_fn(x, torch.rand(1, 3, 8, 8)).backward()
        >>> x.grad is not None
        True
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        layer_weights: Sequence[float] = PAPER_LAYER_WEIGHTS,
        max_width: int | None = 1024,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise ValueError(f"`net` must be a callable feature extractor, got {type(net).__name__}")
        if isinstance(net, nn.Module):
            net.requires_grad_(False)
            net.eval()
        weights = tuple(layer_weights)
        if not weights:
            raise ValueError("`layer_weights` must hold one weight per feature map, got ()")
        for i, w in enumerate(weights):
            check_number(w, f"layer_weights[{i}]", low=0)
        if max_width is not None:
            check_number(max_width, "max_width", low=1, integer=True)
        self.net = net
        self.layer_weights = weights
        self.max_width = max_width

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if isinstance(self.net, nn.Module):
            self.net.eval()
        return self

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return perceptual_loss(
            output, target, net=self.net, layer_weights=self.layer_weights, max_width=self.max_width
        )

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, max_width={self.max_width}"


# ----------------------------------------------------------------------------- semantic edges


def semantic_edge_mask(labels: Tensor, *, kernel_size: int = 5, threshold: float = 0.1) -> Tensor:
    """Where the label map has an edge: ``|laplacian(labels)| > threshold`` (the paper's ``seg_edge_loss``).

    The label ids are read as numbers: kornia's normalised ``kernel_size``
    Laplacian (reflect border) of the float label map, thresholded. With the
    paper's 5x5 kernel and 0.1, a band of two pixels on each side of every
    boundary is marked. As in the paper, the ignore value (255) is a value
    like any other, so the border of an ignored region is an edge too.

    Args:
        labels: ``(B, H, W)`` integer labels.
        kernel_size: odd Laplacian size (paper: 5).
        threshold: on the absolute response (paper: 0.1).

    Returns:
        ``(B, 1, H, W)`` bool.

    Example:
        >>> labels = torch.zeros(1, 8, 8, dtype=torch.long)
        >>> labels[..., 4:] = 1
        >>> semantic_edge_mask(labels)[0, 0, 0].int().tolist()
        [0, 0, 1, 1, 1, 1, 0, 0]
    """
    check_labels(labels, "labels", num_classes=None, ignore_index=255)
    check_number(kernel_size, "kernel_size", low=1, integer=True)
    if kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
    check_number(threshold, "threshold", low=0)
    with torch.autocast(labels.device.type, enabled=False):  # exact sums: thresholds sit near 5/48
        response = laplacian(labels[:, None].float(), kernel_size)
    return response.abs() > threshold


def semantic_edge_loss(
    translated: Tensor,
    source: Tensor,
    labels: Tensor,
    *,
    kernel_size: int = 5,
    threshold: float = 0.1,
) -> Tensor:
    """L1 between the translated and the source image on semantic edges (the paper's ``seg_edge_loss``).

    ``mean(|translated - source| * edges)`` over all ``B * C * H * W``
    elements, where ``edges`` is :func:`semantic_edge_mask` of the source
    labels: the translator may restyle, but not move object boundaries.
    Gradient flows to ``translated`` (and to ``source`` if it requires it).

    Args:
        translated: ``(B, C, H, W)`` translator output.
        source: same shape, the translator's input.
        labels: ``(B, H, W)`` the source's labels.
        kernel_size: Laplacian size (paper: 5).
        threshold: edge threshold (paper: 0.1).

    Returns:
        Scalar loss in ``translated``'s dtype.

    Example:
        >>> labels = torch.zeros(1, 8, 8, dtype=torch.long)
        >>> labels[:, :, 4:] = 1
        >>> src = torch.rand(1, 3, 8, 8)
        >>> float(semantic_edge_loss(src, src, labels))
        0.0
        >>> float(semantic_edge_loss(src + 1, src, labels))  # 4 of 8 columns are edges
        0.5
    """
    _check_image_like(translated, "translated")
    _check_image_like(source, "source")
    check_same_shape(translated, source, "translated", "source")
    check_ndim(labels, "labels", 3, "(B, H, W)")
    if labels.shape[0] != translated.shape[0] or labels.shape[-2:] != translated.shape[-2:]:
        raise ValueError(
            f"`labels` must be (B, H, W) = {(translated.shape[0], *translated.shape[-2:])} like "
            f"`translated`, got shape {tuple(labels.shape)}"
        )
    check_finite(translated, "translated")
    edges = semantic_edge_mask(labels, kernel_size=kernel_size, threshold=threshold)
    diff = (_acc(translated) - _acc(source)).abs()
    return (diff * edges.to(diff.dtype)).mean().to(translated.dtype)


class SemanticEdgeLoss(nn.Module):
    """Module form of :func:`semantic_edge_loss`.

    Args:
        kernel_size: Laplacian size (paper: 5).
        threshold: edge threshold on the label map's Laplacian (paper: 0.1).

    Shapes:
        ``forward(translated (B, C, H, W), source (B, C, H, W), labels (B, H, W)) -> ()``.

    Example:
        >>> labels = torch.randint(0, 19, (2, 16, 16))
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> SemanticEdgeLoss()(x, torch.rand(2, 3, 16, 16), labels).backward()
        >>> x.grad.shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, kernel_size: int = 5, threshold: float = 0.1) -> None:
        super().__init__()
        check_number(kernel_size, "kernel_size", low=1, integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        check_number(threshold, "threshold", low=0)
        self.kernel_size = int(kernel_size)
        self.threshold = float(threshold)

    def forward(self, translated: Tensor, source: Tensor, labels: Tensor) -> Tensor:
        return semantic_edge_loss(
            translated, source, labels, kernel_size=self.kernel_size, threshold=self.threshold
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, threshold={self.threshold}"
