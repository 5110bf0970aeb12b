"""ClassShareMonitor: running class shares against a reference, against a plain loop; bad input."""

from __future__ import annotations

import pytest
import torch

from diga import ClassShareMonitor


def loop_reference(labels, num_classes, ignore=255):
    """Per class, pixels / labelled pixels, counted one pixel at a time."""
    counts = [0] * num_classes
    for value in labels.flatten().tolist():
        if value != ignore:
            counts[value] += 1
    total = max(sum(counts), 1)
    return [c / total for c in counts]


class TestClassShareMonitor:
    def test_shares_against_a_loop(self):
        g = torch.Generator().manual_seed(0)
        ref = torch.randint(0, 4, (2, 6, 5), generator=g)
        ref[0, 0] = 255
        monitor = ClassShareMonitor(4, momentum=0.5)
        monitor.set_reference(ref)
        torch.testing.assert_close(monitor.reference, torch.tensor(loop_reference(ref, 4)))
        batches = [torch.randint(0, 4, (3, 4, 4), generator=g) for _ in range(4)]
        running = None
        for b in batches:
            stats = monitor.update(b)
            shares = torch.tensor(loop_reference(b, 4))
            running = shares if running is None else 0.5 * running + 0.5 * shares
            torch.testing.assert_close(stats.shares, running)
        torch.testing.assert_close(stats.ratio, running / monitor.reference)
        assert float(stats.min_ratio) == pytest.approx(float((running / monitor.reference).min()))

    def test_reference_from_counts(self):
        monitor = ClassShareMonitor(3)
        monitor.set_reference(counts=torch.tensor([2.0, 0.0, 6.0], dtype=torch.float64))
        assert monitor.reference.tolist() == [0.25, 0.0, 0.75]
        assert bool(monitor.has_reference)
        assert not bool(ClassShareMonitor(3).has_reference)

    def test_forced_collapse_is_flagged_and_a_balanced_map_is_not(self):
        monitor = ClassShareMonitor(4)
        balanced = torch.arange(4).repeat_interleave(16).reshape(1, 8, 8)
        monitor.set_reference(balanced)
        for _ in range(30):
            ok = monitor.update(balanced[:, torch.randperm(8)])
        assert not bool(ok.collapsed) and float(ok.min_ratio) == pytest.approx(1.0)
        assert float(ok.perplexity_ratio) == pytest.approx(1.0)
        one_class = torch.zeros(1, 8, 8, dtype=torch.long)
        flagged, expected = [], []
        running = torch.full((4,), 0.25, dtype=torch.float64)
        for _ in range(60):
            flagged.append(bool(monitor.update(one_class).collapsed))
            running = 0.95 * running + 0.05 * torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
            perplexity = torch.exp(-(running * running.log()).sum())
            expected.append(bool(perplexity < 0.5 * 4))  # the effective class count against the reference's 4
        assert flagged == expected and not flagged[0] and flagged[-1]

    def test_one_class_shrinking_is_not_a_collapse(self):
        """Self-training may rightly correct an over-predicted class: the others take its share."""
        monitor = ClassShareMonitor(4, momentum=1.0)
        ref = torch.tensor([[[0, 0, 0, 0, 1, 1, 2, 3]]])  # class 0 over-predicted
        monitor.set_reference(ref)
        stats = monitor.update(torch.tensor([[[0, 1, 1, 1, 2, 2, 3, 3]]]))
        assert float(stats.ratio[0]) == pytest.approx(0.25) and not bool(stats.collapsed)
        assert float(stats.perplexity_ratio) > 1.0

    def test_rare_reference_classes_are_not_watched(self):
        monitor = ClassShareMonitor(3, min_share=0.1)
        ref = torch.zeros(1, 10, 10, dtype=torch.long)
        ref[0, 0, :5] = 2  # 5% of the pixels: under min_share
        ref[0, 1:, :] = 1
        monitor.set_reference(ref)
        stats = monitor.update(torch.where(ref == 2, 0, ref))  # class 2 vanishes
        assert torch.isnan(stats.ratio[2]) and not torch.isnan(stats.ratio[1]) and not bool(stats.collapsed)

    def test_no_reference_never_collapses(self):
        stats = ClassShareMonitor(3).update(torch.zeros(1, 4, 4, dtype=torch.long))
        assert torch.isnan(stats.min_ratio) and torch.isnan(stats.perplexity_ratio) and not bool(stats.collapsed)

    def test_set_reference_restarts_the_running_shares(self):
        monitor = ClassShareMonitor(2, momentum=0.1)
        monitor.set_reference(torch.tensor([[[0, 1]]]))
        monitor.update(torch.zeros(1, 1, 2, dtype=torch.long))
        monitor.set_reference(torch.tensor([[[0, 1]]]))
        stats = monitor.update(torch.ones(1, 1, 2, dtype=torch.long))
        assert stats.shares.tolist() == [0.0, 1.0]  # the first update after a reference sets the shares

    def test_state_dict_round_trip(self):
        a = ClassShareMonitor(3)
        a.set_reference(torch.tensor([[[0, 1, 2]]]))
        a.update(torch.tensor([[[0, 0, 2]]]))
        b = ClassShareMonitor(3)
        b.load_state_dict(a.state_dict())
        assert torch.equal(a.running, b.running) and int(b.updates) == 1
        # What update compares against is rebuilt from the loaded reference (it is not saved).
        assert set(a.state_dict()) == {"reference", "running", "updates"}
        labels = torch.tensor([[[0, 0, 0]]])
        sa, sb = a.update(labels), b.update(labels)
        assert torch.equal(sa.ratio, sb.ratio) and torch.equal(sa.min_ratio, sb.min_ratio)
        assert torch.equal(sa.perplexity_ratio, sb.perplexity_ratio) and not torch.isnan(sb.perplexity_ratio)

    def test_device_and_dtype_of_outputs(self, device):
        monitor = ClassShareMonitor(3).to(device)
        monitor.set_reference(torch.tensor([[[0, 1, 2]]], device=device))
        stats = monitor.update(torch.tensor([[[0, 1, 1]]], device=device))
        assert stats.shares.device.type == device.type and stats.collapsed.dtype == torch.bool

    @pytest.mark.parametrize("kwargs, name", [
        ({"num_classes": 0}, "num_classes"), ({"num_classes": 3, "momentum": 0}, "momentum"),
        ({"num_classes": 3, "min_share": 1.5}, "min_share"), ({"num_classes": 3, "min_ratio": -1}, "min_ratio"),
    ])
    def test_bad_settings(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            ClassShareMonitor(**kwargs)

    def test_bad_input(self):
        monitor = ClassShareMonitor(3)
        with pytest.raises(ValueError, match="labels"):
            monitor.update(torch.zeros(4, 4, dtype=torch.long))
        with pytest.raises(ValueError, match="labels"):
            monitor.update(torch.full((1, 2, 2), 7))
        with pytest.raises(ValueError, match="counts"):
            monitor.set_reference(counts=torch.ones(4))
        with pytest.raises(ValueError, match="exactly one"):
            monitor.set_reference()
