"""``TimmSegmenter``: any timm backbone (CNN or ViT) with a light SegFormer-style decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_number

__all__ = ["MLPDecoder", "TimmSegmenter"]


class MLPDecoder(nn.Module):
    """SegFormer's all-MLP decoder: project, upsample to the finest level, concatenate, fuse.

    Each level goes through a 1x1 conv to ``dim`` channels, is bilinearly
    upsampled (``align_corners=False``) to the size of level ``finest``, and
    the concatenation is fused by a 1x1 conv + GroupNorm (``gcd(32, dim)``
    groups, so batch size 1 trains) + ReLU.

    Args:
        in_channels: channels of each input level.
        dim: output channels ``D``.
        finest: index of the level whose size the output takes.

    Example:
        >>> dec = MLPDecoder([8, 16], 32)
        >>> dec([torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]).shape
        torch.Size([2, 32, 16, 16])
    """

    def __init__(self, in_channels: Sequence[int], dim: int, *, finest: int = 0) -> None:
        super().__init__()
        if len(in_channels) == 0:
            raise ValueError("`in_channels` must list at least one level, got []")
        check_number(dim, "dim", low=1, integer=True)
        check_number(finest, "finest", low=0, high=len(in_channels) - 1, integer=True)
        self.finest = int(finest)
        self.proj = nn.ModuleList(nn.Conv2d(int(c), dim, kernel_size=1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * dim, dim, kernel_size=1, bias=False),
            nn.GroupNorm(math.gcd(32, dim), dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """``features``: one ``(B, C_i, h_i, w_i)`` map per level; returns ``(B, D, h, w)``."""
        if len(features) != len(self.proj):
            raise ValueError(f"`features` must hold {len(self.proj)} levels, got {len(features)}")
        size = features[self.finest].shape[-2:]
        out = []
        for proj, f in zip(self.proj, features, strict=True):
            y = proj(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out.append(y)
        return self.fuse(torch.cat(out, dim=1))


class TimmSegmenter(nn.Module):
    """A timm ``features_only`` backbone + :class:`MLPDecoder` + a 1x1 classifier.

    Logits come out at the decoder's resolution, the finest level used: stride
    4 for CNNs (ResNet, ConvNeXt, ...), the patch size for plain ViTs (16, or 14
    for DINOv2), which give one map per block index. They are not upsampled to
    the input size.

    Any input size: backbones that accept timm's ``dynamic_img_size`` (ViT, DeiT,
    EVA, DINOv2, Swin) get ``dynamic_img_size=True`` unless the kwargs say otherwise
    (their position embeddings are interpolated to the input's grid). An input
    whose sides are not multiples of a ViT's patch ``p`` is resized (bilinear) to
    the nearest multiples, ``p * round(H / p)`` x ``p * round(W / p)``, so the
    logits, ``round(H / p)`` x ``round(W / p)``, cover exactly the whole image
    (timm's ``dynamic_img_pad=True`` pads instead, and then the last row and
    column of logits also cover padding). By default every level with stride >= 4 feeds the decoder
    (a ResNet's stride-2 stem output is left out; a ViT gets timm's default, the
    last three blocks); ``out_indices`` picks levels explicitly (passed to timm).
    Backbones that emit channels-last maps (Swin) are permuted to ``(B, C, h, w)``.

    Structure (what :func:`~diga.models.with_features` and
    :func:`~diga.models.param_groups` rely on): ``encoder`` (the timm backbone),
    ``decoder`` (its output is the features, ``decoder_dim`` channels), and
    ``segmentation_head`` (``Dropout2d`` + 1x1 conv to ``num_classes``).

    Args:
        encoder_name: a timm model name (``"resnet18"``, ``"convnext_atto"``,
            ``"vit_tiny_patch16_224"``).
        num_classes: ``C``.
        pretrained: load timm's pretrained weights (a download, unless cached).
        decoder_dim: the features' channels ``D``.
        out_indices: backbone levels to decode (timm's ``out_indices``).
        dropout: ``Dropout2d`` rate before the classifier.
        **backbone_kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``drop_path_rate``,
            ``depth``; ``dynamic_img_size=False`` keeps a ViT at its ``img_size``).

    Attributes:
        mean, std: the backbone's ``pretrained_cfg`` RGB statistics (tuples).
        patch_size: ``(p, p)`` of a ViT whose inputs are resized to multiples of it, else None.
        feature_dim, num_classes, output_stride.

    Raises:
        ValueError: unknown ``encoder_name`` or bad settings.

    Example:
        >>> net = TimmSegmenter("resnet18", num_classes=5, decoder_dim=32)
        >>> net(torch.rand(2, 3, 64, 64)).shape  # stride 4
        torch.Size([2, 5, 16, 16])
        >>> vit = TimmSegmenter("vit_tiny_patch16_224", 5, decoder_dim=32)
        >>> vit(torch.rand(1, 3, 64, 64)).shape, vit.mean  # stride 16
        (torch.Size([1, 5, 4, 4]), (0.5, 0.5, 0.5))
        >>> vit(torch.rand(1, 3, 70, 90)).shape  # resized to 64 x 96 first
        torch.Size([1, 5, 4, 6])
    """

    def __init__(
        self,
        encoder_name: str,
        num_classes: int,
        *,
        pretrained: bool = False,
        decoder_dim: int = 256,
        out_indices: Sequence[int] | None = None,
        dropout: float = 0.1,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if not isinstance(encoder_name, str) or not encoder_name:
            raise ValueError(f"`encoder_name` must be a timm model name, got {encoder_name!r}")
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(decoder_dim, "decoder_dim", low=1, integer=True)
        check_number(dropout, "dropout", low=0, high=1, high_open=True)
        kwargs = dict(backbone_kwargs)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
        try:
            if "dynamic_img_size" in kwargs:
                self.encoder = timm.create_model(encoder_name, pretrained=bool(pretrained), features_only=True,
                                                 **kwargs)
            else:  # any input size where the backbone allows it (ViTs); CNNs refuse the keyword
                try:
                    self.encoder = timm.create_model(encoder_name, pretrained=bool(pretrained), features_only=True,
                                                     dynamic_img_size=True, **kwargs)
                except TypeError as err:
                    if "dynamic_img_size" not in str(err):
                        raise
                    self.encoder = timm.create_model(encoder_name, pretrained=bool(pretrained), features_only=True,
                                                     **kwargs)
        except RuntimeError as err:
            if str(err).startswith("Unknown model"):
                raise ValueError(
                    f"`encoder_name` must be a timm model name (see timm.list_models()), "
                    f"got {encoder_name!r}"
                ) from None
            raise
        patch_embed = getattr(getattr(self.encoder, "model", self.encoder), "patch_embed", None)
        patch = getattr(patch_embed, "patch_size", None)
        resizes = (patch is not None and not getattr(patch_embed, "strict_img_size", True)
                   and not getattr(patch_embed, "dynamic_img_pad", False))
        self.patch_size: tuple[int, int] | None = (int(patch[0]), int(patch[1])) if resizes else None
        reductions = [int(r) for r in self.encoder.feature_info.reduction()]
        channels = [int(c) for c in self.encoder.feature_info.channels()]
        levels = list(range(len(reductions)))
        if out_indices is None and any(r >= 4 for r in reductions):
            levels = [i for i in levels if reductions[i] >= 4]
        self.levels = tuple(levels)
        used = [reductions[i] for i in levels]
        self.output_stride = min(used)
        fmt = getattr(self.encoder, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        self.decoder = MLPDecoder([channels[i] for i in levels], decoder_dim, finest=used.index(min(used)))
        classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)
        self.segmentation_head = nn.Sequential(nn.Dropout2d(dropout), classifier)
        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        self.encoder_name = encoder_name
        self.num_classes = int(num_classes)
        self.feature_dim = int(decoder_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: normalised ``(B, 3, H, W)``; returns logits ``(B, C, H / s, W / s)``, s = output_stride
        (``round(H / p)`` x ``round(W / p)`` for a ViT of patch ``p``)."""
        if self.patch_size is not None:
            (ph, pw), (h, w) = self.patch_size, x.shape[-2:]
            if h % ph or w % pw:  # the nearest multiples of the patch, at least one patch
                size = (max(ph, (h + ph // 2) // ph * ph), max(pw, (w + pw // 2) // pw * pw))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        maps = self.encoder(x)
        maps = [maps[i] for i in self.levels]
        if self.channels_last:
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        return self.segmentation_head(self.decoder(maps))

    def extra_repr(self) -> str:
        return (
            f"encoder_name={self.encoder_name!r}, levels={self.levels}, output_stride={self.output_stride}, "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes}"
        )
