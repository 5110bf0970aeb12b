"""``create_model``: segmentation models by name, with a config that rebuilds them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from diga._checks import check_number
from diga.models.daformer import DAFormer
from diga.models.deeplabv2 import DeepLabV2
from diga.models.hrnet_ocr import HRNetOCR
from diga.models.timm_segmenter import TimmSegmenter

__all__ = ["MODEL_FILE_KWARGS", "check_model_file_config", "create_model", "list_models", "model_from_config"]

# name -> (smp class name, default encoder)
_SMP = {
    "deeplabv3": ("DeepLabV3", "resnet50"),
    "deeplabv3plus": ("DeepLabV3Plus", "resnet50"),
    "dpt": ("DPT", "tu-vit_base_patch16_224"),
    "fpn": ("FPN", "resnet50"),
    "linknet": ("Linknet", "resnet50"),
    "manet": ("MAnet", "resnet50"),
    "pan": ("PAN", "resnet50"),
    "pspnet": ("PSPNet", "resnet50"),
    "segformer": ("Segformer", "mit_b0"),
    "unet": ("Unet", "resnet50"),
    "unetplusplus": ("UnetPlusPlus", "resnet50"),
    "upernet": ("UPerNet", "resnet50"),
}
_OTHER = {"daformer": "mit_b5", "deeplabv2": "resnet101", "hrnet_ocr": "hrnet_w48", "timm": None}


# ------------------------------------------------------------------------------ model files
_SMP_COMMON = ("encoder_depth", "in_channels", "activation", "aux_params")
#: The ``kwargs`` a model file may carry (its ``diga_config["kwargs"]``), per model name:
#: architecture settings only, plain values. A model file is data from anyone, so nothing in it
#: may name weights to fetch or a path to read (smp's ``**kwargs`` and timm's backbone kwargs
#: reach ``timm.create_model``, whose ``pretrained_cfg_overlay`` / ``checkpoint_path`` would).
#: ``encoder_weights`` is accepted and ignored: a model file's weights come from the file.
#: :func:`check_model_file_config` (called by :func:`diga.inference.load_model`) refuses every
#: other key, naming it. A model added to the registry adds its entry here (a name without one
#: accepts no kwargs).
MODEL_FILE_KWARGS: dict[str, frozenset[str]] = {
    "daformer": frozenset({"embed_dim", "decoder_dim", "dilations", "dropout", "encoder_weights"}),
    "deeplabv2": frozenset({"head", "encoder_weights"}),
    "deeplabv3": frozenset({*_SMP_COMMON, "encoder_output_stride", "decoder_channels", "decoder_atrous_rates",
                            "decoder_aspp_separable", "decoder_aspp_dropout", "upsampling", "encoder_weights"}),
    "deeplabv3plus": frozenset({*_SMP_COMMON, "encoder_output_stride", "decoder_channels", "decoder_atrous_rates",
                                "decoder_aspp_separable", "decoder_aspp_dropout", "upsampling", "encoder_weights"}),
    "dpt": frozenset({*_SMP_COMMON, "encoder_output_indices", "decoder_readout", "decoder_intermediate_channels",
                      "decoder_fusion_channels", "encoder_weights"}),
    "fpn": frozenset({*_SMP_COMMON, "decoder_pyramid_channels", "decoder_segmentation_channels",
                      "decoder_merge_policy", "decoder_dropout", "decoder_interpolation", "upsampling",
                      "encoder_weights"}),
    "hrnet_ocr": frozenset({"mid_channels", "key_channels", "dropout"}),
    "linknet": frozenset({*_SMP_COMMON, "decoder_use_norm", "decoder_use_batchnorm", "encoder_weights"}),
    "manet": frozenset({*_SMP_COMMON, "decoder_use_norm", "decoder_use_batchnorm", "decoder_channels",
                        "decoder_pab_channels", "decoder_interpolation", "encoder_weights"}),
    "pan": frozenset({*_SMP_COMMON, "encoder_output_stride", "decoder_channels", "decoder_interpolation",
                      "upsampling", "encoder_weights"}),
    "pspnet": frozenset({*_SMP_COMMON, "psp_out_channels", "decoder_use_norm", "psp_use_batchnorm", "psp_dropout",
                         "upsampling", "encoder_weights"}),
    "segformer": frozenset({*_SMP_COMMON, "decoder_segmentation_channels", "upsampling", "encoder_weights"}),
    "unet": frozenset({*_SMP_COMMON, "decoder_use_norm", "decoder_use_batchnorm", "decoder_channels",
                       "decoder_attention_type", "decoder_interpolation", "encoder_weights"}),
    "unetplusplus": frozenset({*_SMP_COMMON, "decoder_use_norm", "decoder_use_batchnorm", "decoder_channels",
                               "decoder_attention_type", "decoder_interpolation", "encoder_weights"}),
    "upernet": frozenset({*_SMP_COMMON, "decoder_channels", "decoder_use_norm", "encoder_weights"}),
    "timm": frozenset({"decoder_dim", "out_indices", "dropout", "drop_rate", "drop_path_rate", "img_size",
                       "dynamic_img_size", "dynamic_img_pad", "output_stride", "depth", "embed_dim", "num_heads"}),
}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # no "hf-hub:", "local-dir:" or path: nothing to fetch


def check_model_file_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model file's ``diga_config``, checked as untrusted data before anything is built from it.

    The name must be a registered model, the encoder a plain model name (no ``hf-hub:`` /
    ``local-dir:`` prefix or path, which timm would fetch or read), and every ``kwargs`` key in
    :data:`MODEL_FILE_KWARGS` for that model. ``encoder_weights`` is dropped (the weights come
    from the file), so building the model never downloads anything.

    Returns:
        A copy of ``config`` with ``kwargs`` cleaned, for :func:`model_from_config`.

    Raises:
        ValueError: the first key or value that is not allowed, and what is.

    Example:
        >>> check_model_file_config({"name": "unet", "encoder_name": "resnet18", "num_classes": 2,
        ...                          "kwargs": {"encoder_weights": "imagenet", "encoder_depth": 3}})["kwargs"]
        {'encoder_depth': 3}
        >>> check_model_file_config({"name": "timm", "encoder_name": "resnet18", "num_classes": 2,
        ...                          "kwargs": {"checkpoint_path": "/etc/passwd"}})
        Traceback (most recent call last):
        ...
        ValueError: model config kwargs 'checkpoint_path' is not allowed in a model file for 'timm' ...
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"model config must be a dict like `model.diga_config`, got {type(config).__name__}")
    name = config.get("name")
    if not isinstance(name, str) or name.lower() not in list_models():
        raise ValueError(f"model config 'name' must be one of {list_models()}, got {name!r}")
    encoder = config.get("encoder_name", config.get("encoder"))
    if encoder is not None and (not isinstance(encoder, str) or not _PLAIN_NAME.fullmatch(encoder)):
        raise ValueError(f"model config 'encoder_name' must be a plain model name (letters, digits, '_', '-', '.'; "
                         f"no hub prefix or path), got {encoder!r}")
    kwargs = config.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"model config 'kwargs' must be a dict, got {type(kwargs).__name__}")
    allowed = MODEL_FILE_KWARGS.get(name.lower(), frozenset())
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"model config kwargs {key!r} is not allowed in a model file for {name.lower()!r} (a model file "
                f"may carry architecture settings only: {sorted(allowed) or 'none'}; see MODEL_FILE_KWARGS)"
            )
    return {**config, "kwargs": {k: v for k, v in kwargs.items() if k != "encoder_weights"}}

def list_models() -> list[str]:
    """Names :func:`create_model` accepts, sorted.

    Example:
        >>> "deeplabv2" in list_models() and "unet" in list_models()
        True
    """
    return sorted([*_SMP, *_OTHER])


def _json_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` as plain JSON (tuples become lists); anything else raises."""
    for key, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(
                f"`kwargs` must be JSON-serialisable so `diga_config` can rebuild the model, "
                f"got {key}={value!r}"
            ) from None
    return json.loads(json.dumps(dict(kwargs)))


def create_model(
    name: str,
    *,
    num_classes: int,
    encoder_name: str | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A segmentation model by name (the raw model: wrap it with :func:`with_features`).

    ======================================  ==========================================
    ``name``                                model (``encoder_name`` default)
    ======================================  ==========================================
    unet, unetplusplus, fpn, deeplabv3,     the smp architecture (``"resnet50"``);
    deeplabv3plus, pspnet, linknet, manet,  segformer: ``"mit_b0"``; dpt: a ``tu-`` ViT
    pan, upernet, segformer, dpt
    deeplabv2                               :class:`DeepLabV2` (``"resnet101"``)
    timm                                    :class:`TimmSegmenter` (``encoder_name``: the
                                            timm model name, required)
    hrnet_ocr                               :class:`HRNetOCR` (``"hrnet_w48"``; timm's
                                            ``hrnet_*``); returns ``{"out", "aux"}``
    daformer                                :class:`DAFormer` (``"mit_b5"``; smp's
                                            ``mit_b0`` ... ``mit_b5``)
    ======================================  ==========================================

    ``pretrained=True`` loads the encoder's ImageNet weights (smp:
    ``encoder_weights="imagenet"``, or ``True`` for ``tu-`` encoders; timm and
    HRNetOCR: its default pretrained tag), a download unless cached;
    ``encoder_weights`` in ``kwargs`` overrides it for smp, DeepLabV2 and DAFormer. The model carries
    ``model.diga_config = {"name", "encoder_name", "num_classes", "kwargs"}``, plain
    JSON, which :func:`model_from_config` turns back into the same architecture
    (never with pretrained weights: a checkpoint restores them).

    Args:
        name: one of :func:`list_models`.
        num_classes: ``C``.
        encoder_name: encoder / backbone name (smp's term, used for every model); None for the default.
        pretrained: load pretrained encoder weights.
        **kwargs: passed to the model's constructor; must be JSON-serialisable
            (tuples are stored, and passed, as lists).

    Raises:
        ValueError: unknown ``name`` (the valid ones are listed), ``encoder_name`` missing
            for ``"timm"``, bad ``num_classes``, non-JSON ``kwargs``.

    Example:
        >>> model = create_model("deeplabv2", num_classes=4, encoder_name="resnet18", head="sum")
        >>> model.diga_config
        {'name': 'deeplabv2', 'encoder_name': 'resnet18', 'num_classes': 4, 'kwargs': {'head': 'sum'}}
        >>> type(model_from_config(model.diga_config)).__name__
        'DeepLabV2'
    """
    if not isinstance(name, str) or name.lower() not in list_models():
        raise ValueError(f"`name` must be one of {list_models()}, got {name!r}")
    name = name.lower()
    check_number(num_classes, "num_classes", low=1, integer=True)
    if encoder_name is None:
        encoder_name = _SMP[name][1] if name in _SMP else _OTHER[name]
        if encoder_name is None:
            raise ValueError(
                f"`encoder_name` must name a timm model for name={name!r} (e.g. 'resnet18'), got None"
            )
    if not isinstance(encoder_name, str) or not encoder_name:
        raise ValueError(f"`encoder_name` must be a model name (str), got {encoder_name!r}")
    kwargs = _json_kwargs(kwargs)
    config = {"name": name, "encoder_name": encoder_name, "num_classes": int(num_classes), "kwargs": dict(kwargs)}
    if name == "timm":
        model: nn.Module = TimmSegmenter(encoder_name, num_classes, pretrained=bool(pretrained), **kwargs)
    elif name == "hrnet_ocr":
        model = HRNetOCR(encoder_name, num_classes, pretrained=bool(pretrained), **kwargs)
    else:
        if "encoder_weights" not in kwargs:
            kwargs["encoder_weights"] = (
                (True if encoder_name.startswith("tu-") else "imagenet") if pretrained else None
            )
        if name == "deeplabv2":
            model = DeepLabV2(encoder_name, num_classes, **kwargs)
        elif name == "daformer":
            model = DAFormer(encoder_name, num_classes, **kwargs)
        else:
            import segmentation_models_pytorch as smp

            model = getattr(smp, _SMP[name][0])(encoder_name=encoder_name, classes=num_classes, **kwargs)
    model.diga_config = config
    return model


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from its ``diga_config`` (no pretrained weights: load a checkpoint after).

    Args:
        config: ``{"name", "encoder_name", "num_classes", "kwargs"}`` as :func:`create_model` stores it
            (configs saved by diga 0.1 name the encoder ``"encoder"``: read as well).

    Example:
        >>> cfg = {"name": "timm", "encoder_name": "resnet18", "num_classes": 3, "kwargs": {"decoder_dim": 16}}
        >>> model_from_config(cfg).feature_dim
        16
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"`config` must be a dict like `model.diga_config`, got {type(config).__name__}")
    missing = [k for k in ("name", "num_classes") if k not in config]
    if missing:
        raise ValueError(
            f"`config` must have keys 'name', 'encoder_name', 'num_classes', 'kwargs'; "
            f"got {sorted(config)} (missing {missing})"
        )
    kwargs = config.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"`config['kwargs']` must be a dict, got {type(kwargs).__name__}")
    kwargs = {k: v for k, v in kwargs.items() if k != "encoder_weights"}  # weights: from a checkpoint, never fetched
    return create_model(
        config["name"], num_classes=config["num_classes"],
        encoder_name=config.get("encoder_name", config.get("encoder")), pretrained=False, **kwargs,
    )
