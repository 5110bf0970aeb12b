"""HRNet + OCR: the semi-supervised scripts' model (timm's HRNet, object-contextual representations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diga._checks import check_ndim, check_number
from diga.models.optim_groups import param_groups as _param_groups

__all__ = ["HRNetOCR", "OCRDecoder", "object_context", "object_region_representations"]


def object_region_representations(pixels: Tensor, regions: Tensor) -> Tensor:
    """One vector per object region: the pixels' representations weighted by the region's spatial softmax.

    ``out[b, :, k] = sum_n softmax_n(regions[b, k])[n] * pixels[b, :, n]`` over the
    ``N = h * w`` positions (OCR's "object region representations", scale 1).

    Args:
        pixels: pixel representations ``(B, D, h, w)``.
        regions: soft object regions, unnormalised scores ``(B, K, h, w)``.

    Returns:
        ``(B, D, K)``, the pixels' dtype.

    Raises:
        ValueError: wrong ranks, or batch / spatial sizes that differ.

    Example:
        >>> pixels = torch.rand(2, 8, 4, 4)
        >>> object_region_representations(pixels, torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 8, 3])
        >>> # flat scores: every region is the mean pixel
        >>> torch.allclose(object_region_representations(pixels, torch.zeros(2, 3, 4, 4))[..., 0],
        ...                pixels.mean(dim=(2, 3)))
        True
    """
    check_ndim(pixels, "pixels", 4, "(B, D, h, w)")
    check_ndim(regions, "regions", 4, "(B, K, h, w)")
    if pixels.shape[0] != regions.shape[0] or pixels.shape[-2:] != regions.shape[-2:]:
        raise ValueError(
            f"`pixels` (B, D, h, w) and `regions` (B, K, h, w) must share B, h and w, "
            f"got {tuple(pixels.shape)} and {tuple(regions.shape)}"
        )
    weights = regions.flatten(2).softmax(dim=-1).to(pixels.dtype)  # (B, K, N)
    return torch.bmm(pixels.flatten(2), weights.transpose(1, 2))


def object_context(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Each pixel's object context: attention of pixel queries over the ``K`` object regions.

    ``out[b, :, n] = sum_k softmax_k(query[b, :, n] . key[b, :, k] / sqrt(Dk)) * value[b, :, k]``
    (OCR's pixel-region relation, scaled dot product, softmax over the regions),
    computed by :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        query: pixel queries ``(B, Dk, h, w)``.
        key: region keys ``(B, Dk, K)``.
        value: region values ``(B, Dv, K)``.

    Returns:
        ``(B, Dv, h, w)``.

    Raises:
        ValueError: wrong ranks or sizes that do not match.

    Example:
        >>> q, k, v = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 5), torch.rand(2, 6, 5)
        >>> object_context(q, k, v).shape
        torch.Size([2, 6, 3, 3])
    """
    check_ndim(query, "query", 4, "(B, Dk, h, w)")
    check_ndim(key, "key", 3, "(B, Dk, K)")
    check_ndim(value, "value", 3, "(B, Dv, K)")
    b, dk, h, w = query.shape
    if key.shape[:2] != (b, dk) or value.shape[0] != b or value.shape[2] != key.shape[2]:
        raise ValueError(
            f"`query` (B, Dk, h, w), `key` (B, Dk, K) and `value` (B, Dv, K) must agree, got "
            f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}"
        )
    out = F.scaled_dot_product_attention(
        query.flatten(2).transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    )  # (B, N, Dv)
    return out.transpose(1, 2).reshape(b, value.shape[1], h, w)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class OCRDecoder(nn.Module):
    """The OCR head up to its features: soft object regions, then object-contextual representations.

    From the backbone map ``x`` (``in_channels``):

    * soft object regions (the auxiliary head): 1x1 conv ``in -> in`` + BN + ReLU, 1x1 conv
      ``-> C`` (with bias): ``(B, C, h, w)`` class scores;
    * pixel representations: 3x3 conv ``-> mid_channels`` + BN + ReLU;
    * object region representations (:func:`object_region_representations`);
    * queries from the pixels and keys from the regions, each two 1x1 conv + BN + ReLU
      to ``key_channels``; values one 1x1 conv + BN + ReLU; the context
      (:func:`object_context`) back to ``mid_channels`` by 1x1 conv + BN + ReLU;
    * the object-contextual representation: ``[context; pixels]`` through 1x1 conv +
      BN + ReLU + ``Dropout2d(dropout)`` to ``mid_channels``: the features.

    Convs followed by BN have no bias. (The semi-supervised scripts' version gives
    the 3x3 and the regions' first 1x1 conv a bias too, which BN cancels.)

    Args:
        in_channels: channels of the backbone map (720 for HRNet-W48).
        num_classes: ``C``, the soft regions' count.
        mid_channels: the pixel and output representations' channels ``D`` (512).
        key_channels: the attention's key / value channels (256).
        dropout: ``Dropout2d`` rate on the output (0.05).

    Example:
        >>> dec = OCRDecoder(16, 3, mid_channels=8, key_channels=4)
        >>> features, regions = dec(torch.rand(2, 16, 5, 5))
        >>> tuple(features.shape), tuple(regions.shape)
        ((2, 8, 5, 5), (2, 3, 5, 5))
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        mid_channels: int = 512,
        key_channels: int = 256,
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        check_number(in_channels, "in_channels", low=1, integer=True)
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(mid_channels, "mid_channels", low=1, integer=True)
        check_number(key_channels, "key_channels", low=1, integer=True)
        check_number(dropout, "dropout", low=0, high=1, high_open=True)
        self.aux_head = nn.Sequential(
            *_conv_bn_relu(in_channels, in_channels), nn.Conv2d(in_channels, num_classes, kernel_size=1)
        )
        self.pixels = nn.Sequential(*_conv_bn_relu(in_channels, mid_channels, 3))
        self.query = nn.Sequential(
            *_conv_bn_relu(mid_channels, key_channels), *_conv_bn_relu(key_channels, key_channels)
        )
        self.key = nn.Sequential(
            *_conv_bn_relu(mid_channels, key_channels), *_conv_bn_relu(key_channels, key_channels)
        )
        self.value = nn.Sequential(*_conv_bn_relu(mid_channels, key_channels))
        self.up = nn.Sequential(*_conv_bn_relu(key_channels, mid_channels))
        self.fuse = nn.Sequential(*_conv_bn_relu(2 * mid_channels, mid_channels), nn.Dropout2d(dropout))
        self.out_channels = int(mid_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: ``(B, in_channels, h, w)``; returns ``(features (B, D, h, w), soft regions (B, C, h, w))``."""
        regions = self.aux_head(x)
        pixels = self.pixels(x)
        objects = object_region_representations(pixels, regions).unsqueeze(-1)  # (B, D, K, 1)
        key = self.key(objects).squeeze(-1)
        value = self.value(objects).squeeze(-1)
        context = self.up(object_context(self.query(pixels), key, value))
        return self.fuse(torch.cat([context, pixels], dim=1)), regions


_DIVISOR = 32  # timm HRNet fuses branches by exact 2x upsampling: sides divisible by 32


def _timm_names(prefix: str) -> list[str]:
    import timm

    return timm.list_models(f"{prefix}*")


class HRNetOCR(nn.Module):
    """HRNet + OCR, the model of DiGA's semi-supervised scripts (HRNetV2-W48 + OCR).

    The backbone is timm's HRNet (``features_only=True, feature_location=""``: the
    final stage's four raw branches at strides 4, 8, 16, 32, 48/96/192/384
    channels for W48, without timm's classification "incre" modules). Its fusion
    layers upsample bilinearly with ``align_corners=True`` as in the scripts'
    (and HRNet's segmentation) code, not nearest as in timm's ImageNet model.
    Branches 1-3 are upsampled the same way to the stride-4 branch and
    concatenated (720 channels for W48, 480 for W32, 270 for W18);
    :class:`OCRDecoder` turns that into the 512-d object-contextual
    representation (the features the scripts' centroids use) and the soft object
    regions (the auxiliary logits); ``segmentation_head`` is the final 1x1 conv.
    timm's HRNet needs sides divisible by 32: other inputs are zero-padded
    (bottom, right) to the next multiple, and the concatenated map is cropped
    back to ``ceil(H / 4) x ceil(W / 4)`` before the OCR head, which so sees
    no padded position (Mapillary's 1080 x 1920, BDD100k's 720 x 1280 work).

    ``forward`` returns ``{"out": logits, "aux": soft object regions}``, both
    ``(B, C, ceil(H / 4), ceil(W / 4))``, in train and eval mode: wrap it with
    :func:`~diga.models.with_features` and call with ``aux=True`` for the
    auxiliary output (the scripts weight its CE and KD terms 0.1).

    Args:
        encoder_name: a timm HRNet: ``"hrnet_w48"`` (the scripts' default config), ``"hrnet_w32"``
            (their "lite"), ``"hrnet_w18"`` ("ultralite"), or another ``hrnet_*`` name.
        num_classes: ``C``.
        pretrained: load timm's ImageNet weights for the backbone (a download unless cached).
        mid_channels: the OCR representations' channels ``D`` (512).
        key_channels: the OCR attention's channels (256).
        dropout: ``Dropout2d`` rate on the features (0.05).

    Attributes:
        encoder, decoder, segmentation_head: backbone, :class:`OCRDecoder`, 1x1 conv ``D -> C``.
        mean, std: the backbone's ``pretrained_cfg`` statistics (ImageNet's).
        feature_dim, num_classes, output_stride (4), encoder_name.

    Raises:
        ValueError: ``encoder_name`` is not a timm HRNet; bad sizes.

    Example:
        >>> net = HRNetOCR("hrnet_w18_small", num_classes=4)
        >>> out = net(torch.rand(1, 3, 64, 64))
        >>> tuple(out["out"].shape), tuple(out["aux"].shape), net.feature_dim
        ((1, 4, 16, 16), (1, 4, 16, 16), 512)
    """

    def __init__(
        self,
        encoder_name: str = "hrnet_w48",
        num_classes: int = 19,
        *,
        pretrained: bool = False,
        mid_channels: int = 512,
        key_channels: int = 256,
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        import timm

        check_number(num_classes, "num_classes", low=1, integer=True)
        names = _timm_names("hrnet_")
        if encoder_name not in names:
            raise ValueError(f"`encoder_name` must be a timm HRNet, one of {names}, got {encoder_name!r}")
        self.encoder = timm.create_model(
            encoder_name, pretrained=bool(pretrained), features_only=True, feature_location="",
            out_indices=(1, 2, 3, 4),
        )
        for module in self.encoder.modules():  # the fusion's upsampling, as the scripts' HRNet
            if isinstance(module, nn.Upsample):
                module.mode, module.align_corners = "bilinear", True
        in_channels = sum(int(c) for c in self.encoder.feature_info.channels())
        self.decoder = OCRDecoder(
            in_channels, num_classes, mid_channels=mid_channels, key_channels=key_channels, dropout=dropout
        )
        self.segmentation_head = nn.Conv2d(mid_channels, num_classes, kernel_size=1)
        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        self.encoder_name = encoder_name
        self.num_classes = int(num_classes)
        self.feature_dim = int(mid_channels)
        self.output_stride = 4

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: normalised ``(B, 3, H, W)``; returns ``{"out", "aux"}``, each ``(B, C, H / 4, W / 4)``."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % _DIVISOR, -w % _DIVISOR
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        branches = self.encoder(x)
        size = branches[0].shape[-2:]
        maps = [branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=True) for b in branches[1:]
        ]
        cat = torch.cat(maps, dim=1)[..., : -(-h // 4), : -(-w // 4)]
        features, regions = self.decoder(cat)
        return {"out": self.segmentation_head(features), "aux": regions}

    def param_groups(self, lr: float, *, head_lr_mult: float = 10.0) -> list[dict]:
        """Optimiser groups: backbone at ``lr``, OCR head at ``head_lr_mult * lr``.

        The semi-supervised scripts train everything at one rate: ``head_lr_mult=1``.
        See :func:`~diga.models.param_groups`.
        """
        return _param_groups(self, lr, head_lr_mult=head_lr_mult)

    def extra_repr(self) -> str:
        return f"encoder_name={self.encoder_name!r}, feature_dim={self.feature_dim}, num_classes={self.num_classes}"
