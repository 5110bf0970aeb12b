import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from diga.data import CachedDataset, SyntheticShift


class Counting(Dataset):
    supports_virtual_index = True
    palette = ((1, 2, 3),)

    def __init__(self, n=5):
        self.n, self.reads = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        self.reads.append(index)
        return torch.full((2,), float(index)), index


def test_items_equal_the_wrapped_ones_and_are_read_once():
    base = SyntheticShift("target", size=(16, 24), length=3, seed=1)
    cached = CachedDataset(base)
    for i in range(3):
        for _ in range(2):
            item = cached[i]
            assert torch.equal(item["image"], base[i]["image"]) and torch.equal(item["label"], base[i]["label"])
    counting = Counting()
    cached = CachedDataset(counting)
    for i in [0, 3, 0, 3, 4, -1, -5]:
        cached[i]
    assert counting.reads == [0, 3, 4]


def test_loader_batches_match_the_uncached_ones():
    base = SyntheticShift("source", size=(16, 24), length=6, seed=0)
    plain = next(iter(DataLoader(base, batch_size=6)))
    cached = CachedDataset(base)
    for _ in range(2):
        batch = next(iter(DataLoader(cached, batch_size=6)))
        assert torch.equal(batch["image"], plain["image"]) and torch.equal(batch["label"], plain["label"])


def test_attributes_forward_but_virtual_indices_do_not():
    cached = CachedDataset(Counting())
    assert cached.palette == ((1, 2, 3),) and len(cached) == 5
    assert cached.supports_virtual_index is False
    with pytest.raises(AttributeError):
        _ = cached.missing


def test_pickles_for_worker_processes():
    cached = CachedDataset(Counting())
    cached[1]
    copy = pickle.loads(pickle.dumps(cached))
    assert copy[1][1] == 1 and copy.palette == cached.palette


@pytest.mark.parametrize("index", [5, -6])
def test_index_out_of_range(index):
    with pytest.raises(IndexError, match="index"):
        CachedDataset(Counting())[index]


def test_bad_dataset():
    with pytest.raises(ValueError, match="dataset"):
        CachedDataset(object())
    with pytest.raises(TypeError):
        CachedDataset(Counting())[1.5]
