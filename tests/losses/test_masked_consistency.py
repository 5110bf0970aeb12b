"""Masked consistency (MIC): against a per-pixel loop with MIC's quality weight; gradients; the module."""

from __future__ import annotations

import math

import pytest
import torch

from diga import AblationOptions, FourierTranslator
from diga.adapter import Adapter
from diga.losses import MaskedConsistency, masked_consistency_loss


def reference(student, teacher, threshold=0.968, valid=None):
    """MIC's loss written out: pseudo-label = teacher argmax, quality = share of confident pixels,
    loss = quality x mean over pixels of the student's CE (invalid pixels weigh 0)."""
    b, c, h, w = teacher.shape
    total, confident, n = 0.0, 0.0, b * h * w
    for i in range(b):
        for y in range(h):
            for x in range(w):
                v = 1.0 if valid is None else float(valid[i, y, x])
                p = torch.softmax(teacher[i, :, y, x], 0)
                k = int(p.argmax())
                confident += v * float(p[k] > threshold)
                total += v * float(-torch.log_softmax(student[i, :, y, x], 0)[k])
    return confident / n * total / n


class TestMaskedConsistencyLoss:
    def test_matches_the_loop(self):
        g = torch.Generator().manual_seed(0)
        student = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
        teacher = 6 * torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
        valid = torch.rand(2, 4, 5, generator=g) > 0.3
        for v in (None, valid):
            got = masked_consistency_loss(student, teacher, valid=v)
            assert float(got) == pytest.approx(reference(student, teacher, valid=v), rel=1e-9)

    def test_student_at_lower_resolution_is_upsampled(self):
        teacher = torch.zeros(1, 2, 8, 8)
        teacher[:, 1] = 10.0
        loss = masked_consistency_loss(torch.zeros(1, 2, 4, 4), teacher)
        assert float(loss) == pytest.approx(math.log(2))

    def test_gradient_reaches_the_student_only(self):
        g = torch.Generator().manual_seed(1)
        student = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
        teacher = (8 * torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
        masked_consistency_loss(student, teacher).backward()
        assert student.grad.abs().sum() > 0 and teacher.grad is None
        assert torch.autograd.gradcheck(lambda s: masked_consistency_loss(s, teacher.detach()), (student,))

    def test_unsure_teacher_teaches_nothing(self):
        loss = masked_consistency_loss(torch.randn(2, 4, 4, 4), torch.zeros(2, 4, 4, 4))
        assert float(loss) == 0.0

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="student_logits"):
            masked_consistency_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, 4))
        with pytest.raises(ValueError, match="classes"):
            masked_consistency_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4))
        with pytest.raises(ValueError, match="quality_threshold"):
            masked_consistency_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), quality_threshold=1.0)
        with pytest.raises(ValueError, match="valid"):
            masked_consistency_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), valid=torch.ones(1, 4, 4))
        with pytest.raises(ValueError, match="block_size"):
            MaskedConsistency(block_size=0)
        with pytest.raises(ValueError, match="weight"):
            MaskedConsistency(weight=-1.0)


class TestAdapterWithMIC:
    def test_self_training_adds_the_masked_term(self):
        import segmentation_models_pytorch as smp

        torch.manual_seed(0)
        net = smp.Unet("resnet18", encoder_weights=None, classes=4, encoder_depth=3, decoder_channels=(16, 8, 8))
        mic = MaskedConsistency(block_size=8, quality_threshold=0.0)  # every pixel counts: a nonzero loss
        ad = Adapter(net, 4, translator=FourierTranslator(beta=0.05), masked_consistency=mic).train()
        g = torch.Generator().manual_seed(0)
        src, tgt = torch.rand(2, 2, 3, 32, 32, generator=g)
        lbl = torch.randint(0, 4, (2, 32, 32), generator=g)
        ad.init_centroids([tgt])
        out = ad.self_training_step(src, lbl, tgt, lbl, generator=torch.Generator().manual_seed(1))
        p = out.parts
        torch.testing.assert_close(out.loss, p["ce_source"] + p["ce_mix"] + 0.25 * p["kd"] + p["mic"])
        assert float(p["mic"]) > 0
        out.loss.backward()
        plain = Adapter(net, 4, ablation=AblationOptions()).train()
        plain.init_centroids([tgt])
        assert "mic" not in plain.self_training_step(src, lbl, tgt, lbl).parts
        with pytest.raises(ValueError, match="masked_consistency"):
            Adapter(net, 4, masked_consistency=0.7)
