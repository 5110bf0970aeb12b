"""The ``Translator`` protocol: anything that maps source images to the target's look."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from diga._checks import check_images

__all__ = ["IdentityTranslator", "Translator"]


@runtime_checkable
class Translator(Protocol):
    """A callable ``(source (B, 3, H, W), target (B_t, 3, H', W')) -> (B, 3, H, W)``.

    Source and target are RGB in ``[0, 1]``; the result is the source's content
    in the target's look, same shape as ``source``, RGB in ``[0, 1]``. The target
    batch is a style reference only. :class:`~diga.FourierTranslator` (no
    training) and the learned translator both meet it; so does any function.

    Example:
        >>> isinstance(IdentityTranslator(), Translator)
        True
        >>> isinstance(lambda source, target: source, Translator)
        True
    """

    def __call__(self, source: Tensor, target: Tensor) -> Tensor: ...


class IdentityTranslator(nn.Module):
    """The translator that changes nothing (DiGA without a translator).

    Example:
        >>> x = torch.rand(1, 3, 4, 4)
        >>> bool((IdentityTranslator()(x, x) == x).all())
        True
    """

    def forward(self, source: Tensor, target: Tensor | None = None) -> Tensor:
        check_images(source, "source", pixel_range=False)
        return source
