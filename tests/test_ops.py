"""Small shared tensor helpers (diga/_ops.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga._ops import _scatter_count, class_argmax, count_values, host_to_device, resize_labels


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


@pytest.mark.parametrize(
    "size_in, size_out",
    [((512, 896), (64, 112)), ((48, 64), (6, 8)), ((48, 64), (48, 64)), ((50, 64), (6, 8)),
     ((6, 8), (48, 64)), ((7, 9), (7, 3)), ((8, 8), (8, 2))],
)
def test_resize_labels_is_nearest_interpolation(gen, size_in, size_out):
    labels = torch.randint(0, 256, (2, *size_in), generator=gen)
    out = resize_labels(labels, size_out)
    ref = F.interpolate(labels[:, None].float(), size=size_out, mode="nearest")[:, 0].long()
    assert out.dtype == labels.dtype and torch.equal(out, ref)
    whole = size_in[0] % size_out[0] == 0 and size_in[1] % size_out[1] == 0
    # Whole-factor shrinking reads the labels in place: no kernel, no copy.
    assert (out.data_ptr() == labels.data_ptr()) == whole
