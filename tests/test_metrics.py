"""ConfusionMatrix / mIoU against the paper's runningScore (numpy bincount)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diga import ConfusionMatrix, iou_from_confusion, miou
from diga.data import SYNTHIA13_IN_16


def running_score(gts, preds, n):
    """The paper's util/metrics.py runningScore: _fast_hist per image, then IoU."""
    hist = np.zeros((n, n))
    for lt, lp in zip(gts, preds, strict=True):
        lt, lp = lt.flatten(), lp.flatten()
        mask = (lt >= 0) & (lt < n)
        hist += np.bincount(n * lt[mask].astype(int) + lp[mask], minlength=n**2).reshape(n, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    return iu, np.nanmean(iu)


class TestConfusionMatrix:
    def test_matches_running_score(self, gen):
        cm = ConfusionMatrix(7)
        gts, preds = [], []
        for _ in range(3):
            labels = torch.randint(0, 7, (2, 9, 11), generator=gen)
            labels[torch.rand(2, 9, 11, generator=gen) < 0.2] = 255
            labels[labels == 6] = 255  # class 6 never labelled
            pred = torch.randint(0, 6, (2, 9, 11), generator=gen)  # ... nor predicted
            cm.update(pred, labels)
            gts += list(labels.numpy())
            preds += list(pred.numpy())
        iu, m = running_score(gts, preds, 7)
        out = cm.compute()
        np.testing.assert_allclose(out["iou"].numpy(), iu)
        assert out["miou"].item() == pytest.approx(m)
        assert torch.isnan(out["iou"][6])

    def test_scores_input_and_subset(self, gen):
        logits = torch.randn(2, 16, 4, 4, generator=gen)
        labels = torch.randint(0, 16, (2, 4, 4), generator=gen)
        cm = ConfusionMatrix(16)
        cm.update(logits, labels)
        iou = cm.compute()["iou"]
        sub = cm.compute(classes=SYNTHIA13_IN_16)["miou"]
        assert sub.item() == pytest.approx(np.nanmean(iou.numpy()[list(SYNTHIA13_IN_16)]))
        assert miou(logits, labels, num_classes=16).item() == pytest.approx(np.nanmean(iou.numpy()))

    def test_reset(self):
        cm = ConfusionMatrix(2)
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
        cm.reset()
        assert cm.matrix.sum() == 0

    def test_iou_from_confusion(self):
        iou, m = iou_from_confusion(torch.tensor([[3, 1], [0, 0]]))
        assert iou[0].item() == pytest.approx(0.75) and iou[1].item() == 0.0

    @pytest.mark.parametrize(
        "preds, labels, match",
        [
            (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), "shape"),
            (torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.long), "preds"),
            (torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 5), "labels"),
            (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "preds"),
        ],
    )
    def test_bad_input(self, preds, labels, match):
        with pytest.raises(ValueError, match=match):
            ConfusionMatrix(2).update(preds, labels)
