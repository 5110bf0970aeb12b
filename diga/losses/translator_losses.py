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

import os
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
    "VGG19Features",
    "lsgan_loss",
    "perceptual_loss",
    "reconstruction_loss",
    "semantic_edge_loss",
    "semantic_edge_mask",
    "vgg19_features",
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
    (see :func:`vgg19_features`). Gradient flows through ``net`` to ``output``;
    ``net``'s own parameters should be frozen (:class:`PerceptualLoss` does it).

    Args:
        output: ``(B, 3, H, W)`` images, in whatever range ``net`` expects
            (:class:`VGG19Features`: RGB in ``[0, 1]``).
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


# torchvision's vgg19().features, layer by layer: channel count of each 3x3 conv, "M" a 2x2 max-pool.
_VGG19_CFG = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"
)


def _vgg19_relu_indices() -> dict[str, int]:
    """``relu{block}_{conv}`` -> index in ``torchvision.models.vgg19().features``."""
    out, index, block, conv = {}, 0, 1, 1
    for v in _VGG19_CFG:
        if v == "M":
            index += 1
            block, conv = block + 1, 1
            continue
        out[f"relu{block}_{conv}"] = index + 1
        index += 2
        conv += 1
    return out


_VGG19_RELU = _vgg19_relu_indices()
#: The layers the paper's ``Vgg19`` returns.
VGG19_PAPER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class VGG19Features(nn.Module):
    """VGG19's convolutional stack (torchvision's layer indices), returning the chosen ReLU outputs.

    Built with random weights; use :func:`vgg19_features` to load real ones
    from a local file. Only the layers up to the deepest requested one exist.

    Args:
        layers: names ``relu{block}_{conv}`` in network order (paper: relu1_1, relu2_1,
            relu3_1, relu4_1, relu5_1).
        normalize: subtract the ImageNet mean and divide by its std first, so inputs are
            RGB in ``[0, 1]``, as torchvision's weights expect.

    Shapes:
        ``(B, 3, H, W)`` -> list of ``(B, C_i, H / 2^k, W / 2^k)``, one per layer.

    Example:
        >>> net = VGG19Features(layers=("relu1_1", "relu2_1"))
        >>> [tuple(f.shape) for f in net(torch.rand(1, 3, 8, 8))]
        [(1, 64, 8, 8), (1, 128, 4, 4)]
    """

    def __init__(self, *, layers: Sequence[str] = VGG19_PAPER_LAYERS, normalize: bool = True) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers:
            raise ValueError("`layers` must name at least one VGG19 layer, got ()")
        unknown = [name for name in layers if name not in _VGG19_RELU]
        if unknown:
            raise ValueError(f"`layers` must be VGG19 ReLU names {sorted(_VGG19_RELU)}, got {unknown}")
        indices = [_VGG19_RELU[name] for name in layers]
        if indices != sorted(set(indices)):
            raise ValueError(f"`layers` must be distinct and in network order, got {layers}")
        modules: list[nn.Module] = []
        channels = 3
        for v in _VGG19_CFG:
            if len(modules) > indices[-1]:
                break
            if v == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
                channels = v
        self.features = nn.Sequential(*modules[: indices[-1] + 1])
        self.layers = layers
        self._indices = indices
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        _check_image_like(images, "images")
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype) if self.normalize else images
        out, wanted = [], set(self._indices)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out.append(x)
        return out


def vgg19_features(
    weights_path: str | os.PathLike,
    *,
    layers: Sequence[str] = VGG19_PAPER_LAYERS,
    normalize: bool = True,
) -> VGG19Features:
    """A frozen :class:`VGG19Features` with ImageNet weights read from a local file (never downloaded).

    The file is a ``torch.save``'d state dict of torchvision's ``vgg19``
    (``vgg19-dcbb9e9d.pth``: keys ``features.<i>.weight`` / ``.bias``, the
    classifier is ignored), of ``vgg19().features`` alone (keys ``<i>.weight``),
    or a dict holding one of those under ``"state_dict"``. It is read with
    ``weights_only=True``.

    Args:
        weights_path: the local weight file.
        layers: ReLU outputs to return (paper: relu1_1 ... relu5_1).
        normalize: ImageNet mean/std normalisation of ``[0, 1]`` RGB inputs inside the net.

    Returns:
        The network, frozen (no parameter requires grad) and in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or one missing weights the requested layers need.

    Example:
        >>> import tempfile, os
        >>> net = VGG19Features(layers=("relu1_1",))
        >>> path = os.path.join(tempfile.mkdtemp(), "vgg19.pth")
        >>> torch.save(net.state_dict(), path)
        >>> loaded = vgg19_features(path, layers=("relu1_1",))
        >>> loaded(torch.rand(1, 3, 8, 8))[0].shape, loaded.features[0].weight.requires_grad
        (torch.Size([1, 64, 8, 8]), False)
    """
    path = os.fspath(weights_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VGG19 weight file not found: {path!r} (weights are never downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot read VGG19 weights from {path!r}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} must hold a state dict, got {type(state).__name__}")
    net = VGG19Features(layers=layers, normalize=normalize)
    wanted = net.features.state_dict()
    loaded = {}
    for key in wanted:
        for candidate in (f"features.{key}", key):
            if candidate in state:
                loaded[key] = state[candidate]
                break
    missing = [f"features.{k}" for k in wanted if k not in loaded]
    if missing:
        raise ValueError(
            f"{path!r} lacks VGG19 weights for layers up to {net.layers[-1]}: missing {missing[:4]}"
            + (f" ... ({len(missing)} in all)" if len(missing) > 4 else "")
        )
    try:
        net.features.load_state_dict(loaded)
    except RuntimeError as err:
        raise ValueError(f"{path!r} does not hold VGG19 weights: {err}") from err
    net.requires_grad_(False)
    return net.eval()


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
