"""The networks of the learned source -> target translator (DiGA's stage 0): generators,
discriminators, and the frozen VGG19 feature network of the perceptual loss.

The paper's translator (``train_domain_translator.py``) is a shared-latent,
CycleGAN-style pair of encoder/decoder generators: ``enc_s + dec_s2t`` maps
source images to the target's look, ``enc_t + dec_t2s`` the reverse, and one
multi-scale LSGAN patch discriminator per domain judges the results. Only
the source -> target generator is kept for DiGA; :class:`~diga.translation.LearnedTranslator`
wraps it in the :class:`~diga.Translator` protocol.

Networks work in "signed" pixel space, ``[-1, 1]`` (the paper's inputs are
mean-subtracted BGR / 128, its outputs tanh); the public entry points take
and return RGB in ``[0, 1]`` and map at the boundary.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_floating, check_images, check_ndim, check_nonempty, check_number

__all__ = [
    "VGG19_PAPER_LAYERS",
    "MultiScaleDiscriminator",
    "TranslatorDecoder",
    "TranslatorEncoder",
    "TranslatorGenerator",
    "VGG19Features",
    "vgg19_features",
]

_PAD_TYPES = ("reflect", "zero")


def _reset_parameters(module: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """PyTorch's default convolution init (kaiming-uniform, a = sqrt(5)), drawn from ``generator``.

    Layers are visited in registration order, so a seeded generator fixes every weight.
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    fan_in = layer.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return module


def _check_pad_type(pad_type: str) -> str:
    if pad_type not in _PAD_TYPES:
        raise ValueError(f"`pad_type` must be one of {_PAD_TYPES}, got {pad_type!r}")
    return pad_type


class _ConvBlock(nn.Module):
    """Pad -> conv -> (instance norm) -> activation, the paper's ``Conv2dBlock``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        norm: bool = True,
        activation: str = "relu",
        pad_type: str = "reflect",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(padding) if pad_type == "reflect" else nn.ZeroPad2d(padding)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, bias=bias)
        self.norm = nn.InstanceNorm2d(out_channels) if norm else nn.Identity()
        self.act = {
            "relu": nn.ReLU(),
            "lrelu": nn.LeakyReLU(0.2),
            "tanh": nn.Tanh(),
            "none": nn.Identity(),
        }[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(self.pad(x))))


class _ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions and instance norm."""

    def __init__(self, dim: int, *, pad_type: str) -> None:
        super().__init__()
        self.conv1 = _ConvBlock(dim, dim, 3, padding=1, pad_type=pad_type)
        self.conv2 = _ConvBlock(dim, dim, 3, padding=1, activation="none", pad_type=pad_type)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class TranslatorEncoder(nn.Module):
    """The paper's ``ImgEncoder``: 7x7 conv, ``n_downsample`` stride-2 4x4 convs, ``n_res`` residual blocks.

    Instance norm and ReLU throughout, reflection padding by default. Channels
    double at each downsampling: the output has ``dim * 2 ** n_downsample``.

    Args:
        in_channels: input channels (3).
        dim: channels of the first layer (paper: 64).
        n_downsample: stride-2 layers (paper: 2).
        n_res: residual blocks (paper: 4).
        pad_type: ``"reflect"`` (paper) or ``"zero"``.
        generator: draws the initial weights (None: torch's global generator).

    Shapes:
        ``(B, in_channels, H, W)`` in ``[-1, 1]`` -> ``(B, out_channels, H / 2^n, W / 2^n)``.

    Example:
        >>> enc = TranslatorEncoder(dim=8, n_downsample=2, n_res=1)
        >>> enc(torch.rand(1, 3, 16, 32) * 2 - 1).shape
        torch.Size([1, 32, 4, 8])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        dim: int = 64,
        n_downsample: int = 2,
        n_res: int = 4,
        pad_type: str = "reflect",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_number(in_channels, "in_channels", low=1, integer=True)
        check_number(dim, "dim", low=1, integer=True)
        check_number(n_downsample, "n_downsample", low=0, integer=True)
        check_number(n_res, "n_res", low=0, integer=True)
        _check_pad_type(pad_type)
        self.stem = _ConvBlock(in_channels, dim, 7, padding=3, pad_type=pad_type)
        down = []
        for _ in range(n_downsample):
            down.append(_ConvBlock(dim, 2 * dim, 4, stride=2, padding=1, pad_type=pad_type))
            dim *= 2
        self.down = nn.Sequential(*down)
        self.res = nn.Sequential(*(_ResidualBlock(dim, pad_type=pad_type) for _ in range(n_res)))
        self.out_channels = dim
        _reset_parameters(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.res(self.down(self.stem(x)))


class TranslatorDecoder(nn.Module):
    """The paper's ``ImgDecoder``: ``n_res`` residual blocks, ``n_upsample`` x (nearest x2 + 5x5 conv),
    then a 7x7 conv with tanh.

    Channels halve at each upsampling; instance norm everywhere but the output layer.

    Args:
        in_channels: feature channels (paper: 256 = 64 * 2^2).
        out_channels: image channels (3).
        n_upsample: upsampling stages (paper: 2).
        n_res: residual blocks (paper: 4).
        pad_type: ``"reflect"`` (paper) or ``"zero"``.
        generator: draws the initial weights.

    Shapes:
        ``(B, in_channels, h, w)`` -> ``(B, out_channels, h * 2^n, w * 2^n)`` in ``(-1, 1)``.

    Example:
        >>> dec = TranslatorDecoder(in_channels=32, n_upsample=2, n_res=1)
        >>> y = dec(torch.randn(1, 32, 4, 8))
        >>> y.shape, bool(y.abs().max() < 1)
        (torch.Size([1, 3, 16, 32]), True)
    """

    def __init__(
        self,
        *,
        in_channels: int = 256,
        out_channels: int = 3,
        n_upsample: int = 2,
        n_res: int = 4,
        pad_type: str = "reflect",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_number(in_channels, "in_channels", low=1, integer=True)
        check_number(out_channels, "out_channels", low=1, integer=True)
        check_number(n_upsample, "n_upsample", low=0, integer=True)
        check_number(n_res, "n_res", low=0, integer=True)
        _check_pad_type(pad_type)
        if in_channels % (2**n_upsample):
            raise ValueError(
                f"`in_channels` must be divisible by 2 ** n_upsample = {2 ** n_upsample}, got {in_channels}"
            )
        dim = in_channels
        self.res = nn.Sequential(*(_ResidualBlock(dim, pad_type=pad_type) for _ in range(n_res)))
        up: list[nn.Module] = []
        for _ in range(n_upsample):
            up += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                   _ConvBlock(dim, dim // 2, 5, padding=2, pad_type=pad_type)]
            dim //= 2
        self.up = nn.Sequential(*up)
        self.out = _ConvBlock(dim, out_channels, 7, padding=3, norm=False, activation="tanh",
                              pad_type=pad_type)
        _reset_parameters(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.up(self.res(x)))


class TranslatorGenerator(nn.Module):
    """One direction of the translator: :class:`TranslatorEncoder` + :class:`TranslatorDecoder`.

    ``forward`` takes RGB in ``[0, 1]`` of any size of at least
    ``2 ** (n_downsample + 1)`` pixels a side, maps it to ``[-1, 1]``, pads it
    (replicate, bottom/right) to a multiple of ``2 ** n_downsample``, runs the
    networks, crops the padding off and maps the tanh output back to
    ``[0, 1]``. Training code calls :meth:`encode` / :meth:`decode` (signed
    space, no padding) directly, since the paper's losses pair one domain's
    encoder with the other domain's decoder.

    Args:
        dim: first-layer channels (paper: 64).
        n_downsample: stride-2 stages, mirrored by the decoder (paper: 2).
        n_res: residual blocks in the encoder and in the decoder (paper: 4 each).
        pad_type: ``"reflect"`` (paper) or ``"zero"``.
        generator: draws the initial weights (a seeded generator fixes them).

    Shapes:
        ``forward(images (B, 3, H, W) in [0, 1]) -> (B, 3, H, W) in [0, 1]``.

    Example:
        >>> g = TranslatorGenerator(dim=8, n_res=1, generator=torch.Generator().manual_seed(0))
        >>> y = g(torch.rand(2, 3, 30, 45))
        >>> y.shape, bool(0 <= y.min() and y.max() <= 1)
        (torch.Size([2, 3, 30, 45]), True)
    """

    def __init__(
        self,
        *,
        dim: int = 64,
        n_downsample: int = 2,
        n_res: int = 4,
        pad_type: str = "reflect",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.encoder = TranslatorEncoder(
            dim=dim, n_downsample=n_downsample, n_res=n_res, pad_type=pad_type, generator=generator
        )
        self.decoder = TranslatorDecoder(
            in_channels=self.encoder.out_channels, n_upsample=n_downsample, n_res=n_res,
            pad_type=pad_type, generator=generator,
        )
        self.config = {"dim": dim, "n_downsample": n_downsample, "n_res": n_res, "pad_type": pad_type}

    @property
    def multiple(self) -> int:
        """Sizes :meth:`encode` / :meth:`decode` round-trip exactly: multiples of ``2 ** n_downsample``."""
        return 2 ** self.config["n_downsample"]

    @property
    def min_size(self) -> int:
        """Smallest side ``forward`` accepts (reflection padding needs 2 pixels at the coarsest scale)."""
        return 2 * self.multiple

    def encode(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` -> features ``(B, D, H / 2^n, W / 2^n)``."""
        return self.encoder(x)

    def decode(self, features: Tensor) -> Tensor:
        """Features -> ``(B, 3, h * 2^n, w * 2^n)`` in ``(-1, 1)``."""
        return self.decoder(features)

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, "images")
        return self._translate(images, "images")

    def _translate(self, images: Tensor, name: str) -> Tensor:
        """``forward`` without the value checks (the caller has run them)."""
        h, w = images.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(
                f"`{name}` must be at least {self.min_size}x{self.min_size} pixels for n_downsample="
                f"{self.config['n_downsample']}, got shape {tuple(images.shape)}"
            )
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        x = images * 2 - 1
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = self.decode(self.encode(x))[..., :h, :w]
        return (y + 1) / 2

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


class _PatchDiscriminator(nn.Sequential):
    """``n_layers`` x (4x4 stride-2 conv, no bias, leaky ReLU 0.2), then a 1x1 conv to one score map."""

    def __init__(self, in_channels: int, dim: int, n_layers: int) -> None:
        layers: list[nn.Module] = [
            _ConvBlock(in_channels, dim, 4, stride=2, padding=1, norm=False, activation="lrelu",
                       pad_type="zero", bias=False)
        ]
        for _ in range(n_layers - 1):
            layers.append(_ConvBlock(dim, 2 * dim, 4, stride=2, padding=1, norm=False, activation="lrelu",
                                     pad_type="zero", bias=False))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1))
        super().__init__(*layers)


class MultiScaleDiscriminator(nn.Module):
    """The paper's ``Discriminator``: one patch discriminator per scale, the input average-pooled
    (3x3, stride 2, padding excluded) between scales.

    The scores are raw (LSGAN: no sigmoid). There is no normalisation layer,
    so real and fake batches may be scored separately or together.

    Args:
        in_channels: image channels (3).
        dim: first-layer channels (paper: 64).
        n_layers: stride-2 layers per scale (paper: 4).
        num_scales: scales (paper: 3).
        generator: draws the initial weights.

    Shapes:
        ``(B, C, H, W)`` (the trainer passes signed images, ``[-1, 1]``) -> a list of
        ``num_scales`` score maps ``(B, 1, h_k, w_k)``, finest first.

    Raises:
        ValueError: a side shorter than ``2 ** (n_layers + num_scales - 1)`` (the
            coarsest scale would have no pixel left), a wrong rank or channel count.

    Example:
        >>> d = MultiScaleDiscriminator(dim=8, n_layers=2, num_scales=2)
        >>> [tuple(s.shape) for s in d(torch.randn(1, 3, 16, 32))]
        [(1, 1, 4, 8), (1, 1, 2, 4)]
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        dim: int = 64,
        n_layers: int = 4,
        num_scales: int = 3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_number(in_channels, "in_channels", low=1, integer=True)
        check_number(dim, "dim", low=1, integer=True)
        check_number(n_layers, "n_layers", low=1, integer=True)
        check_number(num_scales, "num_scales", low=1, integer=True)
        self.in_channels = in_channels
        self.nets = nn.ModuleList(_PatchDiscriminator(in_channels, dim, n_layers) for _ in range(num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.min_size = 2 ** (n_layers + num_scales - 1)
        self.config = {"dim": dim, "n_layers": n_layers, "num_scales": num_scales}
        _reset_parameters(self, generator)

    def forward(self, images: Tensor) -> list[Tensor]:
        check_ndim(images, "images", 4, "(B, C, H, W)")
        check_floating(images, "images")
        check_nonempty(images, "images")
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"`images` must have {self.in_channels} channels, got shape {tuple(images.shape)}"
            )
        if min(images.shape[-2:]) < self.min_size:
            raise ValueError(
                f"`images` must be at least {self.min_size}x{self.min_size} pixels for "
                f"{len(self.nets)} scales of {self.config['n_layers']} stride-2 layers, "
                f"got shape {tuple(images.shape)}"
            )
        scores = []
        x = images
        for k, net in enumerate(self.nets):
            if k:
                x = self.downsample(x)
            scores.append(net(x))
        return scores

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


# ----------------------------------------------------------------------------- VGG19 features


def _vgg19_cfg() -> list:
    """torchvision's layer table of ``vgg19().features`` (conv channel counts, ``"M"`` a 2x2 max-pool)."""
    from torchvision.models.vgg import cfgs

    return list(cfgs["E"])


@functools.cache
def _vgg19_relu_indices() -> dict[str, int]:
    """``relu{block}_{conv}`` -> index in ``torchvision.models.vgg19().features``."""
    out, index, block, conv = {}, 0, 1, 1
    for v in _vgg19_cfg():
        if v == "M":
            index += 1
            block, conv = block + 1, 1
            continue
        out[f"relu{block}_{conv}"] = index + 1
        index += 2
        conv += 1
    return out


#: The layers the paper's ``Vgg19`` returns.
VGG19_PAPER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` (its layers and indices), returning the chosen ReLU outputs.

    Built with random weights (nothing is downloaded); use :func:`vgg19_features`
    to load real ones from a local file. Only the layers up to the deepest
    requested one exist.

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
        relu = _vgg19_relu_indices()
        unknown = [name for name in layers if name not in relu]
        if unknown:
            raise ValueError(f"`layers` must be VGG19 ReLU names {sorted(relu)}, got {unknown}")
        indices = [relu[name] for name in layers]
        if indices != sorted(set(indices)):
            raise ValueError(f"`layers` must be distinct and in network order, got {layers}")
        from torchvision.models.vgg import make_layers

        cfg, count = [], 0  # the prefix of torchvision's table that reaches the deepest requested layer
        for v in _vgg19_cfg():
            if count > indices[-1]:
                break
            cfg.append(v)
            count += 1 if v == "M" else 2
        self.features = make_layers(cfg)[: indices[-1] + 1]  # torchvision's vgg19().features, cut
        self.layers = layers
        self._indices = indices
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        check_ndim(images, "images", 4, "(B, 3, H, W)")
        check_floating(images, "images")
        check_nonempty(images, "images")
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
