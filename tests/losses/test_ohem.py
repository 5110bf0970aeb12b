"""OHEM cross-entropy against the SYNTHIA scripts' selection, written out the script's way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga.losses import OhemCELoss, ohem_ce_loss, segmentation_ce_loss


def script_ohem(logits, labels, threshold=0.7, min_kept=100_000, ignore_index=255):
    """HRNet's OhemCrossEntropy as the scripts run it: sort the labelled pixels' true-class
    probabilities, cut at max(threshold, the (min_kept+1)-th smallest), mean the losses under it."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    losses, probs = [], []
    for b in range(labels.shape[0]):  # per sample, per pixel: the plain way
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                k = int(labels[b, y, x])
                if k == ignore_index:
                    continue
                p = torch.softmax(logits[b, :, y, x], 0)
                probs.append(float(p[k]))
                losses.append(float(-torch.log(p[k])))
    order = sorted(range(len(probs)), key=lambda i: probs[i])
    cut = max(probs[order[min(min_kept, len(probs) - 1)]], threshold)
    kept = [losses[i] for i in order if probs[i] < cut]
    return sum(kept) / len(kept)


class TestOhemCELoss:
    @pytest.mark.parametrize("min_kept,threshold", [(1, 0.7), (20, 0.7), (10_000, 0.7), (5, 0.3)])
    def test_matches_the_scripts_selection(self, min_kept, threshold):
        g = torch.Generator().manual_seed(min_kept)
        logits = 3 * torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 4, (2, 12, 10), generator=g)
        labels[0, :3] = 255
        got = ohem_ce_loss(logits, labels, threshold=threshold, min_kept=min_kept)
        assert float(got) == pytest.approx(script_ohem(logits, labels, threshold, min_kept), rel=1e-9)

    def test_keeps_every_pixel_when_all_are_hard(self):
        g = torch.Generator().manual_seed(1)
        logits = 0.01 * torch.randn(2, 5, 8, 8, generator=g)  # p ~ 0.2 < 0.7 everywhere
        labels = torch.randint(0, 5, (2, 8, 8), generator=g)
        torch.testing.assert_close(ohem_ce_loss(logits, labels), segmentation_ce_loss(logits, labels))

    def test_easy_pixels_drop_out_until_min_kept(self):
        logits = torch.zeros(1, 2, 1, 10)
        logits[0, 0, 0, :8] = torch.linspace(6.0, 10.0, 8)  # 8 easy pixels of class 0, 2 hard ones (p = 0.5)
        labels = torch.zeros(1, 1, 10, dtype=torch.long)
        hard = ohem_ce_loss(logits, labels, min_kept=1)
        assert float(hard) == pytest.approx(float(torch.log(torch.tensor(2.0))))
        every_but_top = F.cross_entropy(logits, labels, reduction="none").flatten()[[*range(7), 8, 9]].mean()
        assert float(ohem_ce_loss(logits, labels, min_kept=100)) == pytest.approx(float(every_but_top))

    def test_gradient_only_through_kept_pixels(self):
        logits = torch.zeros(1, 2, 1, 4)
        logits[0, 0, 0, :2] = 10.0
        logits.requires_grad_(True)
        labels = torch.zeros(1, 1, 4, dtype=torch.long)
        ohem_ce_loss(logits, labels, min_kept=1).backward()
        assert logits.grad[..., :2].abs().sum() == 0 and logits.grad[..., 2:].abs().sum() > 0

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
        labels = torch.randint(0, 3, (1, 4, 4), generator=g)
        assert torch.autograd.gradcheck(lambda x: ohem_ce_loss(x, labels, min_kept=5), (logits,))

    def test_all_ignored_is_zero_not_nan(self):
        logits = torch.randn(2, 3, 4, 4, requires_grad=True)
        loss = ohem_ce_loss(logits, torch.full((2, 4, 4), 255))
        loss.backward()
        assert float(loss.detach()) == 0.0 and logits.grad.abs().sum() == 0

    def test_dtype_and_module(self, device):
        logits = torch.randn(2, 3, 4, 4).to(device, torch.bfloat16)
        labels = torch.randint(0, 3, (2, 4, 4)).to(device)
        assert ohem_ce_loss(logits, labels).dtype == torch.bfloat16
        module = OhemCELoss(threshold=0.5, min_kept=3)
        assert float(module(logits.float(), labels)) == pytest.approx(
            float(ohem_ce_loss(logits.float(), labels, threshold=0.5, min_kept=3)))
        assert "min_kept=3" in repr(module)

    @pytest.mark.parametrize("kwargs,match", [
        ({"threshold": 0.0}, "threshold"), ({"threshold": 1.5}, "threshold"), ({"min_kept": 0}, "min_kept"),
        ({"min_kept": 2.5}, "min_kept"),
    ])
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ohem_ce_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), **kwargs)
        with pytest.raises(ValueError, match=match):
            OhemCELoss(**kwargs)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="logits"):
            ohem_ce_loss(torch.zeros(2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
        with pytest.raises(ValueError, match="labels"):
            ohem_ce_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 7))
        with pytest.raises(ValueError, match="logits"):
            ohem_ce_loss(torch.full((1, 2, 2, 2), float("nan")), torch.zeros(1, 2, 2, dtype=torch.long))
