"""EMATeacher against the paper's update_teacher_params loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from diga import EMATeacher


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))


def paper_update(teacher, student, iteration, momentum=0.999):
    """update_teacher_params(stage0=True): one assignment per parameter, buffers untouched."""
    alpha = min(1 - 1 / (iteration + 1), momentum)
    for tp, sp in zip(teacher.parameters(), student.parameters(), strict=True):
        tp.data[:] = alpha * tp[:].data[:] + (1 - alpha) * sp[:].data[:]


class TestEMATeacher:
    def test_matches_paper_ramp(self):
        torch.manual_seed(0)
        student = small_net()
        teacher = EMATeacher(student, momentum=0.9)
        ref = copy.deepcopy(student)
        for step in range(30):
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
            teacher.update(student)
            paper_update(ref, student, step, momentum=0.9)
        for a, b in zip(teacher.model.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b)
        assert teacher.step == 30
        assert teacher.alpha() == 0.9 and teacher.alpha(0) == 0.0 and teacher.alpha(1) == 0.5

    def test_buffers_follow_student(self):
        student = small_net()
        teacher = EMATeacher(student)
        student.train()
        student(torch.randn(2, 3, 8, 8))
        teacher.update(student)
        torch.testing.assert_close(teacher.model[1].running_mean, student[1].running_mean)
        assert teacher.model[1].num_batches_tracked == student[1].num_batches_tracked

    def test_frozen_and_eval(self):
        student = small_net().train()
        teacher = EMATeacher(student)
        assert not any(p.requires_grad for p in teacher.parameters())
        assert not teacher.model.training
        teacher.train()
        assert not teacher.model.training  # stays in eval mode
        x = torch.randn(1, 3, 8, 8)
        out = teacher(x)
        assert not out.requires_grad
        assert torch.equal(out, teacher(x))  # dropout off

    def test_paper_train_mode_option(self):
        teacher = EMATeacher(small_net().train(), train_mode=True)
        assert teacher.model.training
        teacher.eval()
        assert not teacher.model.training

    def test_state_dict_round_trip(self):
        student = small_net()
        teacher = EMATeacher(student, momentum=0.99)
        for _ in range(5):
            teacher.update(student)
        other = EMATeacher(small_net(), momentum=0.99)
        other.load_state_dict(teacher.state_dict())
        assert other.step == 5
        for a, b in zip(other.parameters(), teacher.parameters(), strict=True):
            assert torch.equal(a, b)

    def test_wrapped_students(self):
        student = small_net()
        dp = nn.DataParallel(student)
        teacher = EMATeacher(dp)
        assert isinstance(teacher.model, nn.Sequential)
        with torch.no_grad():
            student[0].weight.add_(1)
        teacher.update(dp)
        assert torch.equal(teacher.model[0].weight, student[0].weight)
        compiled = torch.compile(student)
        teacher2 = EMATeacher(compiled)
        assert isinstance(teacher2.model, nn.Sequential)
        teacher2.update(compiled)

    def test_fused_update_one_call_per_dtype(self, monkeypatch):
        calls = []
        real = torch._foreach_lerp_

        def spy(*args, **kwargs):
            calls.append(len(args[0]))
            return real(*args, **kwargs)

        monkeypatch.setattr(torch, "_foreach_lerp_", spy)
        student = small_net()
        EMATeacher(student).update(student)
        assert calls == [len(list(student.parameters()))]

    def test_low_precision_teacher(self):
        student = small_net().to(torch.bfloat16)
        teacher = EMATeacher(student)
        teacher.update(student)
        assert next(teacher.parameters()).dtype == torch.bfloat16

    def test_bad_input(self):
        with pytest.raises(ValueError, match="student"):
            EMATeacher("model")
        with pytest.raises(ValueError, match="momentum"):
            EMATeacher(small_net(), momentum=1.5)
        teacher = EMATeacher(small_net())
        with pytest.raises(ValueError, match="student"):
            teacher.update(nn.Linear(2, 2))


class TestUpdatePlan:
    """The parameter/buffer slots are found once per student; what they hold is read at every update."""

    def test_traversal_once_per_student(self, monkeypatch):
        student = small_net()
        teacher = EMATeacher(student)
        teacher.update(student)
        calls = []
        real = nn.Module.named_parameters

        def spy(self, *args, **kwargs):
            calls.append(type(self).__name__)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(nn.Module, "named_parameters", spy)
        teacher.update(student)
        assert calls == []
        other = small_net()
        teacher.update(other)  # a new student: slots found (and checked) again
        assert calls

    def test_sees_moved_and_cast_tensors(self):
        torch.manual_seed(0)
        student = small_net()
        teacher = EMATeacher(student, momentum=0.5)
        ref = copy.deepcopy(student)
        teacher.update(student)
        paper_update(ref, student, 0, momentum=0.5)
        student.double()  # parameters keep their objects, buffers are replaced
        student(torch.randn(2, 3, 8, 8, dtype=torch.float64))  # new running statistics
        teacher.update(student)  # float32 teacher, float64 student: the per-dtype path
        paper_update(ref, student.float(), 1, momentum=0.5)
        for a, b in zip(teacher.model.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(teacher.model[1].running_mean, student[1].running_mean.float())

    def test_copy_and_pickle_after_update(self):
        import pickle

        student = small_net()
        teacher = EMATeacher(student)
        teacher.update(student)
        twin = copy.deepcopy(teacher)
        back = pickle.loads(pickle.dumps(teacher))
        for t in (twin, back):
            t.update(student)
            assert t.step == 2
            assert torch.equal(t.model[0].weight, student[0].weight)


class TestRampAndBuffers:
    def test_ramp_against_a_loop(self):
        torch.manual_seed(1)
        student = small_net()
        teacher = EMATeacher(student, momentum=0.99, ramp=0.1)
        ref = copy.deepcopy(student)
        for step in range(40):
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
            teacher.update(student)
            alpha = min(1 - 1 / (1 + 0.1 * step), 0.99)
            for tp, sp in zip(ref.parameters(), student.parameters(), strict=True):
                tp.data[:] = alpha * tp.data + (1 - alpha) * sp.data
        for a, b in zip(teacher.model.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b)
        # The window grows as ramp x step: alpha(10) = 1 - 1/2, alpha(90) = 1 - 1/10, capped by momentum.
        assert teacher.alpha(0) == 0.0 and teacher.alpha(10) == pytest.approx(0.5)
        assert teacher.alpha(90) == pytest.approx(0.9) and teacher.alpha(10_000) == 0.99

    def test_ramp_one_is_the_paper(self):
        a, b = EMATeacher(small_net(), ramp=1.0), EMATeacher(small_net())
        assert [a.alpha(s) for s in range(50)] == [min(1 - 1 / (s + 1), 0.999) for s in range(50)]
        assert [b.alpha(s) for s in range(50)] == [a.alpha(s) for s in range(50)]

    def test_ema_buffers_against_a_loop(self):
        torch.manual_seed(2)
        student = small_net().train()
        teacher = EMATeacher(student, momentum=0.9, buffers="ema")
        mean = teacher.model[1].running_mean.clone()
        for step in range(6):
            student(torch.randn(4, 3, 8, 8) + step)  # moves the student's running statistics
            teacher.update(student)
            w = 1 - min(1 - 1 / (step + 1), 0.9)
            mean = (1 - w) * mean + w * student[1].running_mean
        torch.testing.assert_close(teacher.model[1].running_mean, mean)
        assert not torch.equal(teacher.model[1].running_mean, student[1].running_mean)
        assert teacher.model[1].num_batches_tracked == student[1].num_batches_tracked  # counters copied

    def test_restart(self):
        student = small_net()
        teacher = EMATeacher(student, ramp=0.1)
        for _ in range(5):
            teacher.update(student)
        with torch.no_grad():
            student[0].weight.add_(1)
        teacher.restart(student, ramp=1.0)
        assert teacher.step == 1 and teacher.ramp == 1.0
        assert torch.equal(teacher.model[0].weight, student[0].weight)
        other = EMATeacher(small_net(), ramp=0.5)
        other.load_state_dict(teacher.state_dict())
        assert other.ramp == 1.0 and other.step == 1

    @pytest.mark.parametrize("ramp", [0, -0.1, float("nan"), "1", None])
    def test_bad_ramp(self, ramp):
        with pytest.raises(ValueError, match="ramp"):
            EMATeacher(small_net(), ramp=ramp)

    @pytest.mark.parametrize("buffers", ["keep", "", None, True])
    def test_bad_buffers(self, buffers):
        with pytest.raises(ValueError, match="buffers"):
            EMATeacher(small_net(), buffers=buffers)

    def test_bad_restart_ramp(self):
        with pytest.raises(ValueError, match="ramp"):
            EMATeacher(small_net()).restart(small_net(), ramp=0.0)
