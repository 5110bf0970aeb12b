"""Adapter(setting=...): what DiGA's three settings fix, the auxiliary-head terms and the OHEM loss,
each checked against the paper scripts' composition written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diga import FourierTranslator, OhemCELoss, StrongPhotometric, symmetric_kd_loss
from diga.adapter import SETTINGS, AblationOptions, Adapter, setting_defaults
from diga.losses import resize_logits, segmentation_ce_loss

C = 4


class AuxNet(nn.Module):
    """A tiny segmenter with a main and an auxiliary head (HRNet-OCR's layout: ``{"out", "aux"}``)."""

    def __init__(self, seed: int = 0, aux_classes: int = C) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.aux_head = nn.Conv2d(8, aux_classes, 1)
        self.segmentation_head = nn.Conv2d(8, C, 1)

    def forward(self, x):
        f = self.encoder(x)
        return {"out": self.segmentation_head(f)[..., ::2, ::2], "aux": self.aux_head(f)}


class PlainNet(AuxNet):
    def forward(self, x):
        return self.segmentation_head(self.encoder(x))


def batch(seed=0, b=2, h=16, w=24):
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.rand(2, b, 3, h, w, generator=g)
    lbl = torch.randint(0, C, (b, h, w), generator=g)
    lbl[:, :2] = 255
    return src, lbl, tgt


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


class TestSettings:
    def test_uda_is_the_default_and_unchanged(self):
        ad = Adapter(PlainNet(), C)
        assert ad.setting == "uda" and (ad.kd_weight, ad.st_kd_weight) == (0.5, 0.25)
        assert ad.ablation == AblationOptions() and ad.augment.beta == 0.4 and ad.st_augment.beta == 0.3
        assert "setting" not in repr(ad)

    def test_dg_fixes_the_scripts_warmup(self):
        ad = Adapter(PlainNet(), C, setting="dg")
        assert ad.ablation == AblationOptions(cross_domain_mix=False, mixed_view_ce=False)
        assert ad.kd_weight == 0.5 and ad.translator is None and ad.st_augment is None
        assert ad.augment.params["sharpness_p"] == 0.0 and ad.augment.beta == 0.4  # the DG script's extra_aug
        assert "setting='dg'" in repr(ad)

    def test_dg_warmup_is_ce_on_clean_plus_half_kd_over_the_augmented_source(self):
        src, lbl, _ = batch()
        ad = Adapter(PlainNet(), C, setting="dg").train()
        out = ad.warmup_step(src, lbl, generator=gen())
        augmented = StrongPhotometric(beta=0.4, sharpness_p=0.0)(src, generator=gen())
        torch.testing.assert_close(out.images["mixed"], augmented)  # no paste, no translation
        views = torch.cat([src, augmented])
        s_logits, _ = ad.student(views)
        t_logits, _ = ad.teacher(views)
        ce = segmentation_ce_loss(s_logits[:2], lbl)
        kd = symmetric_kd_loss(resize_logits(s_logits, lbl.shape[-2:]), resize_logits(t_logits, lbl.shape[-2:]))
        torch.testing.assert_close(out.loss, (ce + 0.5 * kd).detach())
        assert sorted(out.parts) == ["ce", "kd", "loss"]

    def test_dg_has_no_target_and_no_self_training(self):
        src, lbl, tgt = batch()
        ad = Adapter(PlainNet(), C, setting="dg")
        with pytest.raises(ValueError, match="target_images"):
            ad.warmup_step(src, lbl, tgt)
        with pytest.raises(ValueError, match="self_training_step"):
            ad.self_training_step(src, lbl, tgt, lbl)
        with pytest.raises(ValueError, match="init_centroids"):
            ad.init_centroids([src])
        with pytest.raises(ValueError, match="online_pseudo_labels"):
            ad.online_pseudo_labels(tgt)
        with pytest.raises(ValueError, match="translator"):
            Adapter(PlainNet(), C, setting="dg", translator=FourierTranslator())

    def test_every_argument_overrides_the_setting(self):
        ablation = AblationOptions(cross_domain_mix=False, mixed_view_ce=True)
        aug = StrongPhotometric(beta=0.2)
        ad = Adapter(PlainNet(), C, setting="dg", kd_weight=0.0, ablation=ablation, augment=aug)
        assert ad.kd_weight == 0.0 and ad.ablation is ablation and ad.augment is aug
        ad = Adapter(PlainNet(), C, setting="ssl", st_kd_weight=0.1, translator=FourierTranslator())
        assert ad.st_kd_weight == 0.1 and ad.translator is not None

    def test_ssl_fixes_the_scripts_weights(self):
        ad = Adapter(PlainNet(), C, setting="ssl")
        assert (ad.kd_weight, ad.st_kd_weight) == (0.5, 0.5) and ad.translator is None
        assert ad.augment.beta == 0.4 and ad.st_augment.beta == 0.4
        assert ad.ablation == AblationOptions(cross_domain_mix=False, mixed_view_ce=False)

    def test_ssl_self_training_distils_across_the_augmented_labelled_view(self):
        """The scripts' second labelled view in self-training is the augmented image itself (no paste);
        the unlabelled image gets the labelled image's classes pasted on (DACS); KD at 0.5."""
        src, lbl, tgt = batch()
        ad = Adapter(PlainNet(), C, setting="ssl").train()
        ad.init_centroids([tgt])
        pseudo = torch.randint(0, C, lbl.shape, generator=gen(3))
        out = ad.self_training_step(src, lbl, tgt, pseudo, generator=gen())
        g = gen()
        source_aug = StrongPhotometric(beta=0.4)(src, generator=g)
        target_aug = StrongPhotometric(beta=0.4)(tgt, generator=g)
        torch.testing.assert_close(out.images["mixed_source"], source_aug)
        torch.testing.assert_close(out.images["target_augmented"], target_aug)
        torch.testing.assert_close(out.loss, out.parts["ce_source"] + out.parts["ce_mix"] + 0.5 * out.parts["kd"])
        dacs = out.images["dacs"]
        from_source = (dacs == src).all(1)
        assert ((dacs == target_aug).all(1) | from_source).all() and from_source.any()  # a paste, no blend
        assert torch.equal(out.images["dacs_labels"][from_source & (lbl != 255)], lbl[from_source & (lbl != 255)])

    def test_uda_self_training_keeps_the_cross_domain_mix(self):
        src, lbl, tgt = batch()
        ad = Adapter(PlainNet(), C, translator=FourierTranslator(beta=0.05)).train()
        ad.init_centroids([tgt])
        out = ad.self_training_step(src, lbl, tgt, lbl, generator=gen())
        source_aug = StrongPhotometric(beta=0.3)(src, generator=gen())
        assert not torch.equal(out.images["mixed_source"], source_aug)  # half the classes only are pasted

    def test_bad_setting(self):
        with pytest.raises(ValueError, match="setting"):
            Adapter(PlainNet(), C, setting="semi")
        with pytest.raises(ValueError, match="setting"):
            setting_defaults("UDA")
        assert sorted(SETTINGS) == ["dg", "ssl", "uda"]


class TestAuxiliaryHead:
    def test_warmup_adds_tenth_weighted_aux_ce_and_kd(self):
        src, lbl, tgt = batch()
        ad = Adapter(AuxNet(), C, setting="ssl").train()
        out = ad.warmup_step(src, lbl, generator=gen())
        views = torch.cat([src, out.images["mixed"]])
        s_logits, _, s_aux = ad.student(views, aux=True)
        t_logits, _, t_aux = ad.teacher(views, aux=True)
        size = lbl.shape[-2:]

        def kd(s, t):
            return symmetric_kd_loss(resize_logits(s, size), resize_logits(t, size))

        ce, ce_aux = segmentation_ce_loss(s_logits[:2], lbl), segmentation_ce_loss(s_aux[:2], lbl)
        expected = ce + 0.1 * ce_aux + 0.5 * (kd(s_logits, t_logits) + 0.1 * kd(s_aux, t_aux))
        torch.testing.assert_close(out.loss, expected.detach())
        assert sorted(out.parts) == ["ce", "ce_aux", "kd", "kd_aux", "loss"]
        out.loss.backward()
        assert ad.student.model.aux_head.weight.grad.abs().sum() > 0

    def test_self_training_and_source_only_terms(self):
        src, lbl, tgt = batch()
        ad = Adapter(AuxNet(), C, setting="ssl").train()
        out = ad.source_only_step(src, lbl)
        torch.testing.assert_close(out.loss, out.parts["ce"] + 0.1 * out.parts["ce_aux"])
        ad.init_centroids([tgt])
        out = ad.self_training_step(src, lbl, tgt, lbl, generator=gen())
        p = out.parts
        torch.testing.assert_close(out.loss, p["ce_source"] + 0.1 * p["ce_source_aux"] + p["ce_mix"]
                                   + 0.1 * p["ce_mix_aux"] + 0.5 * (p["kd"] + 0.1 * p["kd_aux"]))
        im = out.images  # one student forward over [source; its augmented view; DACS mix], as the step
        aux = ad.student(torch.cat([src, im["mixed_source"], im["dacs"]]), aux=True)[2]
        torch.testing.assert_close(p["ce_mix_aux"], segmentation_ce_loss(aux[4:], im["dacs_labels"]).detach())
        out.loss.backward()
        assert ad.student.model.aux_head.weight.grad.abs().sum() > 0

    def test_aux_weight_zero_leaves_the_head_out(self):
        src, lbl, _ = batch()
        ad = Adapter(AuxNet(), C, setting="dg", aux_weight=0.0).train()
        out = ad.warmup_step(src, lbl, generator=gen())
        assert sorted(out.parts) == ["ce", "kd", "loss"]
        out.loss.backward()
        assert ad.student.model.aux_head.weight.grad is None

    def test_inference_and_centroids_read_the_main_output(self):
        src, _, _ = batch()
        ad = Adapter(AuxNet(), C)
        logits = ad.predict(src, scales=(1.0,))
        assert logits.shape == (2, C, 16, 24)
        assert ad.centroids.centroids.shape == (C, 8)

    def test_aux_with_other_classes_is_refused(self):
        src, lbl, _ = batch()
        ad = Adapter(AuxNet(aux_classes=C + 1), C).train()
        with pytest.raises(ValueError, match="auxiliary output"):
            ad.warmup_step(src, lbl, generator=gen())
        with pytest.raises(ValueError, match="aux_weight"):
            Adapter(AuxNet(), C, aux_weight=-0.1)


class TestSegLoss:
    def test_ohem_replaces_every_ce_term(self):
        src, lbl, tgt = batch()
        ohem = OhemCELoss(threshold=0.7, min_kept=10)
        ad = Adapter(PlainNet(), C, seg_loss=ohem, ablation=AblationOptions(mixed_view_ce=False)).train()
        out = ad.warmup_step(src, lbl, tgt, generator=gen())
        s_logits, _ = ad.student(torch.cat([src, out.images["mixed"]]))
        torch.testing.assert_close(out.parts["ce"], ohem(s_logits[:2], lbl).detach())
        calls = []

        def spy(logits, labels):
            calls.append(labels.shape)
            return ohem(logits, labels)

        ad = Adapter(PlainNet(), C, seg_loss=spy).train()
        ad.init_centroids([tgt])
        ad.self_training_step(src, lbl, tgt, lbl, generator=gen())
        assert len(calls) == 2  # the source CE and the DACS-mix CE
        with pytest.raises(ValueError, match="seg_loss"):
            Adapter(PlainNet(), C, seg_loss="ohem")
