"""StepSampler: resumable, sharded, reproducible."""

from __future__ import annotations

import itertools

import pytest
import torch

from diga.engine.distributed import step_generator
from diga.engine.sampling import StepSampler, infinite_loader


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


class TestStepSampler:
    def test_epochs_are_permutations(self):
        s = StepSampler(10, batch_size=2, seed=3)
        first = take(s, 10)
        assert sorted(i % 10 for i in first) == list(range(10))
        second = take(s, 20)[10:]
        assert sorted(i % 10 for i in second) == list(range(10))
        assert all(i >= 10 for i in second)  # virtual index: epoch 1
        assert [i % 10 for i in first] != [i % 10 for i in second]

    def test_resume_matches(self):
        full = take(StepSampler(13, batch_size=3, seed=1), 3 * 9)
        resumed = take(StepSampler(13, batch_size=3, seed=1, start_step=5), 3 * 4)
        assert resumed == full[15:]

    def test_ranks_disjoint_and_cover(self):
        per_rank = [take(StepSampler(12, batch_size=2, seed=0, rank=r, world_size=3), 4) for r in range(3)]
        flat = [i for r in per_rank for i in r]
        assert len(set(flat)) == 12

    def test_drops_incomplete_step(self):
        s = StepSampler(7, batch_size=3, seed=0)
        assert s.steps_per_epoch == 2

    @pytest.mark.parametrize(
        "kwargs, match",
        [({"num_items": 2, "batch_size": 3}, "num_items"), ({"num_items": 4, "batch_size": 0}, "batch_size"),
         ({"num_items": 4, "batch_size": 1, "rank": 2, "world_size": 2}, "rank")],
    )
    def test_bad(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            StepSampler(**kwargs)


def test_infinite_loader_wraps_plain_datasets():
    data = torch.utils.data.TensorDataset(torch.arange(5))
    it = infinite_loader(data, batch_size=2, seed=0)
    seen = torch.cat([next(it)[0] for _ in range(6)])
    assert seen.max() < 5 and seen.numel() == 12


def test_step_generator_streams_differ():
    a = torch.rand(3, generator=step_generator(0, 1, stream=0))
    b = torch.rand(3, generator=step_generator(0, 1, stream=1))
    c = torch.rand(3, generator=step_generator(0, 1, rank=1))
    assert not torch.equal(a, b) and not torch.equal(a, c)
