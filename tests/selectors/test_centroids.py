"""ClassCentroids against the paper's Class_Features, written its way (per sample, per class)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from diga import ClassCentroids
from tests.selectors._dist_worker import centroid_worker

C, D = 5, 8


def make_batch(gen, b=3, h=6, w=7, up=2, c=C, d=D, p_ignore=0.1):
    feats = torch.randn(b, d, h, w, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, c, (b, h * up, w * up), generator=gen)
    labels[torch.rand(b, h * up, w * up, generator=gen) < p_ignore] = 255
    logits = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    return feats, labels, logits


def paper_assign(feats, labels, logits, c):
    """calculate_mean_vector's mask: label (nearest-resized) == argmax(logits) == class."""
    size = feats.shape[-2:]
    masks = torch.zeros(feats.shape[0], c, *size, dtype=torch.bool)
    lab = None
    if labels is not None:
        lab = F.interpolate(labels[:, None].double(), size=size, mode="nearest")[:, 0].long()
    pred = None
    if logits is not None:
        pred = F.softmax(logits, dim=1).argmax(dim=1)
    for n in range(feats.shape[0]):
        for t in range(c):
            m = torch.ones(size, dtype=torch.bool)
            if lab is not None:
                m &= lab[n] == t
            if pred is not None:
                m &= pred[n] == t
            masks[n, t] = m
    return masks


def loop_class_sums(feats, masks):
    sums = torch.zeros(masks.shape[1], feats.shape[1], dtype=torch.float64)
    counts = torch.zeros(masks.shape[1], dtype=torch.float64)
    for n in range(feats.shape[0]):
        for t in range(masks.shape[1]):
            m = masks[n, t]
            sums[t] += feats[n][:, m].sum(dim=1)
            counts[t] += m.sum()
    return sums, counts


def paper_distances(centroids, feat):
    """feat_centroid_distance: one torch.norm per class."""
    n, _, h, w = feat.shape
    out = torch.empty(n, centroids.shape[0], h, w, dtype=feat.dtype)
    for i in range(centroids.shape[0]):
        out[:, i] = torch.norm(centroids[i].reshape(-1, 1, 1).expand(-1, h, w) - feat, 2, dim=1)
    return out


class TestClassCentroids:
    @pytest.mark.parametrize("d", [D, 3])  # one-hot matmul (D > C + 1) and index_add (D <= C + 1)
    def test_accumulate_finalize_is_pixel_mean(self, gen, d):
        bank = ClassCentroids(C, d)
        batches = [make_batch(gen, d=d) for _ in range(3)]
        total_s = torch.zeros(C, d, dtype=torch.float64)
        total_n = torch.zeros(C, dtype=torch.float64)
        for feats, labels, logits in batches:
            bank.accumulate(feats, labels, logits)
            s, n = loop_class_sums(feats, paper_assign(feats, labels, logits, C))
            total_s += s
            total_n += n
        out = bank.finalize()
        torch.testing.assert_close(out.double(), (total_s / total_n[:, None]).float().double())
        assert bank.initialized.all()
        assert (bank.running_count == 0).all()

    @pytest.mark.parametrize("use_labels, use_logits", [(True, False), (False, True)])
    def test_assign_from_labels_or_logits_alone(self, gen, use_labels, use_logits):
        feats, labels, logits = make_batch(gen)
        labels = labels if use_labels else None
        logits = logits if use_logits else None
        bank = ClassCentroids(C, D)
        bank.accumulate(feats, labels, logits)
        s, n = loop_class_sums(feats, paper_assign(feats, labels, logits, C))
        seen = n > 0
        torch.testing.assert_close(bank.finalize()[seen].double(), (s / n[:, None])[seen].float().double())

    def test_logits_at_higher_resolution(self, gen):
        feats, labels, _ = make_batch(gen)
        logits = torch.randn(3, C, 12, 14, generator=gen)
        bank = ClassCentroids(C, D)
        cls = bank.assign(feats, labels, logits)
        pred = F.interpolate(logits.argmax(1)[:, None].float(), size=(6, 7), mode="nearest")[:, 0]
        lab = F.interpolate(labels[:, None].float(), size=(6, 7), mode="nearest")[:, 0]
        expected = torch.where((pred == lab) & (lab != 255), lab, torch.full_like(lab, C)).long()
        assert torch.equal(cls, expected)

    @pytest.mark.parametrize("d", [D, 3])
    def test_update_is_ema_of_batch_mean(self, gen, d):
        feats, labels, logits = make_batch(gen, p_ignore=0.0, d=d)
        init = torch.randn(C, d, generator=gen)
        bank = ClassCentroids.from_tensor(init, momentum=0.1, min_pixels=3)
        moved = bank.update(feats, labels, logits)
        s, n = loop_class_sums(feats, paper_assign(feats, labels, logits, C))
        expected = init.double().clone()
        for t in range(C):  # the paper's moving_average step, with this batch's class mean
            if n[t] >= 3:
                expected[t] = expected[t] * (1 - 0.1) + 0.1 * s[t] / n[t]
        torch.testing.assert_close(bank.centroids.double(), expected.float().double())
        assert moved.tolist() == (n >= 3).tolist()

    @pytest.mark.parametrize("d", [D, 3])
    @pytest.mark.parametrize("order", [None, (2, 0, 1)])
    def test_steps_are_calls_in_order(self, gen, d, order, device):
        # Three batches in one call: the centroids, initialised classes and moved classes of three
        # calls, made in `order` (the class sums in one pass, the EMA steps one by one).
        feats, labels, logits = (t.to(device) for t in make_batch(gen, b=6, d=d))
        init = torch.randn(C, d, generator=gen).to(device)
        calls = ClassCentroids.from_tensor(init, momentum=0.3, min_pixels=2)
        calls.initialized[1] = False
        one = ClassCentroids.from_tensor(init, momentum=0.3, min_pixels=2)
        one.initialized[1] = False
        moved = [None] * 3
        for k in order or range(3):
            part = slice(2 * k, 2 * k + 2)
            moved[k] = calls.update(feats[part], labels[part], logits[part])
        got = one.update(feats, labels, logits, steps=3, order=order)
        assert torch.equal(got, torch.stack(moved))
        assert torch.equal(one.centroids, calls.centroids) and torch.equal(one.initialized, calls.initialized)

    def test_min_pixels_leaves_rare_classes(self):
        feats = torch.ones(1, 2, 2, 2)
        labels = torch.tensor([[[0, 0], [0, 1]]])
        bank = ClassCentroids.from_tensor(torch.zeros(2, 2), momentum=1.0, min_pixels=2)
        bank.update(feats, labels)
        assert bank.centroids.tolist() == [[1.0, 1.0], [0.0, 0.0]]

    def test_uninitialised_class_is_set_by_first_update_and_never_nearest(self):
        bank = ClassCentroids(3, 2, momentum=1e-4, min_pixels=1)
        bank.accumulate(torch.ones(1, 2, 1, 2), torch.tensor([[[0, 0]]]))
        bank.finalize()
        assert bank.initialized.tolist() == [True, False, False]
        # A zero feature is closest to the zero vector of unseen classes, but they do not count.
        assert bank.nearest(torch.zeros(1, 2, 1, 1)).item() == 0
        bank.update(torch.full((1, 2, 1, 1), 5.0), torch.tensor([[[2]]]))
        assert bank.centroids[2].tolist() == [5.0, 5.0]  # set, not 1e-4 * 5

    def test_distances_match_paper(self, gen, dtype):
        cents = torch.randn(C, D, generator=gen, dtype=dtype)
        feats = torch.randn(2, D, 5, 6, generator=gen, dtype=dtype)
        bank = ClassCentroids.from_tensor(cents)
        ref = paper_distances(cents.float().to(dtype), feats)
        torch.testing.assert_close(bank.distances(feats), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(bank.nearest(feats), ref.argmin(dim=1))
        w = bank.weights(feats)
        torch.testing.assert_close(w, F.softmax(-ref, dim=1).to(w.dtype), rtol=1e-4, atol=1e-5)

    def test_nearest_is_argmax_of_weights(self, gen, dtype):
        bank = ClassCentroids.from_tensor(torch.randn(C, D, generator=gen, dtype=dtype))
        bank.initialized[[1, 4]] = False  # unseen classes are excluded on both paths
        feats = torch.randn(3, D, 7, 9, generator=gen, dtype=dtype)
        nearest = bank.nearest(feats)
        assert nearest.shape == (3, 7, 9) and nearest.dtype == torch.long
        assert torch.equal(nearest, bank.weights(feats).argmax(dim=1))
        assert not torch.isin(nearest, torch.tensor([1, 4])).any()

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_nearest_rejects_non_finite_feature(self, gen, bad):
        bank = ClassCentroids.from_tensor(torch.randn(C, D, generator=gen))
        feats = torch.randn(2, D, 3, 3, generator=gen)
        feats[1, 2, 0, 1] = bad
        with pytest.raises(ValueError, match="`features` must be finite"):
            bank.nearest(feats)

    def test_low_precision_features(self, gen, low_dtype):
        bank = ClassCentroids.from_tensor(torch.randn(C, D, generator=gen))
        feats = torch.randn(2, D, 4, 4, generator=gen).to(low_dtype)
        assert bank.distances(feats).dtype == low_dtype
        bank.update(feats, torch.zeros(2, 4, 4, dtype=torch.long))
        assert bank.centroids.dtype == torch.float32

    def test_autocast_keeps_float32_sums(self, gen):
        feats, labels, _ = make_batch(gen)
        bank = ClassCentroids(C, D)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bank.accumulate(feats.float(), labels)
        ref = ClassCentroids(C, D)
        ref.accumulate(feats.float(), labels)
        torch.testing.assert_close(bank.finalize(), ref.finalize())

    def test_state_dict_round_trip(self, gen):
        feats, labels, _ = make_batch(gen)
        bank = ClassCentroids(C, D)
        bank.accumulate(feats, labels)  # half-done pass survives too
        other = ClassCentroids(C, D)
        other.load_state_dict(bank.state_dict())
        torch.testing.assert_close(other.finalize(), bank.finalize())

    @pytest.mark.parametrize(
        "call, match",
        [
            (lambda b: b.accumulate(torch.zeros(1, D, 2, 2)), "labels"),
            (lambda b: b.accumulate(torch.zeros(1, D + 1, 2, 2), torch.zeros(1, 2, 2).long()), "D = 8"),
            (lambda b: b.accumulate(torch.zeros(D, 2, 2), torch.zeros(1, 2, 2).long()), "features"),
            (lambda b: b.accumulate(torch.zeros(1, D, 2, 2), torch.full((1, 2, 2), C)), "labels"),
            (lambda b: b.accumulate(torch.zeros(2, D, 2, 2), torch.zeros(1, 2, 2).long()), "batch"),
            (lambda b: b.update(torch.zeros(1, D, 2, 2), logits=torch.zeros(1, C + 1, 2, 2)), "logits"),
            (lambda b: b.update(torch.zeros(3, D, 2, 2), torch.zeros(3, 2, 2).long(), steps=2), "features"),
            (lambda b: b.update(torch.zeros(2, D, 2, 2), torch.zeros(2, 2, 2).long(), steps=2, order=(1, 1)), "order"),
            (lambda b: b.update(torch.zeros(2, D, 2, 2), torch.zeros(2, 2, 2).long(), steps=0), "steps"),
            (lambda b: b.distances(torch.full((1, D, 2, 2), float("nan"))), "finite"),
            (lambda b: b.distances(torch.zeros(0, D, 2, 2)), "empty"),
            (lambda b: b.nearest(torch.zeros(0, D, 2, 2)), "empty"),
            (lambda b: b.nearest(torch.zeros(1, D + 1, 2, 2)), "D = 8"),
        ],
    )
    def test_bad_input(self, call, match):
        with pytest.raises(ValueError, match=match):
            call(ClassCentroids(C, D))

    @pytest.mark.parametrize(
        "kwargs, match",
        [({"num_classes": 0, "feature_dim": 2}, "num_classes"), ({"num_classes": 2, "feature_dim": 0}, "feature_dim"),
         ({"num_classes": 2, "feature_dim": 2, "momentum": 2.0}, "momentum"),
         ({"num_classes": 300, "feature_dim": 2}, "ignore_index"),
         ({"num_classes": 2, "feature_dim": 2, "min_pixels": 0}, "min_pixels")],
    )
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ClassCentroids(**kwargs)

    def test_from_tensor_bad(self):
        with pytest.raises(ValueError, match="centroids"):
            ClassCentroids.from_tensor(torch.zeros(3))


def test_two_ranks_agree_with_one_process(tmp_path, gen):
    """2 gloo ranks on half the data each == 1 process on all of it."""
    feats, labels, logits = make_batch(gen, b=4)
    feats = feats.float()
    logits = logits.float()
    data = {"features": feats, "labels": labels, "logits": logits, "num_classes": C}
    out = str(tmp_path / "result")
    mp.spawn(centroid_worker, args=(2, str(tmp_path / "init"), data, out), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}") for r in range(2))

    bank = ClassCentroids(C, D, momentum=0.3, min_pixels=1)
    bank.accumulate(feats, labels)
    bank.finalize()
    init = bank.centroids.clone()
    bank.update(feats, labels, logits)
    from diga import ConfusionMatrix

    cm = ConfusionMatrix(C)
    cm.update(logits.argmax(1), labels[:, ::2, ::2])
    for r in (r0, r1):
        torch.testing.assert_close(r["init"], init)
        torch.testing.assert_close(r["update"], bank.centroids)
        torch.testing.assert_close(r["miou"], cm.compute()["miou"])
    assert torch.equal(r0["update"], r1["update"])
