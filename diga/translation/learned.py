"""``LearnedTranslator``: a trained source -> target generator as a :class:`~diga.Translator`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from diga._checks import check_images
from diga.translation.checkpoint import generator_from_checkpoint, save_translator, translator_checkpoint
from diga.translation.networks import TranslatorGenerator

__all__ = ["LearnedTranslator"]


class LearnedTranslator(nn.Module):
    """A trained source -> target generator, as a :class:`~diga.Translator`.

    ``forward(source, target=None)``: a feed-forward translator needs no
    style reference, so ``target`` is accepted (and checked) but unused.
    Frozen by default (parameters without gradient, always in eval mode even
    when a parent module calls ``.train()``), which is how DiGA uses it:
    under ``no_grad`` inside :class:`~diga.adapter.Adapter`. The networks run
    in their parameters' dtype; the result has the source's dtype.

    Args:
        generator: the network (None: a paper-sized :class:`TranslatorGenerator`
            with random weights, useful only for tests).
        frozen: freeze the parameters and pin eval mode.

    Shapes:
        ``forward(source (B, 3, H, W), target (B_t, 3, H', W') | None) -> (B, 3, H, W)``,
        RGB in ``[0, 1]``, ``H, W >= 2 ** (n_downsample + 1)``.

    Example:
        >>> import diga
        >>> translator = LearnedTranslator(TranslatorGenerator(dim=8, n_res=1))
        >>> isinstance(translator, diga.Translator)
        True
        >>> translator(torch.rand(2, 3, 32, 48), torch.rand(1, 3, 40, 40)).shape
        torch.Size([2, 3, 32, 48])
    """

    def __init__(self, generator: TranslatorGenerator | None = None, *, frozen: bool = True) -> None:
        super().__init__()
        if generator is None:
            generator = TranslatorGenerator()
        if not isinstance(generator, TranslatorGenerator):
            raise ValueError(f"`generator` must be a TranslatorGenerator, got {type(generator).__name__}")
        self.generator = generator
        self.frozen = bool(frozen)
        if self.frozen:
            self.generator.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> LearnedTranslator:
        return super().train(False if self.frozen else mode)

    def forward(self, source: Tensor, target: Tensor | None = None) -> Tensor:
        check_images(source, "source")
        if target is not None:
            check_images(target, "target")
        param = next(self.generator.parameters())
        return self.generator._translate(source.to(param.dtype), "source").to(source.dtype)

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """The dict :meth:`save` writes: ``format``, ``generator_config``, ``generator`` (weights), extras."""
        return translator_checkpoint(self.generator, **extra)

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write the translator atomically (``extra`` entries are stored beside it)."""
        return save_translator(self.generator, path, **extra)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, map_location: Any = "cpu", frozen: bool = True
    ) -> LearnedTranslator:
        """Load a translator saved by :meth:`save` or by :func:`diga.engine.train_translator`
        (``translator_final.pt``, or ``translator_last.pt`` of an unfinished run).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a translator checkpoint, or its weights do not fit.
        """
        return cls(generator_from_checkpoint(path, map_location=map_location), frozen=frozen)

    def extra_repr(self) -> str:
        return f"frozen={self.frozen}"
