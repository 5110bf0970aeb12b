"""DiGA's threshold-free dynamic pseudo-label selection ("bilateral consensus")."""

from __future__ import annotations

import torch
from torch import Tensor

from diga._checks import check_labels, check_same_batch
from diga.selectors._upsample import bilinear_argmax
from diga.selectors.base import PseudoLabelSelector
from diga.selectors.centroids import ClassCentroids

__all__ = ["DynamicPseudoLabelSelector"]


class DynamicPseudoLabelSelector(PseudoLabelSelector):
    """Keep a pseudo-label only where the nearest class centroid agrees with it.

    For each feature pixel, ``softmax(-distance)`` to the class centroids is
    upsampled bilinearly (``align_corners=True``, as the paper's script) to the
    label size; a pixel keeps its pseudo-label where the argmax of that map
    equals it, and becomes ``ignore_index`` elsewhere. No confidence threshold.

    The upsampling of ``C`` channels dominates the cost; ``shortcut`` computes
    the same argmax while blending only pixels whose four low-resolution
    neighbours disagree (see :func:`diga.selectors.bilinear_argmax`). It needs
    one host sync, so the default (``None``) uses it on CPU and the plain,
    sync-free upsample on other devices.

    Args:
        centroids: the :class:`ClassCentroids` bank (held, not copied).
        ignore_index: label value for dropped and unlabelled pixels.
        shortcut: True / False to force the exact shortcut on or off; None = CPU only.

    Shapes:
        ``forward(pseudo_labels (B, H, W), *, features (B, D, h, w)) -> (B, H, W)``;
        with ``return_stats=True`` also a :class:`SelectionStats`.

    Example:
        >>> bank = ClassCentroids.from_tensor(torch.tensor([[0., 0.], [1., 1.]]))
        >>> selector = DynamicPseudoLabelSelector(bank)
        >>> feats = torch.tensor([[[[0., 1.]], [[0., 1.]]]])          # (1, 2, 1, 2)
        >>> selector(torch.tensor([[[0, 0]]]), features=feats)
        tensor([[[  0, 255]]])
    """

    def __init__(
        self, centroids: ClassCentroids, *, ignore_index: int = 255, shortcut: bool | None = None
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if not isinstance(centroids, ClassCentroids):
            raise ValueError(
                f"`centroids` must be a ClassCentroids bank, got {type(centroids).__name__}"
            )
        if shortcut is not None and not isinstance(shortcut, bool):
            raise ValueError(f"`shortcut` must be True, False or None, got {shortcut!r}")
        self.centroids = centroids
        self.shortcut = shortcut

    @property
    def num_classes(self) -> int:
        return self.centroids.num_classes

    def nearest_at(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        """Argmax of the bilinearly upsampled centroid weights at ``size``, ``(B, H, W)``."""
        weights = self.centroids.weights(features)
        shortcut = self.shortcut if self.shortcut is not None else weights.device.type == "cpu"
        return bilinear_argmax(weights, size, align_corners=True, shortcut=shortcut)

    def select(
        self, pseudo_labels: Tensor, *, features: Tensor | None = None, logits: Tensor | None = None
    ) -> tuple[Tensor, int]:
        """Keep each pseudo-label where the nearest centroid of ``features`` (required) agrees;
        ``logits`` are unused."""
        features = self._require(features, "features")
        check_labels(
            pseudo_labels, "pseudo_labels", num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        check_same_batch(pseudo_labels, features, "pseudo_labels", "features")
        nearest = self.nearest_at(features, tuple(pseudo_labels.shape[-2:]))
        return torch.where(nearest == pseudo_labels, pseudo_labels, self.ignore_index), self.num_classes

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, shortcut={self.shortcut}"
