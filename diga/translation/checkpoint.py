"""Translator checkpoints: what a file holds, writing it atomically, rebuilding the generator from it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from diga._io import atomic_save, load_checkpoint
from diga.translation.networks import TranslatorGenerator

__all__ = [
    "CHECKPOINT_FORMAT",
    "generator_from_checkpoint",
    "generator_from_state",
    "save_translator",
    "translator_checkpoint",
]

#: The ``"format"`` entry of a translator checkpoint written by :func:`save_translator`
#: (:meth:`~diga.translation.LearnedTranslator.save`) and :func:`diga.engine.train_translator`.
CHECKPOINT_FORMAT = "diga.translator/1"


def translator_checkpoint(generator: TranslatorGenerator, **extra: Any) -> dict[str, Any]:
    """The dict a translator checkpoint holds: ``format``, ``generator_config``, ``generator`` (CPU
    weights) and any ``extra`` entries; :meth:`LearnedTranslator.from_checkpoint` reads it back."""
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "generator_config": dict(generator.config), "generator": state,
            **extra}


def generator_from_state(
    config: Mapping[str, Any], state_dict: Mapping[str, Tensor], *, where: str = "the checkpoint"
) -> TranslatorGenerator:
    """Rebuild a :class:`TranslatorGenerator` from its ``config`` and weights (errors name ``where``)."""
    allowed = {"dim", "n_downsample", "n_res", "pad_type"}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(
            f"{where}: generator config has unknown keys {sorted(unknown)}, expected {sorted(allowed)}"
        )
    net = TranslatorGenerator(**dict(config))
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(
            f"{where}: the weights do not fit a generator with config {dict(config)}: {err}"
        ) from err
    return net


def save_translator(generator: TranslatorGenerator, path: str | os.PathLike, **extra: Any) -> Path:
    """Write :func:`translator_checkpoint` of ``generator`` (and ``extra``) to ``path``, atomically."""
    return atomic_save(translator_checkpoint(generator, **extra), path)


def generator_from_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> TranslatorGenerator:
    """The source -> target generator of a translator checkpoint (``translator_final.pt``, or the
    ``translator_last.pt`` of an unfinished run, whose ``models`` entry holds it).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a translator checkpoint, or its weights do not fit.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.pt"
        >>> _ = save_translator(TranslatorGenerator(dim=8, n_res=1), path)
        >>> generator_from_checkpoint(path).config["dim"]
        8
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    where = f"checkpoint {str(path)!r}"
    if not isinstance(ckpt, Mapping) or "generator_config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{where} is not a translator checkpoint: expected 'generator_config' and 'generator' "
            f"(or 'models') entries, got {keys}"
        )
    if "generator" in ckpt:
        state = ckpt["generator"]
    elif "models" in ckpt and "source_to_target" in ckpt["models"]:
        state = ckpt["models"]["source_to_target"]
    else:
        raise ValueError(f"{where} has a generator config but no 'generator' weights, got {sorted(ckpt)}")
    return generator_from_state(ckpt["generator_config"], state, where=where)
