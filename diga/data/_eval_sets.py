"""What the BDD100k and Mapillary loaders share: flat image / label folders paired by stem, and
the paper's evaluation resize (image bicubic as PIL, labels nearest)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from diga.data._base import Sample, attach_pseudo_labels, list_files, pair_by_key, select_by_list
from diga.data.io import IMAGE_SUFFIXES
from diga.data.transforms import PairedCompose, Resize, _check_sample, resize_label

__all__ = ["EvalResize", "flat_samples", "with_resize"]


class EvalResize(Resize):
    """Resize a sample to a fixed size as the paper's evaluation loaders do.

    The scripts resize every evaluation image with ``PIL.Image.resize(...,
    BICUBIC)`` and its label with ``NEAREST`` (Cityscapes to 1024 x 2048,
    BDD100k to 720 x 1280, Mapillary to 1080 x 1920). Here: bicubic with
    antialiasing (the same kernel as PIL, within one grey level on smooth
    images), clamped to ``[0, 1]``, and :func:`~diga.data.resize_label` (the
    pixels PIL's ``NEAREST`` picks) for every label map. A sample already at
    ``size`` is returned as it is. (:class:`~diga.data.Resize`, the training
    transform, resizes images bilinearly.)

    Args:
        size: ``(height, width)``, or one int for a square.

    Example:
        >>> image, label = EvalResize((8, 16))(torch.rand(3, 32, 64), torch.zeros(32, 64, dtype=torch.long))
        >>> tuple(image.shape), tuple(label.shape), bool(image.min() >= 0 and image.max() <= 1)
        ((3, 8, 16), (8, 16), True)
    """

    def __call__(
        self, image: Tensor, *labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        _check_sample(image, labels)
        if tuple(image.shape[-2:]) == self.size:
            return (image, *labels)
        resized = F.interpolate(image[None], size=self.size, mode="bicubic", align_corners=False,
                                antialias=True)[0].clamp_(0.0, 1.0)
        return (resized, *(resize_label(label, self.size) for label in labels))


def with_resize(transform: Callable | None, size: int | Sequence[int] | None) -> Callable | None:
    """``transform`` preceded by :class:`EvalResize` ``(size)`` (``size=None``: ``transform`` as is)."""
    if size is None:
        return transform
    resize = EvalResize(size)
    if transform is None:
        return resize
    if not callable(transform):
        raise ValueError(f"`transform` must be callable or None, got {type(transform).__name__}")
    return PairedCompose([resize, transform])


def flat_samples(
    image_dir: Path,
    label_dir: Path | None,
    *,
    dataset: str,
    label_stem_suffix: str = "",
    list_file: str | os.PathLike | None = None,
    pseudo_label_dir: str | os.PathLike | None = None,
) -> list[Sample]:
    """Images in ``image_dir`` (not recursive), each with ``{stem}{label_stem_suffix}.png`` from
    ``label_dir`` (None: unlabelled), restricted and ordered by ``list_file``, with pseudo-labels."""
    images = list_files(image_dir, IMAGE_SUFFIXES, recursive=False)
    if not images:
        raise ValueError(f"{dataset}: no images (*.jpg) in {str(image_dir)!r}")
    if list_file is not None:
        images = select_by_list(images, list_file, image_dir)
    if label_dir is None:
        samples = [Sample(img.name, img.path) for img in images]
    else:
        found = list_files(label_dir, (".png",), stem_suffix=label_stem_suffix, recursive=False)
        pairs = pair_by_key(images, found, image_dir=image_dir, label_dir=label_dir,
                            both_ways=list_file is None)
        samples = [Sample(img.name, img.path, lbl.path) for img, lbl in pairs]
    if pseudo_label_dir is not None:
        samples = attach_pseudo_labels(samples, pseudo_label_dir)
    return samples
