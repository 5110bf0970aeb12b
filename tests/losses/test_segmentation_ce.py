"""Segmentation CE: valid-pixel mean, resize, all-ignore."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga import SegmentationCELoss, segmentation_ce_loss


def loop_ce(logits, labels, ignore_index=255):
    """Per sample, per pixel: -log softmax at the label, averaged over valid pixels."""
    total, n = logits.new_zeros(()), 0
    logp = F.log_softmax(logits, dim=1)
    for b in range(labels.shape[0]):
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                c = int(labels[b, y, x])
                if c != ignore_index:
                    total = total - logp[b, c, y, x]
                    n += 1
    return total / max(n, 1)


class TestSegmentationCELoss:
    def test_matches_loop(self, gen, dtype):
        logits = torch.randn(2, 5, 4, 6, generator=gen, dtype=dtype)
        labels = torch.randint(0, 5, (2, 4, 6), generator=gen)
        labels[0, 0] = 255
        torch.testing.assert_close(segmentation_ce_loss(logits, labels), loop_ce(logits, labels))

    def test_upsamples_logits_to_labels(self, gen):
        logits = torch.randn(1, 3, 4, 4, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 3, (1, 8, 8), generator=gen)
        up = F.interpolate(logits, (8, 8), mode="bilinear", align_corners=True)
        torch.testing.assert_close(segmentation_ce_loss(logits, labels), loop_ce(up, labels))

    def test_all_ignore(self, gen):
        logits = torch.randn(1, 3, 4, 4, generator=gen, requires_grad=True)
        loss = SegmentationCELoss()(logits, torch.full((1, 4, 4), 255))
        loss.backward()
        assert loss.item() == 0 and torch.isfinite(logits.grad).all()

    def test_gradcheck(self, gen):
        logits = torch.randn(1, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([[[0, 1, 255], [2, 2, 0]]])
        assert torch.autograd.gradcheck(lambda x: segmentation_ce_loss(x, labels), (logits,))

    @pytest.mark.parametrize(
        "logits, labels, match",
        [
            (torch.zeros(3, 4, 4), torch.zeros(1, 4, 4).long(), "logits"),
            (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), "labels"),
            (torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 3), "labels"),
            (torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), -1), "labels"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4).long(), "batch"),
            (torch.full((1, 3, 4, 4), float("nan")), torch.zeros(1, 4, 4).long(), "logits"),
        ],
    )
    def test_bad_input(self, logits, labels, match):
        with pytest.raises(ValueError, match=match):
            segmentation_ce_loss(logits, labels)
