"""Adapter: both DiGA steps on a tiny smp model, checked against the paper's composition."""

from __future__ import annotations

import copy

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from diga import (
    ClassCentroids,
    ConfidenceThresholdSelector,
    DynamicPseudoLabelSelector,
    FourierTranslator,
    symmetric_kd_loss,
)
from diga.adapter import AblationOptions, Adapter
from diga.data.batch import batch_images
from diga.losses import resize_logits, segmentation_ce_loss
from diga.selectors import init_centroids

C = 4


def tiny_net(seed: int = 0):
    torch.manual_seed(seed)
    return smp.Unet("resnet18", encoder_weights=None, classes=C, encoder_depth=3, decoder_channels=(16, 8, 8))


def batch(seed=0, b=2, h=32, w=48):
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.rand(2, b, 3, h, w, generator=g)
    lbl = torch.randint(0, C, (b, h, w), generator=g)
    lbl[:, :2] = 255
    tgt_lbl = torch.randint(0, C, (b, h, w), generator=g)
    return src, lbl, tgt, tgt_lbl


@pytest.fixture
def adapter():
    return Adapter(tiny_net(), num_classes=C, translator=FourierTranslator(beta=0.05)).train()


class TestWarmup:
    def test_loss_is_ce_plus_half_kd(self, adapter):
        src, lbl, tgt, _ = batch()
        out = adapter.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out.loss, out.parts["ce"] + 0.5 * out.parts["kd"])
        out.loss.backward()
        grad = adapter.student.model.encoder.conv1.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        assert all(p.grad is None for p in adapter.teacher.parameters())

    @pytest.mark.parametrize("mixed_view_ce", [True, False])
    def test_matches_manual_composition(self, mixed_view_ce):
        """Default: CE on both views; ``mixed_view_ce=False``: the paper's, CE on the clean view only."""
        src, lbl, tgt, _ = batch()
        adapter = Adapter(tiny_net(), num_classes=C, translator=FourierTranslator(beta=0.05),
                          ablation=AblationOptions(mixed_view_ce=mixed_view_ce)).train()
        out = adapter.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
        imgs = out.images
        # The mixed view pastes the augmented source over the translated source.
        m = imgs["mask"][:, None]
        torch.testing.assert_close(imgs["mixed"], torch.where(m, imgs["augmented"], imgs["translated"]))
        torch.testing.assert_close(imgs["translated"], FourierTranslator(beta=0.05)(src, tgt))
        # Re-run the model passes by hand: same CE and KD.
        views = torch.cat([src, imgs["mixed"]])
        s_logits, _ = adapter.student(views)
        t_logits, _ = adapter.teacher(views)
        size = lbl.shape[-2:]
        if mixed_view_ce:  # the mean over both views' valid pixels: each view at half weight
            ce = (segmentation_ce_loss(s_logits[:2], lbl) + segmentation_ce_loss(s_logits[2:], lbl)) / 2
        else:
            ce = segmentation_ce_loss(s_logits[:2], lbl)
        kd = symmetric_kd_loss(resize_logits(s_logits, size), resize_logits(t_logits, size))
        torch.testing.assert_close(out.parts["ce"], ce.detach())
        torch.testing.assert_close(out.parts["kd"], kd.detach())

    def test_target_never_reaches_student_bn(self):
        src, lbl, tgt, _ = batch()
        runs = {}
        for leak in (False, True):
            ad = Adapter(tiny_net(), num_classes=C, ablation=AblationOptions(target_bn_leak=leak)).train()
            g = torch.Generator().manual_seed(1)
            ad.warmup_step(src, lbl, tgt * 0.2, generator=g)
            runs[leak] = ad.student.model.encoder.bn1.running_mean.clone()
        ref = Adapter(tiny_net(), num_classes=C).train()
        ref.warmup_step(src, lbl, None, generator=torch.Generator().manual_seed(1))
        assert torch.equal(runs[False], ref.student.model.encoder.bn1.running_mean)
        assert not torch.equal(runs[True], runs[False])

    def test_teacher_eval_and_paper_train_mode(self):
        ad = Adapter(tiny_net(), num_classes=C).train()
        assert ad.student.training and not ad.teacher.model.training
        ad2 = Adapter(tiny_net(), num_classes=C, ablation=AblationOptions(teacher_train_mode=True)).train()
        assert ad2.teacher.model.training

    def test_teacher_sequence_matches_paper(self):
        """With the paper's ramp, updating after each optimiser step reproduces its update-before-forward
        sequence (the default ramp, 0.1, forgets the first students faster: TestStagesAndCollapse)."""
        ad = Adapter(tiny_net(), num_classes=C, teacher_ramp=1.0)
        student = ad.student
        ref = copy.deepcopy(student)  # paper: teacher created from the student, iteration 0 copies it
        for i in range(1, 4):
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(0.01 * i)
            ad.update_teacher()  # after optimiser step i - 1
            alpha = min(1 - 1 / (i + 1), 0.999)  # paper: update_teacher_params(..., i) at iteration i
            for tp, sp in zip(ref.parameters(), student.parameters(), strict=True):
                tp.data[:] = alpha * tp.data + (1 - alpha) * sp.data
        for a, b in zip(ad.teacher.model.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b)


class TestSelfTraining:
    def test_step_against_manual(self):
        """The paper's selection (``select_with="teacher"``): the EMA teacher's features, centroids moving by EMA."""
        adapter = Adapter(tiny_net(), num_classes=C, translator=FourierTranslator(beta=0.05),
                          select_with="teacher").train()
        src, lbl, tgt, tgt_lbl = batch()
        adapter.init_centroids([tgt])
        pseudo = tgt_lbl.clone()
        bank_before = adapter.centroids.centroids.clone()
        t_logits, t_feats = adapter.teacher(tgt)
        expected = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(bank_before))(pseudo, features=t_feats)
        out = adapter.self_training_step(
            src, lbl, tgt, pseudo, target_labels=tgt_lbl, generator=torch.Generator().manual_seed(3)
        )
        assert torch.equal(out.images["selected"], expected)
        parts = out.parts
        torch.testing.assert_close(
            out.loss, parts["ce_source"] + parts["ce_mix"] + 0.25 * parts["kd"]
        )
        # DACS: source classes pasted onto the augmented target, labels mixed by the same mask.
        dacs, dacs_lbl = out.images["dacs"], out.images["dacs_labels"]
        from_source = (dacs == src).all(dim=1)
        assert torch.equal(dacs_lbl[from_source & (lbl != 255)], lbl[from_source & (lbl != 255)])
        assert not torch.equal(adapter.centroids.centroids, bank_before)
        assert 0 <= float(parts["kept"]) <= 1 and "precision_after" in parts
        assert float(parts["precision_before"]) == pytest.approx(
            ((pseudo == tgt_lbl).float().mean()).item(), abs=1e-6
        )
        out.loss.backward()
        assert adapter.student.model.encoder.conv1.weight.grad.abs().sum() > 0

    def test_online_mode_labels_with_the_stage_start_model(self, adapter):
        """Online pseudo-labels: multi-scale argmax of a frozen copy of the student the stage began with."""
        from diga.inference import predict_logits

        src, lbl, tgt, _ = batch()
        adapter.init_centroids([tgt])
        start = copy.deepcopy(adapter.student)
        expected = predict_logits(start, tgt, (1.0, 0.5)).argmax(1)
        opt = torch.optim.SGD(adapter.student.parameters(), lr=0.5)
        out = adapter.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images["pseudo"], expected)
        out.loss.backward()
        opt.step()
        adapter.update_teacher()
        out = adapter.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images["pseudo"], expected)  # the labeller does not follow the student
        assert not any(p.requires_grad for p in adapter.labeller.parameters())
        # Saved and restored with the adapter, so a resumed run labels as the uninterrupted one.
        other = Adapter(tiny_net(1), num_classes=C)
        other.load_state_dict(adapter.state_dict())
        assert torch.equal(other.online_pseudo_labels(tgt), expected)
        other.load_state_dict(Adapter(tiny_net(), num_classes=C).state_dict())
        assert other.labeller is None

    def test_online_labeller_refreshes_from_the_teacher_at_each_doubling(self):
        """labeller_refresh=2: the labeller is the stage-start student for steps 1-2, then a copy of the
        teacher made before steps 3, 5 and 9 (after 2, 4, 8 steps), frozen in between; resume keeps the
        schedule; offline steps never make a labeller; None keeps the first labeller for the stage."""
        from diga.inference import predict_logits

        src, lbl, tgt, _ = batch()
        ad = Adapter(tiny_net(), num_classes=C, labeller_refresh=2, select_with="teacher")
        ad.init_centroids([tgt])
        opt = torch.optim.SGD(ad.student.parameters(), lr=0.5)
        made_at, last = [], None
        for step in range(1, 10):
            if step == 6:  # resume mid-schedule into a fresh adapter: the next refresh stays at step 9
                other = Adapter(tiny_net(1), num_classes=C, labeller_refresh=2, select_with="teacher")
                other.load_state_dict(ad.state_dict())
                ad, opt = other, torch.optim.SGD(other.student.parameters(), lr=0.5)
                last = ad.labeller
            teacher_now = copy.deepcopy(ad.teacher.model)
            out = ad.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(step))
            if ad.labeller is not last:
                made_at.append(step)
                if step > 1:  # a refresh copies the teacher as it was before this step
                    assert torch.equal(out.images["pseudo"], predict_logits(teacher_now, tgt, (1.0, 0.5)).argmax(1))
                last = ad.labeller
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            ad.update_teacher()
        assert made_at == [1, 3, 5, 9]
        assert ad.stage_step == 9 and ad.labeller_due == 16
        # A new stage starts the schedule again from the stage-start student.
        ad.init_centroids([tgt])
        ad.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(0))
        assert ad.stage_step == 1 and ad.labeller_due == 2
        # Offline mode makes no labeller; labeller_refresh=None never refreshes.
        off = Adapter(tiny_net(), num_classes=C, labeller_refresh=2, select_with="teacher")
        off.init_centroids([tgt])
        for _ in range(3):
            off.self_training_step(src, lbl, tgt, lbl.clamp(max=C - 1), generator=torch.Generator().manual_seed(0))
        assert off.labeller is None
        frozen = Adapter(tiny_net(), num_classes=C, labeller_refresh=None)
        frozen.init_centroids([tgt])
        frozen.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(0))
        first = frozen.labeller
        for _ in range(4):
            frozen.self_training_step(src, lbl, tgt, None, generator=torch.Generator().manual_seed(0))
        assert frozen.labeller is first
        for bad in (0, -3, 1.5):
            with pytest.raises(ValueError, match="labeller_refresh"):
                Adapter(tiny_net(), num_classes=C, labeller_refresh=bad)

    def test_threshold_selector(self):
        ad = Adapter(tiny_net(), num_classes=C, selector=ConfidenceThresholdSelector(threshold=0.0))
        src, lbl, tgt, tgt_lbl = batch()
        out = ad.self_training_step(src, lbl, tgt, tgt_lbl, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images["selected"], tgt_lbl)  # threshold 0 keeps everything
        assert float(out.parts["kept"]) == 1.0

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"target_images": torch.rand(2, 3, 32, 40)}, "target_images"),
            ({"target_pseudo_labels": torch.zeros(2, 16, 48, dtype=torch.long)}, "target_pseudo_labels"),
            ({"target_pseudo_labels": torch.full((2, 32, 48), C)}, "target_pseudo_labels"),
        ],
    )
    def test_bad_input(self, adapter, kwargs, match):
        src, lbl, tgt, _ = batch()
        args = {"target_images": tgt, "target_pseudo_labels": None, **kwargs}
        with pytest.raises(ValueError, match=match):
            adapter.self_training_step(src, lbl, args["target_images"], args["target_pseudo_labels"])


class TestFixedSelection:
    """select_with="labeller": the selector reads the frozen stage-start model against the centroid pass's bank."""

    def _train(self, ad, src, lbl, tgt, pseudo, steps, lr=0.5):
        opt = torch.optim.SGD(ad.student.parameters(), lr=lr)
        outs = []
        for step in range(steps):
            out = ad.self_training_step(src, lbl, tgt, pseudo, generator=torch.Generator().manual_seed(step))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            ad.update_teacher()
            outs.append(out)
        return outs

    @pytest.mark.parametrize("online", [False, True])
    def test_selection_is_the_stage_start_models_at_every_step(self, online):
        from diga.inference import predict_logits

        src, lbl, tgt, tgt_lbl = batch()
        ad = Adapter(tiny_net(), num_classes=C, select_with="labeller")
        ad.init_centroids([tgt])
        bank = ad.centroids.centroids.clone()
        start = copy.deepcopy(ad.student).eval()
        with torch.no_grad():
            _, feats = start(tgt)
        pseudo = None if online else tgt_lbl
        expected_pseudo = predict_logits(start, tgt, (1.0, 0.5)).argmax(1) if online else tgt_lbl
        reference = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(bank))
        expected = reference(expected_pseudo, features=feats)
        outs = self._train(ad, src, lbl, tgt, pseudo, 4)
        for out in outs:
            assert torch.equal(out.images["pseudo"], expected_pseudo)
            assert torch.equal(out.images["selected"], expected)
        assert torch.equal(ad.centroids.centroids, bank)  # no EMA step in this mode
        assert 0 < float(outs[0].parts["kept"]) < 1
        # The student did move: the paper's mode, reading the teacher, selects otherwise by now.
        with torch.no_grad():
            _, now = ad.teacher(tgt)
        assert not torch.equal(reference(expected_pseudo, features=now), expected)
        paper = Adapter(tiny_net(), num_classes=C, select_with="teacher")
        paper.init_centroids([tgt])
        self._train(paper, src, lbl, tgt, pseudo, 2)
        assert (paper.labeller is None) == (not online)  # offline, the paper's mode keeps no labeller
        assert not torch.equal(paper.centroids.centroids, bank)  # the paper's EMA does move them

    def test_online_without_full_scale_matches_the_labeller(self):
        from diga.inference import predict_logits

        src, lbl, tgt, _ = batch()
        ad = Adapter(tiny_net(), num_classes=C, select_with="labeller", online_scales=(0.5,))
        ad.init_centroids([tgt])
        start = copy.deepcopy(ad.student).eval()
        out = self._train(ad, src, lbl, tgt, None, 2)[-1]
        assert torch.equal(out.images["pseudo"], predict_logits(start, tgt, (0.5,)).argmax(1))

    def test_offline_mode_keeps_a_labeller_and_resumes(self):
        src, lbl, tgt, tgt_lbl = batch()
        ad = Adapter(tiny_net(), num_classes=C, select_with="labeller")
        ad.init_centroids([tgt])
        first = self._train(ad, src, lbl, tgt, tgt_lbl, 2)[0].images["selected"]
        assert ad.labeller is not None and not any(p.requires_grad for p in ad.labeller.parameters())
        other = Adapter(tiny_net(1), num_classes=C, select_with="labeller")
        other.load_state_dict(ad.state_dict())
        out = self._train(other, src, lbl, tgt, tgt_lbl, 1)[0]
        assert torch.equal(out.images["selected"], first)
        assert Adapter(tiny_net(), C).select_with == "teacher"  # the paper's is the default; ours shows in the repr
        assert "select_with='labeller'" in repr(other) and "select_with" not in repr(Adapter(tiny_net(), C))

    def test_threshold_selector_reads_the_labeller(self):
        src, lbl, tgt, tgt_lbl = batch()
        selector = ConfidenceThresholdSelector(threshold=0.3)
        ad = Adapter(tiny_net(), num_classes=C, select_with="labeller", selector=selector)
        start = copy.deepcopy(ad.student).eval()
        with torch.no_grad():
            logits, feats = start(tgt)
        expected = selector(tgt_lbl, features=feats, logits=logits)
        for out in self._train(ad, src, lbl, tgt, tgt_lbl, 3):
            assert torch.equal(out.images["selected"], expected)

    @pytest.mark.parametrize("kwargs, match", [
        ({"select_with": "student"}, "select_with"),
        ({"select_with": None}, "select_with"),
        ({"select_with": "labeller", "labeller_refresh": 2}, "labeller_refresh"),
    ])
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            Adapter(tiny_net(), num_classes=C, **kwargs)


class TestAdapterMisc:
    def test_predict_multiscale_max(self, adapter):
        _, _, tgt, _ = batch()
        fused = adapter.predict(tgt, scales=(1.0, 0.5))
        adapter.eval()
        with torch.no_grad():
            full = resize_logits(adapter.student(tgt)[0], (32, 48))
            half_in = F.interpolate(tgt, (16, 24), mode="bilinear", align_corners=True)
            half = resize_logits(adapter.student(half_in)[0], (32, 48))
        torch.testing.assert_close(fused, torch.maximum(full, half))

    def test_predict_restores_mode(self, adapter):
        adapter.train()
        adapter.predict(batch()[2])
        assert adapter.student.training

    def test_init_centroids_accepts_batch_forms(self, adapter):
        _, lbl, tgt, _ = batch()
        a = adapter.init_centroids([tgt]).clone()
        b = adapter.init_centroids([(tgt, lbl)]).clone()
        c = adapter.init_centroids([{"image": tgt, "label": lbl}]).clone()
        assert torch.equal(a, b) and torch.equal(a, c)
        d = adapter.init_centroids([(tgt, lbl)], use_labels=True)
        assert d.shape == a.shape
        with pytest.raises(ValueError, match="batch"):
            batch_images(3)

    def test_init_centroids_runs_the_selectors_pass_on_the_adapters_bank(self, adapter):
        _, lbl, tgt, _ = batch()
        for which, net in (("student", adapter.student), ("teacher", adapter.teacher.model)):
            bank = ClassCentroids(C, adapter.centroids.feature_dim)
            expected = init_centroids(bank, net, [tgt, tgt.flip(-1)])
            adapter.train()
            got = adapter.init_centroids([tgt, tgt.flip(-1)], which=which)
            assert torch.equal(got, expected) and adapter.student.training and adapter.stage == "centroids"
        first = adapter.init_centroids([tgt, tgt.flip(-1)], max_batches=1).clone()
        assert torch.equal(first, adapter.init_centroids([tgt]))
        with pytest.raises(ValueError, match="`which` must be 'student' or 'teacher', got 'ema'"):
            adapter.init_centroids([tgt], which="ema")
        with pytest.raises(ValueError, match="`use_labels=True` needs labelled batches"):
            adapter.init_centroids([tgt], use_labels=True)
        with pytest.raises(ValueError, match="max_batches"):
            adapter.init_centroids([tgt], max_batches=0)

    def test_state_dict_round_trip(self, adapter):
        src, lbl, tgt, _ = batch()
        out = adapter.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        adapter.update_teacher()
        adapter.init_centroids([tgt])
        other = Adapter(tiny_net(seed=5), num_classes=C, translator=FourierTranslator(beta=0.05))
        other.load_state_dict(adapter.state_dict())
        assert other.step == adapter.step == 1 and other.teacher.step == adapter.teacher.step == 2
        for a, b in zip(other.state_dict().values(), adapter.state_dict().values(), strict=True):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)

    def test_autocast_bf16_cpu(self, adapter):
        src, lbl, tgt, _ = batch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = adapter.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert torch.isfinite(out.loss)

    def test_seeded_step_is_deterministic(self):
        src, lbl, tgt, _ = batch()
        losses = []
        for _ in range(2):
            ad = Adapter(tiny_net(), num_classes=C, translator=FourierTranslator(beta=0.05)).train()
            losses.append(ad.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(9)).loss)
        assert torch.equal(losses[0], losses[1])

    @pytest.mark.parametrize(
        "call, match",
        [
            (lambda a, s, l, t: a.warmup_step(s * 255, l, t), "source_images"),
            (lambda a, s, l, t: a.warmup_step(s, l[:, :16], t), "source_labels"),
            (lambda a, s, l, t: a.warmup_step(s, l[:1], t), "batch"),
            (lambda a, s, l, t: a.predict(t, scales=()), "scales"),
            (lambda a, s, l, t: a.predict(t, which="ema"), "which"),
        ],
    )
    def test_bad_input(self, adapter, call, match):
        src, lbl, tgt, _ = batch()
        with pytest.raises(ValueError, match=match):
            call(adapter, src, lbl, tgt)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="model"):
            Adapter("net", num_classes=C)
        with pytest.raises(ValueError, match="num_classes"):
            Adapter(tiny_net(), num_classes=0)
        with pytest.raises(ValueError, match="translator"):
            Adapter(tiny_net(), num_classes=C, translator=3)
        bad = Adapter(tiny_net(), num_classes=C, translator=lambda s, t: s[:1])
        src, lbl, tgt, _ = batch()
        with pytest.raises(ValueError, match="translator"):
            bad.warmup_step(src, lbl, tgt)


def test_state_loads_across_selectors():
    dynamic = Adapter(tiny_net(), num_classes=C)
    threshold = Adapter(tiny_net(seed=3), num_classes=C, selector=ConfidenceThresholdSelector(threshold=0.9))
    threshold.load_state_dict(dynamic.state_dict())
    assert not any(k.startswith("selector.") for k in dynamic.state_dict())
    assert dynamic.selector.centroids is dynamic.centroids
    dynamic.to(torch.float64)
    assert dynamic.selector.centroids.centroids.dtype == torch.float64


def test_ablation_options_check_their_values():
    assert AblationOptions() == Adapter(tiny_net(), num_classes=C).ablation
    assert AblationOptions().mixed_view_ce  # the library's warm-up: CE on both views (the paper's: False)
    with pytest.raises(ValueError, match="`mixed_view_ce` must be a bool, got 1"):
        AblationOptions(mixed_view_ce=1)
    with pytest.raises(ValueError, match="`ablation` must be an AblationOptions, got dict"):
        Adapter(tiny_net(), num_classes=C, ablation={"mixed_view_ce": True})
    assert "ablation=AblationOptions(cross_domain_mix=False" in repr(
        Adapter(tiny_net(), num_classes=C, ablation=AblationOptions(cross_domain_mix=False)))


def test_ablation_switches():
    src, lbl, tgt, _ = batch()
    plain = Adapter(tiny_net(), num_classes=C, ablation=AblationOptions(cross_domain_mix=False)).train()
    out = plain.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.images["mixed"], out.images["augmented"]) and out.images["mask"].all()
    both = Adapter(tiny_net(), num_classes=C, kd_weight=0.0, ablation=AblationOptions(mixed_view_ce=True)).train()
    out = both.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
    views = torch.cat([src, out.images["mixed"]])
    logits, _ = both.student(views)
    torch.testing.assert_close(out.loss, segmentation_ce_loss(logits, lbl.repeat(2, 1, 1)))


def test_augment_background_augments_the_whole_mixed_view():
    """``augment_background``: the translated background gets its own strong augmentation draw
    (after the source's, before the mix's); off, the background is the translated source."""
    src, lbl, tgt, _ = batch()
    make = lambda on: Adapter(tiny_net(), num_classes=C, translator=FourierTranslator(beta=0.05),  # noqa: E731
                              ablation=AblationOptions(augment_background=on)).train()
    ad = make(True)
    out = ad.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # the step's draws, in its order
    translated = FourierTranslator(beta=0.05)(src, tgt)
    augmented = ad.augment(src, generator=g)
    background = ad.augment(translated, generator=g)
    mixed, _, mask = ad.mix(augmented, background, lbl, generator=g)
    for name, want in {"translated": translated, "augmented": augmented, "background": background,
                       "mixed": mixed, "mask": mask}.items():
        torch.testing.assert_close(out.images[name], want, msg=name)
    assert not torch.allclose(background, translated)  # a real augmentation, not a copy
    assert not mask.all() and mask.any()
    plain = make(False).warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1)).images
    assert "background" not in plain
    torch.testing.assert_close(plain["augmented"], augmented)  # the source's draw comes first either way
    with pytest.raises(ValueError, match="`augment_background` must be a bool, got 'yes'"):
        AblationOptions(augment_background="yes")


class TestHostReads:
    """A step reads values back only to check its inputs (one read each), never mid-step.

    On CUDA every read is a host sync that stalls the queue; the internals run on what the
    step built from checked inputs, so they are not re-checked. Counted: reads made by diga's
    own code (kornia's blur reads its sigma on the host, its own business).
    """

    @pytest.fixture
    def reads(self, monkeypatch):
        import sys

        sites = []
        for name in ("tolist", "item", "__bool__", "__int__", "__float__"):
            real = getattr(torch.Tensor, name)

            def spy(self, *args, _real=real, **kwargs):
                caller = sys._getframe(1)
                if "/diga/" in caller.f_code.co_filename.replace("\\", "/"):
                    sites.append(caller.f_code.co_name)
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, spy)
        return sites

    def test_warmup_reads_only_its_inputs(self, adapter, reads):
        src, lbl, tgt, _ = batch()
        adapter.warmup_step(src, lbl, tgt, generator=torch.Generator().manual_seed(1))
        # source images, source labels, target images; then the augmentation reads two host
        # tensors of its CPU generator (which steps some image drew, and the jitter's order)
        assert reads == ["check_images", "check_label_values", "check_images",
                         "strong_photometric", "strong_photometric"]

    def test_self_training_reads_only_its_inputs(self, adapter, reads):
        src, lbl, tgt, tgt_lbl = batch()
        adapter.init_centroids([tgt])
        reads.clear()
        adapter.self_training_step(src, lbl, tgt, tgt_lbl, generator=torch.Generator().manual_seed(1))
        # (two augmentations, each reading its CPU draws twice, as in the warm-up)
        assert reads == ["check_images", "check_label_values", "check_images", "check_label_values",
                         *["strong_photometric"] * 4]

    def test_inputs_still_checked(self, adapter):
        src, lbl, tgt, tgt_lbl = batch()
        with pytest.raises(ValueError, match="source_labels"):
            adapter.warmup_step(src, lbl.clamp_max(C - 1) + 1, tgt)
        with pytest.raises(ValueError, match="target_images"):
            adapter.warmup_step(src, lbl, tgt * 2)
        with pytest.raises(ValueError, match="target_pseudo_labels"):
            adapter.self_training_step(src, lbl, tgt, tgt_lbl + C)


def _force_class(adapter, k=0):
    """Make the student's head predict class ``k`` at every pixel (a forced collapse)."""
    head = adapter.student.model.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[k] = 10.0


class TestStagesAndCollapse:
    def test_first_self_training_step_restarts_the_teacher(self, adapter):
        src, lbl, tgt, tgt_lbl = batch()
        opt = torch.optim.SGD(adapter.student.parameters(), lr=0.1)
        for _ in range(3):
            adapter.warmup_step(src, lbl, tgt).loss.backward()
            opt.step()
            opt.zero_grad()
            adapter.update_teacher()
        assert adapter.stage == "warmup" and adapter.teacher.ramp == 0.1
        student_weight = adapter.student.model.encoder.conv1.weight.clone()
        assert not torch.equal(adapter.teacher.model.model.encoder.conv1.weight, student_weight)
        adapter.init_centroids([tgt])
        assert adapter.stage == "centroids"
        adapter.self_training_step(src, lbl, tgt, tgt_lbl)
        assert adapter.stage == "self_training" and adapter.teacher.ramp == 1.0 and adapter.teacher.step == 1
        assert torch.equal(adapter.teacher.model.model.encoder.conv1.weight, student_weight)
        adapter.update_teacher()
        adapter.self_training_step(src, lbl, tgt, tgt_lbl)  # no second restart within the stage
        assert adapter.teacher.step == 2
        other = Adapter(tiny_net(), num_classes=C)
        other.load_state_dict(adapter.state_dict())
        assert other.stage == "self_training" and other.teacher.ramp == 1.0

    def test_paper_teacher_settings_are_reachable(self):
        ad = Adapter(tiny_net(), num_classes=C, teacher_ramp=1.0, teacher_buffers="copy")
        assert ad.teacher.ramp == 1.0 and ad.teacher.buffers == "copy"
        assert [ad.teacher.alpha(s) for s in range(5)] == [min(1 - 1 / (s + 1), 0.999) for s in range(5)]

    def test_forced_collapse_is_reported(self, adapter):
        src, lbl, tgt, tgt_lbl = batch()
        adapter.init_centroids([tgt])
        adapter.centroids.pixel_counts.fill_(100.0)  # the warm-up predicted every class equally often
        _force_class(adapter, 0)
        out = adapter.self_training_step(src, lbl, tgt, None)
        assert float(out.parts["collapse"]) == 1.0 and float(out.parts["share_ratio_min"]) == 0.0
        assert (out.images["pseudo"] == 0).all()

    def test_no_collapse_against_its_own_shares(self, adapter):
        src, lbl, tgt, tgt_lbl = batch()
        adapter.init_centroids([tgt])  # reference: this model's own predictions on these images
        out = adapter.self_training_step(src, lbl, tgt, tgt_lbl)
        assert float(out.parts["collapse"]) == 0.0
        assert float(out.parts["share_ratio_min"]) == pytest.approx(1.0, abs=1e-5)

    def test_dynamic_selector_does_not_keep_a_degenerate_map(self, adapter):
        """All pseudo-labels one class, features spread over the centroids: only that class's part stays."""
        bank = ClassCentroids.from_tensor(torch.eye(C, 8))
        feats = torch.eye(C, 8)[torch.arange(16) % C].T.reshape(1, 8, 4, 4)
        selected = DynamicPseudoLabelSelector(bank)(torch.zeros(1, 4, 4, dtype=torch.long), features=feats)
        kept = selected != 255
        assert 0 < kept.float().mean() < 0.5
        assert torch.equal(kept, (torch.arange(16) % C == 0).reshape(1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_adapter_follows_a_cuda_model():
    """``Adapter(model.cuda(), C)`` is ready on the GPU: no ``.to(device)`` a new user would not know to write."""
    adapter = Adapter(tiny_net().cuda(), C)
    state = {name: t.device.type for name, t in adapter.state_dict().items() if torch.is_tensor(t)}
    assert set(state.values()) == {"cuda"}, {n: d for n, d in state.items() if d != "cuda"}
    src, lbl, tgt, _ = batch()
    adapter.init_centroids([tgt])  # CPU batches are moved to the model
    out = adapter.self_training_step(src.cuda(), lbl.cuda(), tgt.cuda())
    out.loss.backward()
    assert out.loss.device.type == "cuda" and torch.isfinite(out.loss)
