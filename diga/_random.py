"""Derived random streams: one generator per tuple of integers, the same in every process."""

from __future__ import annotations

import torch

__all__ = ["derive_generator", "derive_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*ints: int) -> int:
    """A 63-bit seed hashed from ``ints`` (a SplitMix64 chain): see :func:`derive_generator`.

    Example:
        >>> derive_seed(0, 5) == derive_seed(0, 5) != derive_seed(5, 0)
        True
    """
    if not ints:
        raise ValueError("`ints` must hold at least one integer, got none")
    state = 0
    for value in ints:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"`ints` must be integers, got {value!r} in {ints!r}")
        state = _splitmix64(state ^ (value & _MASK64))
    return state & ((1 << 63) - 1)


def derive_generator(*ints: int) -> torch.Generator:
    """A CPU generator for the random stream named by ``ints``: the one way diga derives streams.

    The integers (a seed, then what names the stream: a step, an epoch, an item
    index, a rank, ...) are hashed in order with SplitMix64, so neighbouring
    values give unrelated streams, order matters, and the same tuple gives the
    same stream in every process (loader workers, ranks, resumed runs). Tuples
    of different lengths name different streams. Negative values are taken
    modulo 2**64.

    Args:
        *ints: at least one integer.

    Returns:
        A new ``torch.Generator`` on the CPU.

    Raises:
        ValueError: no integers, or a value that is not an integer (bools included).

    Example:
        >>> a = torch.rand(2, generator=derive_generator(0, 5))
        >>> bool(torch.equal(a, torch.rand(2, generator=derive_generator(0, 5))))
        True
        >>> bool(torch.equal(a, torch.rand(2, generator=derive_generator(0, 5, 0))))
        False
    """
    return torch.Generator().manual_seed(derive_seed(*ints))
