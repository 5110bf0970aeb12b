"""Threshold baselines against per-class loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga import ClassBalancedSelector, ConfidenceThresholdSelector, kept_fractions


def confidence(pseudo, logits):
    probs = F.softmax(F.interpolate(logits, pseudo.shape[-2:], mode="bilinear", align_corners=True), 1)
    return probs, probs.gather(1, pseudo.clamp_max(logits.shape[1] - 1)[:, None])[:, 0]


class TestConfidenceThresholdSelector:
    @pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6, 1.0])
    def test_matches_loop(self, gen, threshold):
        logits = torch.randn(2, 4, 5, 5, generator=gen) * 2
        pseudo = torch.randint(0, 4, (2, 10, 10), generator=gen)
        pseudo[0, 0] = 255
        _, conf = confidence(pseudo, logits)
        ref = pseudo.clone()
        for b in range(2):
            for y in range(10):
                for x in range(10):
                    if pseudo[b, y, x] != 255 and conf[b, y, x] < threshold:
                        ref[b, y, x] = 255
        assert torch.equal(ConfidenceThresholdSelector(threshold=threshold)(pseudo, logits=logits), ref)

    def test_bad(self):
        with pytest.raises(ValueError, match="threshold"):
            ConfidenceThresholdSelector(threshold=1.5)
        with pytest.raises(ValueError, match="logits"):
            ConfidenceThresholdSelector()(torch.zeros(1, 2, 2, dtype=torch.long), logits=torch.zeros(1, 2, 2))
        with pytest.raises(ValueError, match="pseudo_labels"):
            ConfidenceThresholdSelector()(torch.full((1, 2, 2), 7), logits=torch.zeros(1, 3, 2, 2))


class TestClassBalancedSelector:
    @pytest.mark.parametrize("portion", [0.2, 0.5, 1.0])
    @pytest.mark.parametrize("max_threshold", [None, 0.5])
    def test_matches_loop(self, gen, portion, max_threshold):
        logits = torch.randn(2, 5, 6, 6, generator=gen) * 2
        pseudo = torch.randint(0, 4, (2, 12, 12), generator=gen)  # class 4 absent
        pseudo[1, :3] = 255
        _, conf = confidence(pseudo, logits)
        ref = pseudo.clone()
        for c in range(5):
            m = pseudo == c
            if not m.any():
                continue
            vals = conf[m].sort().values
            thr = vals[min(int((1 - portion) * m.sum()), m.sum() - 1)]
            if max_threshold is not None:
                thr = min(thr, max_threshold)
            ref[m & (conf < thr)] = 255
        out = ClassBalancedSelector(portion=portion, max_threshold=max_threshold)(pseudo, logits=logits)
        assert torch.equal(out, ref)

    def test_rare_class_keeps_its_share(self, gen):
        logits = torch.randn(1, 2, 20, 20, generator=gen)
        pseudo = torch.zeros(1, 20, 20, dtype=torch.long)
        pseudo[0, :2] = 1  # 40 pixels of class 1, 360 of class 0
        out, stats = ClassBalancedSelector(portion=0.5)(pseudo, logits=logits, return_stats=True)
        assert abs(stats.kept_per_class[1].item() - 0.5) < 0.05
        assert abs(stats.kept_per_class[0].item() - 0.5) < 0.05

    def test_bad(self):
        with pytest.raises(ValueError, match="portion"):
            ClassBalancedSelector(portion=0.0)
        with pytest.raises(ValueError, match="max_threshold"):
            ClassBalancedSelector(portion=0.5, max_threshold=2.0)


def test_kept_fractions_loop(gen):
    before = torch.randint(0, 3, (2, 6, 6), generator=gen)
    before[0, 0] = 255
    after = before.masked_fill(torch.rand(2, 6, 6, generator=gen) < 0.4, 255)
    stats = kept_fractions(before, after, num_classes=4)
    for c in range(3):
        n = (before == c).sum().item()
        k = ((after == c) & (before == c)).sum().item()
        assert stats.kept_per_class[c].item() == pytest.approx(k / n)
    assert torch.isnan(stats.kept_per_class[3])
    valid = before != 255
    assert stats.kept.item() == pytest.approx(((after != 255) & valid).sum().item() / valid.sum().item())
