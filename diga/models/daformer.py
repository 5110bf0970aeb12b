"""DAFormer: smp's MiT (SegFormer) encoder with DAFormer's context-aware fusion decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diga._checks import check_number
from diga.models.features import encoder_mean_std
from diga.models.optim_groups import param_groups as _param_groups
from diga.models.timm_segmenter import MLPDecoder

__all__ = ["DAFormer", "DAFormerDecoder"]

DILATIONS = (1, 6, 12, 18)


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


def _aspp_branch(in_channels: int, out_channels: int, dilation: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU for dilation 1; else a depthwise-separable dilated 3x3 (BN + ReLU after each part)."""
    if dilation == 1:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), *_bn_relu(out_channels))
    return nn.Sequential(
        nn.Conv2d(
            in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False
        ),
        *_bn_relu(in_channels),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        *_bn_relu(out_channels),
    )


class _ContextFusion(nn.Module):
    """DAFormer's fusion: ASPP-style branches (no image pooling) on one map, concatenated, 3x3 conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_aspp_branch(in_channels, out_channels, int(d)) for d in dilations)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(out_channels * len(dilations), out_channels, 3, padding=1, bias=False), *_bn_relu(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.branches], dim=1))


class DAFormerDecoder(MLPDecoder):
    """DAFormer's decoder up to the features: per-level embeddings, then context-aware fusion.

    Each encoder level goes through a 1x1 conv (a linear embedding, with bias, no
    norm) to ``embed_dim`` channels and is upsampled bilinearly
    (``align_corners=False``) to the first (finest, stride-4) level, as in
    :class:`~diga.models.MLPDecoder` (whose ``proj`` and ``forward`` this reuses); the
    concatenation (``levels * embed_dim``) is fused (``fuse``) ASPP-style without image
    pooling: one branch per dilation, a 1x1 conv for dilation 1 and a
    depthwise-separable 3x3 conv at that dilation otherwise (depthwise, BN, ReLU,
    pointwise, BN, ReLU), each to ``decoder_dim``; their concatenation goes
    through a 3x3 conv + BN + ReLU to ``decoder_dim``: the features.

    Args:
        in_channels: channels of each encoder level, finest first.
        embed_dim: channels of each level's embedding (256).
        decoder_dim: the branches' and the output's channels ``D`` (256).
        dilations: one fusion branch per dilation ((1, 6, 12, 18)).

    Example:
        >>> dec = DAFormerDecoder([8, 16], embed_dim=4, decoder_dim=6, dilations=(1, 2))
        >>> dec([torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]).shape
        torch.Size([2, 6, 8, 8])
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        embed_dim: int = 256,
        decoder_dim: int = 256,
        dilations: Sequence[int] = DILATIONS,
    ) -> None:
        check_number(embed_dim, "embed_dim", low=1, integer=True)
        check_number(decoder_dim, "decoder_dim", low=1, integer=True)
        if isinstance(dilations, (str, bytes)) or len(dilations) == 0:
            raise ValueError(f"`dilations` must be a non-empty sequence of integers >= 1, got {dilations!r}")
        for d in dilations:
            check_number(d, "dilations", low=1, integer=True)
        super().__init__(in_channels, embed_dim, finest=0)
        self.fuse = _ContextFusion(embed_dim * len(in_channels), decoder_dim, dilations)
        self.out_channels = int(decoder_dim)


class DAFormer(nn.Module):
    """DAFormer (Hoyer et al., CVPR 2022): a MiT encoder and the context-aware fusion decoder.

    The family of DiGA's strongest reported numbers; DiGA's public scripts ship its
    head (``DAFormerHead``, beside ``SegFormerHead`` and MixTransformer) but no
    script uses it. The encoder is smp's MiT (``mit_b0`` ... ``mit_b5``; DAFormer
    uses ``mit_b5``), its four levels at strides 4, 8, 16, 32 feed
    :class:`DAFormerDecoder`, whose ``decoder_dim``-channel output is the features;
    ``segmentation_head`` is ``Dropout2d(dropout)`` + 1x1 conv (weights
    ``N(0, 0.01)``, zero bias, as DAFormer's classifier). Logits at stride 4, not
    upsampled.

    Args:
        encoder_name: an smp MiT encoder, ``"mit_b0"`` ... ``"mit_b5"``.
        num_classes: ``C``.
        encoder_weights: smp weights name (``"imagenet"``) or None (random init, no download).
        embed_dim: per-level embedding channels (256).
        decoder_dim: the fusion's and the features' channels ``D`` (256).
        dilations: the fusion branches' dilations ((1, 6, 12, 18)).
        dropout: ``Dropout2d`` rate before the classifier (0.1).

    Attributes:
        encoder, decoder, segmentation_head; mean, std (the encoder weights' statistics);
        feature_dim, num_classes, output_stride (4), encoder_name.

    Raises:
        ValueError: ``encoder_name`` is not an smp MiT encoder; bad sizes or rates.

    Example:
        >>> net = DAFormer("mit_b0", num_classes=4, embed_dim=32, decoder_dim=32)
        >>> net(torch.rand(1, 3, 64, 64)).shape, net.feature_dim
        (torch.Size([1, 4, 16, 16]), 32)
    """

    def __init__(
        self,
        encoder_name: str = "mit_b5",
        num_classes: int = 19,
        *,
        encoder_weights: str | None = None,
        embed_dim: int = 256,
        decoder_dim: int = 256,
        dilations: Sequence[int] = DILATIONS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import encoders, get_encoder

        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(dropout, "dropout", low=0, high=1, high_open=True)
        names = sorted(n for n in encoders if n.startswith("mit_"))
        if encoder_name not in names:
            raise ValueError(f"`encoder_name` must be an smp MiT encoder, one of {names}, got {encoder_name!r}")
        self.encoder = get_encoder(encoder_name, in_channels=3, depth=5, weights=encoder_weights)
        channels = [int(c) for c in self.encoder.out_channels[2:]]  # strides 4..32 (2: a 0-channel stub)
        self.decoder = DAFormerDecoder(channels, embed_dim=embed_dim, decoder_dim=decoder_dim, dilations=dilations)
        classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)
        self.segmentation_head = nn.Sequential(nn.Dropout2d(dropout), classifier)
        self.mean, self.std = encoder_mean_std(encoder_name, encoder_weights, self.encoder)
        self.encoder_name = encoder_name
        self.num_classes = int(num_classes)
        self.feature_dim = int(decoder_dim)
        self.output_stride = 4

    def forward(self, x: Tensor) -> Tensor:
        """``x``: normalised ``(B, 3, H, W)``; returns logits ``(B, C, ceil(H / 4), ceil(W / 4))``."""
        return self.segmentation_head(self.decoder(self.encoder(x)[2:]))

    def param_groups(self, lr: float, *, head_lr_mult: float = 10.0) -> list[dict]:
        """Optimiser groups: encoder at ``lr``, decoder and head at ``head_lr_mult * lr``.

        See :func:`~diga.models.param_groups`.
        """
        return _param_groups(self, lr, head_lr_mult=head_lr_mult)

    def extra_repr(self) -> str:
        return f"encoder_name={self.encoder_name!r}, feature_dim={self.feature_dim}, num_classes={self.num_classes}"
