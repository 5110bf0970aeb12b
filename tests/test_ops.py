"""Small shared tensor helpers (diga/_ops.py)."""

from __future__ import annotations

import torch

from diga._ops import _scatter_count, class_argmax, count_values, host_to_device


class TestCountValues:
    def test_matches_bincount(self, device, gen):
        index = torch.randint(0, 7, (3, 5, 11), generator=gen)
        got = count_values(index.to(device), 9)
        assert got.dtype == torch.int64 and got.device.type == device.type
        assert torch.equal(got.cpu(), torch.bincount(index.flatten(), minlength=9))

    def test_device_branch_matches_bincount(self, gen):
        """The sync-free branch CUDA takes, run here on the CPU."""
        index = torch.randint(0, 5, (4, 6), generator=gen).reshape(-1)
        assert torch.equal(_scatter_count(index, 6), torch.bincount(index, minlength=6))

    def test_empty_bins(self):
        assert count_values(torch.tensor([3, 3]), 5).tolist() == [0, 0, 0, 2, 0]


def test_class_argmax_is_argmax_with_first_tie(gen):
    scores = torch.randint(0, 3, (2, 5, 4, 4), generator=gen).float()  # many ties
    assert torch.equal(class_argmax(scores), scores.argmax(dim=1))


def test_host_to_device_keeps_values(device):
    x = torch.rand(5)
    assert torch.equal(host_to_device(x, device).cpu(), x)
