"""SymmetricKDLoss against the paper's distillation_loss, written the paper's way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga import SymmetricKDLoss, symmetric_kd_loss


def paper_distillation_loss(teacher_out, student_out, scale=0.5):
    """The paper's ``util/loss.py::distillation_loss``: a loop over (teacher view, student view)."""
    student_out = student_out.chunk(2)
    teacher_out = F.softmax(teacher_out, dim=1).detach().chunk(2)
    total = 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=1), dim=1)
            if iq == 1:
                loss = loss * scale
            total = total + loss.mean()
    return total


def masked_reference(student, teacher, labels, weight, temperature, ignore_index=255):
    """Per-sample, per-view loop: soft CE summed over classes, averaged over valid pixels."""
    b = student.shape[0] // 2
    total = student.new_zeros(())
    n_valid = (labels != ignore_index).sum()
    for i in range(b):
        valid = labels[i] != ignore_index
        for s_idx, t_idx, w in ((b + i, i, 1.0), (i, b + i, weight)):
            p = F.softmax(teacher[t_idx] / temperature, dim=0)
            logq = F.log_softmax(student[s_idx] / temperature, dim=0)
            per_pixel = -(p * logq).sum(0)
            total = total + w * per_pixel[valid].sum()
    return total / n_valid.clamp_min(1) * temperature**2


class TestSymmetricKDLoss:
    def test_matches_paper_without_labels(self, gen, device, dtype):
        s = torch.randn(6, 19, 9, 7, generator=gen, dtype=dtype).to(device)
        t = torch.randn(6, 19, 9, 7, generator=gen, dtype=dtype).to(device)
        ours = symmetric_kd_loss(s, t)
        ref = paper_distillation_loss(t, s)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)

    def test_gradient_matches_paper(self, gen, device):
        s = torch.randn(4, 5, 6, 6, generator=gen, dtype=torch.float64).to(device)
        t = torch.randn(4, 5, 6, 6, generator=gen, dtype=torch.float64).to(device)
        s1 = s.clone().requires_grad_()
        s2 = s.clone().requires_grad_()
        symmetric_kd_loss(s1, t).backward()
        paper_distillation_loss(t, s2).backward()
        torch.testing.assert_close(s1.grad, s2.grad)

    @pytest.mark.parametrize("temperature", [1.0, 2.5])
    @pytest.mark.parametrize("weight", [0.5, 1.0, 0.0])
    def test_with_labels_matches_loop(self, gen, temperature, weight):
        s = torch.randn(4, 6, 5, 8, generator=gen, dtype=torch.float64)
        t = torch.randn(4, 6, 5, 8, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 6, (2, 5, 8), generator=gen)
        labels[torch.rand(2, 5, 8, generator=gen) < 0.3] = 255
        s1 = s.clone().requires_grad_()
        s2 = s.clone().requires_grad_()
        ours = symmetric_kd_loss(s1, t, labels, augmented_weight=weight, temperature=temperature)
        ref = masked_reference(s2, t, labels, weight, temperature)
        torch.testing.assert_close(ours, ref)
        ours.backward()
        ref.backward()
        torch.testing.assert_close(s1.grad, s2.grad)

    def test_gradcheck(self, gen):
        s = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        t = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64)
        labels = torch.tensor([[[0, 1, 255, 2], [2, 2, 1, 255], [0, 0, 0, 1]]])
        assert torch.autograd.gradcheck(
            lambda x: symmetric_kd_loss(x, t, labels, temperature=1.7), (s,)
        )
        assert torch.autograd.gradgradcheck is not None  # first-order only: backward is fused

    def test_no_gradient_to_teacher(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        t = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        symmetric_kd_loss(s, t).backward()
        assert t.grad is None
        assert s.grad is not None and s.grad.abs().sum() > 0

    def test_all_ignore_is_zero_with_defined_gradient(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        t = torch.randn(2, 3, 4, 4, generator=gen)
        loss = symmetric_kd_loss(s, t, torch.full((1, 4, 4), 255))
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(s.grad).all() and (s.grad == 0).all()

    def test_equal_views_equal_teacher_is_entropy(self):
        # Student == teacher on both views: each term is the teacher's entropy.
        logits = torch.zeros(2, 4, 2, 2)
        loss = symmetric_kd_loss(logits, logits, augmented_weight=0.5)
        torch.testing.assert_close(loss, torch.tensor(1.5 * torch.log(torch.tensor(4.0)).item()))

    def test_labels_resized_by_nearest(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
        t = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
        small = torch.tensor([[[0, 255], [1, 2]]])
        big = small.repeat_interleave(2, 1).repeat_interleave(2, 2)
        torch.testing.assert_close(symmetric_kd_loss(s, t, big), symmetric_kd_loss(s, t, small))

    def test_low_precision_dtypes(self, gen, low_dtype):
        s32 = torch.randn(4, 19, 8, 8, generator=gen)
        t32 = torch.randn(4, 19, 8, 8, generator=gen)
        s = s32.to(low_dtype).requires_grad_()
        loss = symmetric_kd_loss(s, t32.to(low_dtype))
        loss.backward()
        assert loss.dtype == low_dtype and s.grad.dtype == low_dtype
        ref = paper_distillation_loss(t32.to(low_dtype).float(), s32.to(low_dtype).float())
        torch.testing.assert_close(loss.float(), ref, rtol=2e-2, atol=2e-2)

    def test_module_forwards_settings(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen)
        t = torch.randn(2, 3, 4, 4, generator=gen)
        module = SymmetricKDLoss(augmented_weight=0.25, temperature=2.0)
        torch.testing.assert_close(
            module(s, t), symmetric_kd_loss(s, t, augmented_weight=0.25, temperature=2.0)
        )
        assert "augmented_weight=0.25" in repr(module)

    def test_autocast_cpu(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        t = torch.randn(2, 3, 4, 4, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = symmetric_kd_loss(s, t)
        loss.backward()
        assert torch.isfinite(s.grad).all()

    @pytest.mark.parametrize(
        "student, teacher, labels, match",
        [
            (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), None, "student_logits"),
            (torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 4, 4), None, "odd batch"),
            (torch.zeros(0, 3, 4, 4), torch.zeros(0, 3, 4, 4), None, "student_logits"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5), None, "teacher_logits"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4), None, "teacher_logits"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4).long(), "labels"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.full((1, 4, 4), 3), "labels"),
            (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4), "labels"),
            (torch.full((2, 3, 4, 4), float("nan")), torch.zeros(2, 3, 4, 4), None, "student_logits"),
            (torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("inf")), None, "teacher_logits"),
            (torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 3, 4, 4), None, "student_logits"),
        ],
    )
    def test_bad_input(self, student, teacher, labels, match):
        with pytest.raises(ValueError, match=match):
            symmetric_kd_loss(student, teacher, labels)

    @pytest.mark.parametrize(
        "kwargs, match",
        [({"augmented_weight": -1.0}, "augmented_weight"), ({"temperature": 0.0}, "temperature"),
         ({"temperature": "2"}, "temperature")],
    )
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            SymmetricKDLoss(**kwargs)

    def test_keeps_one_student_sized_tensor(self, gen):
        """Between forward and backward only the gradient buffer lives: no log-probs, no teacher copy."""
        s = torch.randn(4, 19, 16, 16, generator=gen, requires_grad=True)
        t = torch.randn(4, 19, 16, 16, generator=gen)
        saved = []

        def pack(x):
            saved.append(x)
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = symmetric_kd_loss(s, t)
        big = [x for x in saved if x.numel() >= s.numel() // 2]
        assert len(big) == 1 and big[0].shape == s.shape
        assert big[0].data_ptr() not in (s.data_ptr(), t.data_ptr())
        loss.backward()
        ref = s.detach().clone().requires_grad_()
        paper_distillation_loss(t, ref).backward()
        torch.testing.assert_close(s.grad, ref.grad)

    def test_backward_twice_with_retain_graph(self, gen):
        s = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        loss = symmetric_kd_loss(s, torch.randn(2, 3, 4, 4, generator=gen))
        (g1,) = torch.autograd.grad(loss, s, retain_graph=True)
        (g2,) = torch.autograd.grad(loss, s)
        assert torch.equal(g1, g2)
