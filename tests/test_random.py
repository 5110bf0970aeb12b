"""derive_generator: the one way diga derives random streams from integers."""

from __future__ import annotations

import pytest
import torch

from diga import derive_generator
from diga._random import derive_seed
from diga.data import item_generator
from diga.engine.distributed import step_generator

MASK64 = (1 << 64) - 1


def splitmix_chain(*ints: int) -> int:
    """SplitMix64 (Steele, Lea, Flood 2014) applied in a chain, written out plainly."""
    state = 0
    for v in ints:
        z = ((state ^ (v & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state = z ^ (z >> 31)
    return state & ((1 << 63) - 1)


def draws(g: torch.Generator) -> torch.Tensor:
    return torch.rand(4, generator=g)


def test_seed_is_the_splitmix_chain():
    for ints in [(0,), (0, 5), (5, 0), (1, 2, 3), (-1, 2**40, 7), (2**64 + 3,)]:
        assert derive_seed(*ints) == splitmix_chain(*ints)
        assert torch.equal(draws(derive_generator(*ints)), draws(torch.Generator().manual_seed(splitmix_chain(*ints))))


def test_same_tuple_same_stream_other_tuples_other_streams():
    assert torch.equal(draws(derive_generator(3, 1)), draws(derive_generator(3, 1)))
    tuples = [(3, 1), (1, 3), (3, 1, 0), (3, 2), (4, 1), (3,)]
    seen = {tuple(draws(derive_generator(*t)).tolist()) for t in tuples}
    assert len(seen) == len(tuples)


def test_the_library_streams_are_derived_streams():
    assert torch.equal(draws(item_generator(7, 3, epoch=2)), draws(derive_generator(7, 2, 3)))
    assert torch.equal(draws(step_generator(7, 3, stream=5, rank=1)), draws(derive_generator(7, 3, 5, 1)))


@pytest.mark.parametrize("ints, match", [((), "at least one"), ((1, 2.0), "integers"), ((True,), "integers"),
                                         (("3",), "integers")])
def test_bad_input(ints, match):
    with pytest.raises(ValueError, match=match):
        derive_generator(*ints)
