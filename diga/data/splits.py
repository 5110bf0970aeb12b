"""Labelled / unlabelled splits of a training set, for semi-supervised segmentation."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

__all__ = ["labelled_split", "parse_fraction"]


def parse_fraction(value: float | str, name: str = "fraction") -> float:
    """A labelled fraction in ``(0, 1]`` from a number or a string such as ``"1/16"`` or ``"0.25"``.

    Example:
        >>> parse_fraction("1/16"), parse_fraction(0.5)
        (0.0625, 0.5)
    """
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a fraction in (0, 1] such as 1/16 or 0.25, got {value!r}")
    try:
        number = float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"`{name}` must be a fraction in (0, 1] such as 1/16 or 0.25, got {value!r}") from None
    if not (0 < number <= 1):
        raise ValueError(f"`{name}` must be a fraction in (0, 1] such as 1/16 or 0.25, got {value!r}")
    return number


def labelled_split(num_items: int, fraction: float | str, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """Which items of a training set are labelled: ``ceil(num_items * fraction)`` of a seeded permutation.

    The counts are the semi-supervised scripts' (fy-vision/DiGA) on Cityscapes' 2975 training
    images: 1/16 -> 186, 1/8 -> 372, 1/4 -> 744, 1/2 -> 1488. Their lists are one fixed draw;
    this is a draw per ``seed`` (pass the published list instead to compare with them).

    Args:
        num_items: the training set's size, >= 1.
        fraction: the labelled share, ``(0, 1]``, a number or a string like ``"1/16"``.
        seed: seeds the permutation (the same seed gives the same split everywhere).

    Returns:
        ``(labelled, unlabelled)`` item indices, each sorted; together every index once.

    Example:
        >>> labelled, unlabelled = labelled_split(2975, "1/16", seed=0)
        >>> len(labelled), len(unlabelled)
        (186, 2789)
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"`num_items` must be a positive integer, got {num_items!r}")
    share = parse_fraction(fraction)
    count = min(num_items, math.ceil(num_items * share - 1e-9))
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(int(seed)))
    return sorted(order[:count].tolist()), sorted(order[count:].tolist())
