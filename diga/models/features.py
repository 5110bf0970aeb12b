"""``with_features``: logits and the decoder features DiGA needs, from any segmentation model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diga._checks import check_images
from diga._wrap import unwrap_model

__all__ = ["FeatureSegmenter", "encoder_mean_std", "with_features"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)
# smp's own encoders keep their preprocessing in a config file on the Hugging Face hub, beside
# the weights (``smp.encoders.get_preprocessing_params`` downloads it): we read it when it is in
# the local cache (downloaded with the weights) and never download. Without it, these are the
# families whose weights were not trained with ImageNet statistics; everything else uses ImageNet's.
_DPN = ((124 / 255, 117 / 255, 104 / 255), (1 / (0.0167 * 255),) * 3)


def encoder_mean_std(
    encoder_name: str | None,
    encoder_weights: str | bool | None = None,
    encoder: nn.Module | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The RGB mean and std an smp (or timm) encoder's weights expect, with no download.

    ``tu-`` (timm) encoders: the timm model's ``pretrained_cfg`` when ``encoder`` is
    given, else timm's registered config for the name. smp's own encoders with
    ``encoder_weights``: smp's preprocessing parameters (the weights' ``config.json``)
    when the Hugging Face cache holds them; otherwise the
    statistics their weights were trained with (DPN, Inception and Xception
    families, and efficientnet ``advprop``/``lite`` weights, differ from ImageNet's;
    every other family uses ImageNet's). With ``encoder_weights=None`` (random
    initialisation) the statistics of the encoder's default weights are returned.

    Args:
        encoder_name: an smp encoder name (``"resnet50"``, ``"mit_b0"``, ``"tu-convnext_atto"``).
        encoder_weights: the weights' name, as passed to smp.
        encoder: the encoder module, read for a timm ``pretrained_cfg`` when present.

    Returns:
        ``(mean, std)``, each a tuple of three floats, for RGB in ``[0, 1]``.

    Example:
        >>> encoder_mean_std("resnet18")
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        >>> encoder_mean_std("xception")[0]
        (0.5, 0.5, 0.5)
    """
    name = str(encoder_name or "")
    cfg = getattr(getattr(encoder, "model", None), "pretrained_cfg", None)
    if cfg is None and name.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(name[3:]).to_dict()
        except (AttributeError, RuntimeError, ValueError):  # unknown name: fall through
            cfg = None
    if cfg is None and encoder_weights and not name.startswith("tu-"):
        cfg = _smp_cached_preprocessing(name, str(encoder_weights))
    if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg and len(cfg["mean"]) == 3:
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    if name.startswith("dpn"):
        return _DPN
    if name.startswith(("inceptionv4", "inceptionresnetv2", "xception")):
        return _HALF, _HALF
    if name.startswith(("timm-efficientnet-lite", "timm-tf_efficientnet_lite")):
        return _HALF, _HALF
    if name.startswith("timm-efficientnet") and encoder_weights == "advprop":
        return _HALF, _HALF
    return IMAGENET_MEAN, IMAGENET_STD


def _smp_cached_preprocessing(encoder_name: str, weights: str) -> dict | None:
    """smp's preprocessing parameters of ``encoder_name`` / ``weights`` from the local Hugging Face
    cache (the ``config.json`` beside the weights), or None: nothing is downloaded."""
    import json

    try:
        import segmentation_models_pytorch as smp
        from huggingface_hub import try_to_load_from_cache

        settings = smp.encoders.encoders[encoder_name]["pretrained_settings"][weights]
        path = try_to_load_from_cache(settings["repo_id"], "config.json", revision=settings.get("revision"))
        if not isinstance(path, str):
            return None
        with open(path) as f:
            return json.load(f)
    except (ImportError, KeyError, TypeError, OSError, ValueError):
        return None


def _default_mean_std(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    """smp: the encoder's statistics; a model with ``mean``/``std`` tuples: those; else ImageNet."""
    if _is_smp(model):
        config = getattr(model, "config", None)
        config = config if isinstance(config, dict) else {}
        return encoder_mean_std(config.get("encoder_name"), config.get("encoder_weights"), model.encoder)
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if _is_triple(mean) and _is_triple(std):
        return mean, std
    return IMAGENET_MEAN, IMAGENET_STD


def _is_smp(model: nn.Module) -> bool:
    try:
        from segmentation_models_pytorch.base import SegmentationModel
    except ImportError:  # pragma: no cover - smp is a dependency
        return False
    return isinstance(model, SegmentationModel)


def _is_triple(value: object) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _as_stat(value: object, name: str, *, positive: bool) -> Tensor:
    """A ``(1, 3, 1, 1)`` float32 buffer from three numbers."""
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"`{name}` must be three numbers (one per RGB channel), got {value!r}") from None
    if t.numel() != 3 or not bool(torch.isfinite(t).all()) or (positive and not bool((t > 0).all())):
        kind = "three positive finite numbers" if positive else "three finite numbers"
        raise ValueError(f"`{name}` must be {kind} (one per RGB channel), got {t.tolist()}")
    return t.view(1, 3, 1, 1)


class _InputCatcher:
    """Forward pre-hook: keeps the first positional input of the hooked module while armed."""

    __slots__ = ("armed", "value")

    def __init__(self) -> None:
        self.armed = False
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if self.armed:
            self.value = args[0] if args else None


class _OutputCatcher(_InputCatcher):
    """Forward hook: keeps the output of the hooked module while armed."""

    __slots__ = ()

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:  # type: ignore[override]
        if self.armed:
            self.value = output


def _submodule_names(model: nn.Module, limit: int = 24) -> str:
    names = [n for n, _ in model.named_modules() if n]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _channels(module: nn.Module, which: str) -> int | None:
    """``in``/``out`` channels of a head (its first / last conv) or of a conv / norm layer."""
    if which == "out" and isinstance(module, nn.modules.batchnorm._NormBase):
        return int(module.num_features)
    if which == "out" and isinstance(module, nn.GroupNorm):
        return int(module.num_channels)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    return int(convs[0].in_channels) if which == "in" else int(convs[-1].out_channels)


class FeatureSegmenter(nn.Module):
    """A segmentation model that normalises its input and returns ``(logits, features)``.

    Built by :func:`with_features`. The features are caught by a hook on one
    submodule: a forward *pre*-hook on ``segmentation_head`` (the decoder output
    entering the head) for smp models, :class:`~diga.models.TimmSegmenter` and
    :class:`~diga.models.DeepLabV2`, or a forward hook on ``layer`` (its output)
    for any other model. The hook only stores while this wrapper's ``forward``
    runs, and the stored tensor is dropped before ``forward`` returns, so nothing
    outlives a call. The hook object lives in the wrapped model's hook table and
    in this wrapper, so ``copy.deepcopy`` (the mean teacher) gives a copy whose
    hook feeds the copy.

    Attributes:
        model: the wrapped model (its ``train``/``eval`` follow the wrapper's).
        layer: dotted name of the hooked submodule.
        hook: ``"input"`` (pre-hook on a head) or ``"output"`` (forward hook on ``layer``).
        num_classes: ``C``, or None where the model does not tell.
        feature_dim: ``D``, or None where the model does not tell.
        mean, std: ``(1, 3, 1, 1)`` float32 buffers (not in ``state_dict``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str,
        hook: str,
        mean: Tensor,
        std: Tensor,
        num_classes: int | None,
        feature_dim: int | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.hook = hook
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        target = unwrap_model(model).get_submodule(layer)
        if hook == "input":
            self._catcher: _InputCatcher = _InputCatcher()
            target.register_forward_pre_hook(self._catcher)
        else:
            self._catcher = _OutputCatcher()
            target.register_forward_hook(self._catcher)

    def normalize(self, images: Tensor) -> Tensor:
        """``(images - mean) / std`` in the images' dtype, after checking them.

        Args:
            images: ``(B, 3, H, W)`` RGB floats in ``[0, 1]``.

        Returns:
            ``(B, 3, H, W)``, same dtype and device.

        Raises:
            ValueError: wrong rank or channels, not floating point, empty,
                non-finite, or outside ``[0, 1]`` (e.g. ``[0, 255]`` pixels).
        """
        check_images(images, "images")
        mean = self.mean.to(device=images.device, dtype=images.dtype)
        std = self.std.to(device=images.device, dtype=images.dtype)
        return (images - mean) / std

    def forward(self, images: Tensor, *, aux: bool = False) -> tuple[Tensor, ...]:
        """Normalise, run the model, return its logits and the hooked features (and auxiliary logits).

        An auxiliary output is the ``"aux"`` entry of a dict output (torchvision's convention,
        :class:`~diga.models.HRNetOCR`'s soft object regions) or the second item of a tuple /
        list output, when it is a ``(B, C', h, w)`` map; anything else (smp's image-level
        ``aux_params`` classifier, 2-D) is no auxiliary segmentation output.

        Args:
            images: ``(B, 3, H, W)`` RGB floats in ``[0, 1]``.
            aux: also return the auxiliary logits (None for a model without them).

        Returns:
            ``logits`` ``(B, C, h, w)`` at the model's own output resolution (not
            resized; for a model with an auxiliary output, the first / ``"out"``
            one), and ``features`` ``(B, D, h', w')``; with ``aux=True`` a third item,
            the auxiliary logits ``(B, C, h'', w'')`` or None. All keep their gradient.
        """
        x = self.normalize(images)
        catcher = self._catcher
        catcher.armed = True
        try:
            output = self.model(x)
            features = catcher.value
        finally:
            catcher.armed = False
            catcher.value = None
        extra = None
        if isinstance(output, dict):
            logits, extra = output.get("out"), output.get("aux")
        elif isinstance(output, (tuple, list)):
            logits = output[0] if output else None
            extra = output[1] if len(output) > 1 else None
        else:
            logits = output
        if not isinstance(logits, Tensor) or logits.ndim != 4:
            got = type(logits).__name__ if not isinstance(logits, Tensor) else tuple(logits.shape)
            raise ValueError(
                "`model` must return logits (B, C, h, w) (or a tuple / dict with them first / "
                f"under 'out'), got {got}"
            )
        if not isinstance(features, Tensor) or features.ndim != 4:
            got = "nothing (it did not run)" if features is None else (
                tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            )
            raise ValueError(
                f"`layer` {self.layer!r} must give features (B, D, h, w) as its "
                f"{self.hook}, got {got}"
            )
        if not aux:
            return logits, features
        return logits, features, extra if isinstance(extra, Tensor) and extra.ndim == 4 else None

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer!r}, hook={self.hook!r}, num_classes={self.num_classes}, "
            f"feature_dim={self.feature_dim}"
        )


def with_features(
    model: nn.Module,
    layer: str | None = None,
    *,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> FeatureSegmenter:
    """Wrap a segmentation model so it takes ``[0, 1]`` RGB and returns ``(logits, features)``.

    Where the features come from:

    * a model with a ``segmentation_head`` submodule (every smp architecture,
      :class:`~diga.models.TimmSegmenter`, :class:`~diga.models.DeepLabV2`): the
      tensor entering the head, caught by a forward pre-hook (smp's own
      ``forward`` runs unchanged; an smp auxiliary classification output is dropped);
    * any other model: ``layer``, a dotted submodule name, whose *output* is the
      feature map (a forward hook). ``layer`` given for a model with a head
      overrides the head.

    Normalisation ``(x - mean) / std`` happens inside the wrapper. Default
    statistics: the smp encoder's (no download: see :func:`encoder_mean_std`),
    the ``mean``/``std`` tuples a model exposes (``TimmSegmenter``, ``DeepLabV2``),
    else ImageNet's.

    Args:
        model: the segmentation model, taking normalised ``(B, 3, H, W)`` images.
        layer: dotted name of the submodule whose output is the feature map.
        mean: three numbers, the RGB mean to subtract.
        std: three positive numbers, the RGB std to divide by.

    Returns:
        A :class:`FeatureSegmenter` (``model`` unchanged apart from one hook). A
        ``FeatureSegmenter`` given with no other argument is returned as is.

    Raises:
        ValueError: ``model`` is not a module; ``layer`` names no submodule; no
            ``layer`` for a model without ``segmentation_head``; bad ``mean``/``std``.

    Example:
        >>> import segmentation_models_pytorch as smp
        >>> net = with_features(smp.FPN("resnet18", encoder_weights=None, classes=5))
        >>> logits, features = net(torch.rand(2, 3, 64, 64))
        >>> tuple(logits.shape), tuple(features.shape), net.feature_dim
        ((2, 5, 64, 64), (2, 128, 16, 16), 128)
        >>> seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
        >>> logits, features = with_features(seq, layer="1")(torch.rand(1, 3, 16, 16))
        >>> tuple(features.shape)
        (1, 8, 16, 16)
    """
    if isinstance(model, FeatureSegmenter):
        if layer is None and mean is None and std is None:
            return model
        raise ValueError(
            "`model` is already a FeatureSegmenter; wrap its `.model` to change `layer`, `mean` or `std`"
        )
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    inner = unwrap_model(model)
    if layer is not None:
        if not isinstance(layer, str):
            raise ValueError(f"`layer` must be a dotted submodule name (str), got {type(layer).__name__}")
        try:
            target = inner.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"`layer` must name a submodule of {type(inner).__name__}, got {layer!r}; "
                f"submodules: {_submodule_names(inner)}"
            ) from None
        hook = "output"
        feature_dim = _channels(target, "out") if isinstance(
            target, (nn.Conv2d, nn.GroupNorm, nn.modules.batchnorm._NormBase)
        ) else None
        num_classes = getattr(inner, "num_classes", None)
    elif isinstance(getattr(inner, "segmentation_head", None), nn.Module):
        layer, hook = "segmentation_head", "input"
        head = inner.segmentation_head
        feature_dim = getattr(inner, "feature_dim", None) or _channels(head, "in")
        num_classes = getattr(inner, "num_classes", None) or _channels(head, "out")
    else:
        raise ValueError(
            f"`layer` must name the submodule whose output is the feature map for a model without a "
            f"`segmentation_head` (expected an smp model, TimmSegmenter, DeepLabV2, or a layer name), "
            f"got layer=None for {type(inner).__name__}; submodules: {_submodule_names(inner)}"
        )
    default_mean, default_std = _default_mean_std(inner)
    return FeatureSegmenter(
        model,
        layer=layer,
        hook=hook,
        mean=_as_stat(default_mean if mean is None else mean, "mean", positive=False),
        std=_as_stat(default_std if std is None else std, "std", positive=True),
        num_classes=num_classes if isinstance(num_classes, int) else None,
        feature_dim=feature_dim if isinstance(feature_dim, int) else None,
    )
