"""The value-check switch and the shared check helpers."""

from __future__ import annotations

import pytest
import torch

import diga
from diga import symmetric_kd_loss
from diga._checks import check_finite, check_labels, check_number


def test_switch_skips_value_checks():
    nan = torch.full((2, 3, 2, 2), float("nan"))
    with pytest.raises(ValueError, match="finite"):
        symmetric_kd_loss(nan, nan)
    with diga.value_checks(False):
        assert not diga.value_checks_enabled()
        symmetric_kd_loss(nan, nan)  # no read-back, no error
    assert diga.value_checks_enabled()


def test_check_finite_pairs_share_one_read(monkeypatch):
    reads = []
    real = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or real(t))
    big = torch.full((4,), 3e38)  # finite, but its float32 sum overflows: the exact path passes it
    check_finite(torch.zeros(3), "a", torch.ones(2, dtype=torch.float64), "b", torch.arange(3), "c")
    assert len(reads) == 1  # three tensors (one integer, skipped), one read-back
    check_finite(big, "a", torch.zeros(2), "b")
    with pytest.raises(ValueError, match="`b` must be finite, got 2 non-finite"):
        check_finite(big, "a", torch.tensor([float("inf"), 1.0, -float("inf")], dtype=torch.float64), "b")
    with pytest.raises(ValueError, match="`a` must be finite, got 1 non-finite"):
        check_finite(torch.tensor([float("nan")]), "a", torch.tensor([float("nan")]), "b")


def test_check_number_messages():
    with pytest.raises(ValueError, match=r"`x` must be in \(0, 1\]"):
        check_number(0, "x", low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match="an integer"):
        check_number(1.5, "n", integer=True)
    with pytest.raises(ValueError, match="a number"):
        check_number(True, "n")


def test_check_labels_names_value():
    with pytest.raises(ValueError, match="got value 9"):
        check_labels(torch.tensor([[[0, 9]]]), "labels", num_classes=3, ignore_index=255)
