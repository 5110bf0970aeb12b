"""DeepLab v2: the paper's segmentation network (dilated ResNet at stride 8 + ASPP head)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diga._checks import check_number
from diga.models.features import encoder_mean_std
from diga.models.optim_groups import param_groups as _param_groups

__all__ = ["ASPPSumHead", "DeepLabV2", "DiGAASPPDecoder", "SqueezeExcitation"]

DILATIONS = (6, 12, 18, 24)


class ASPPSumHead(nn.Module):
    """DeepLab v2's classifier: parallel dilated 3x3 convs to the classes, summed.

    ``logits = sum_d conv3x3_d(x)`` with dilation (and padding) ``d`` for each
    ``d`` in ``dilations``. Weights are drawn from ``N(0, 0.01)`` and biases are
    zero, as in DeepLab v2. (The DiGA scripts' version of this module returns
    inside its loop and so sums only the first two branches; this one sums all.)

    Args:
        in_channels: input channels.
        num_classes: ``C``.
        dilations: one branch per dilation.

    Example:
        >>> head = ASPPSumHead(8, 3)
        >>> head(torch.rand(1, 8, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """

    def __init__(self, in_channels: int, num_classes: int, *, dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=int(d), dilation=int(d))
            for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, D, h, w)``; returns ``(B, C, h, w)``."""
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class SqueezeExcitation(nn.Module):
    """Channel re-weighting: ``x * sigmoid(W2 relu(W1 avgpool(x)))``, hidden size ``channels // r``.

    Example:
        >>> SqueezeExcitation(32, reduction=16)(torch.rand(2, 32, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )
        for m in self.fc:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.fc(x.mean(dim=(2, 3)))
        return x * weight[:, :, None, None]


def _conv_gn(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int, groups: int
) -> list[nn.Module]:
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size=kernel_size,
        padding=dilation * (kernel_size // 2), dilation=dilation,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_in")
    nn.init.zeros_(conv.bias)
    return [conv, nn.GroupNorm(groups, out_channels)]


class DiGAASPPDecoder(nn.Module):
    """The ASPP decoder of DiGA's released scripts (``Classifier_Module2``), up to the features.

    A 1x1 branch and one dilated 3x3 branch per dilation, each
    conv -> GroupNorm(32) -> ReLU to ``dim`` channels; concatenated
    (``(1 + len(dilations)) * dim``); squeeze-excitation (r = 16); 3x3 conv to
    ``dim`` + GroupNorm(32); ``Dropout2d(dropout)``. Its output is the paper's
    feature map (``'feat'``), which a 1x1 classifier turns into logits.
    Convs: Kaiming-normal (fan-in) weights, zero biases.

    Args:
        in_channels: input channels (2048 for ResNet-101).
        dim: channels of each branch and of the output ``D`` (256).
        dilations: the 3x3 branches' dilations.
        dropout: ``Dropout2d`` rate (0.1).
        groups: GroupNorm groups (32).

    Example:
        >>> DiGAASPPDecoder(64, dim=32, groups=8)(torch.rand(2, 64, 6, 6)).shape
        torch.Size([2, 32, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        *,
        dim: int = 256,
        dilations: Sequence[int] = DILATIONS,
        dropout: float = 0.1,
        groups: int = 32,
    ) -> None:
        super().__init__()
        check_number(dim, "dim", low=1, integer=True)
        check_number(groups, "groups", low=1, integer=True)
        if dim % groups:
            raise ValueError(f"`dim` must be divisible by `groups`={groups}, got {dim}")
        check_number(dropout, "dropout", low=0, high=1, high_open=True)
        branches = [nn.Sequential(*_conv_gn(in_channels, dim, 1, 1, groups), nn.ReLU(inplace=True))]
        branches += [
            nn.Sequential(*_conv_gn(in_channels, dim, 3, int(d), groups), nn.ReLU(inplace=True))
            for d in dilations
        ]
        self.branches = nn.ModuleList(branches)
        cat = dim * len(branches)
        self.bottleneck = nn.Sequential(
            SqueezeExcitation(cat, reduction=16), *_conv_gn(cat, dim, 3, 1, groups)
        )
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, in_channels, h, w)``; returns the features ``(B, dim, h, w)``."""
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.dropout(self.bottleneck(out))


class DeepLabV2(nn.Module):
    """DeepLab v2 with a ResNet encoder at output stride 8, as used by DiGA.

    The encoder is smp's (``smp.encoders.get_encoder(..., output_stride=8)``: the
    last two stages dilated by 2 and 4 instead of strided; ``tu-`` timm names
    work too). Two heads:

    * ``head="diga"`` (default): :class:`DiGAASPPDecoder` (the head DiGA's
      released scripts train) then a 1x1 classifier without bias, weights
      ``N(0, 0.001)``. Features: the 256-d decoder output (after its dropout).
    * ``head="sum"``: classic DeepLab v2, :class:`ASPPSumHead` straight from the
      encoder's last map. Features: that map (2048-d for ResNet-101).

    Logits and features are at stride 8 (``ceil(H / 8)``), not upsampled.
    Structure: ``encoder``, ``decoder`` (identity for ``"sum"``) and
    ``segmentation_head``, so :func:`~diga.models.with_features` hooks the
    head's input. Unlike the original scripts, batch-norm layers of the encoder
    are not frozen.

    Args:
        encoder_name: an smp encoder name (``"resnet101"`` in the paper).
        num_classes: ``C``.
        encoder_weights: smp weights name (``"imagenet"``) or None (random init, no download).
        head: ``"diga"`` or ``"sum"``.

    Attributes:
        mean, std: the encoder weights' RGB statistics; feature_dim; num_classes; output_stride (8).

    Example:
        >>> net = DeepLabV2("resnet18", num_classes=4)
        >>> net(torch.rand(1, 3, 64, 64)).shape, net.feature_dim
        (torch.Size([1, 4, 8, 8]), 256)
        >>> [g["lr"] for g in net.param_groups(0.01)]
        [0.01, 0.1]
    """

    def __init__(
        self,
        encoder_name: str = "resnet101",
        num_classes: int = 19,
        *,
        encoder_weights: str | None = None,
        head: str = "diga",
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        check_number(num_classes, "num_classes", low=1, integer=True)
        if head not in ("diga", "sum"):
            raise ValueError(f"`head` must be 'diga' or 'sum', got {head!r}")
        if not isinstance(encoder_name, str):
            raise ValueError(f"`encoder_name` must be an smp encoder name (str), got {encoder_name!r}")
        weights = encoder_weights
        if encoder_name.startswith("tu-") and isinstance(weights, str):
            weights = True  # smp's timm encoders take a flag; the weights' tag is in the name
        try:
            self.encoder = get_encoder(encoder_name, in_channels=3, depth=5, weights=weights, output_stride=8)
        except KeyError as err:
            raise ValueError(f"`encoder_name` {encoder_name!r} is not an smp encoder: {err}") from None
        in_channels = int(self.encoder.out_channels[-1])
        if head == "diga":
            self.decoder: nn.Module = DiGAASPPDecoder(in_channels)
            self.segmentation_head: nn.Module = nn.Conv2d(256, num_classes, kernel_size=1, bias=False)
            nn.init.normal_(self.segmentation_head.weight, std=0.001)
            self.feature_dim = 256
        else:
            self.decoder = nn.Identity()
            self.segmentation_head = ASPPSumHead(in_channels, num_classes)
            self.feature_dim = in_channels
        self.head = head
        self.encoder_name = encoder_name
        self.num_classes = int(num_classes)
        self.output_stride = 8
        self.mean, self.std = encoder_mean_std(encoder_name, encoder_weights, self.encoder)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: normalised ``(B, 3, H, W)``; returns logits ``(B, C, ceil(H / 8), ceil(W / 8))``."""
        return self.segmentation_head(self.decoder(self.encoder(x)[-1]))

    def param_groups(self, lr: float, *, head_lr_mult: float = 10.0) -> list[dict]:
        """The paper's optimiser groups: encoder at ``lr``, decoder and head at ``10 * lr``.

        See :func:`~diga.models.param_groups` (trainable parameters only).
        """
        return _param_groups(self, lr, head_lr_mult=head_lr_mult)

    def extra_repr(self) -> str:
        return f"encoder={self.encoder_name!r}, head={self.head!r}, num_classes={self.num_classes}"
