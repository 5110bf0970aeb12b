"""class_mix_mask and CrossDomainMix against the paper's per-sample, per-class loops."""

from __future__ import annotations

import pytest
import torch

from diga import CrossDomainMix, class_mix_mask


def paper_mask_from_classes(labels, chosen, ignore_index=255):
    """The paper's construction: mask[label == c] = 1 for every chosen class, plus ignore."""
    mask = torch.zeros(labels.shape, dtype=torch.bool)
    for b in range(labels.shape[0]):
        for c in list(chosen[b]) + [ignore_index]:
            mask[b][labels[b] == c] = True
    return mask


def random_labels(gen, b=4, h=12, w=10, c=19, p_ignore=0.1):
    labels = torch.randint(0, c, (b, h, w), generator=gen)
    labels[torch.rand(b, h, w, generator=gen) < p_ignore] = 255
    return labels


class TestClassMixMask:
    def test_half_of_present_classes(self, gen):
        labels = random_labels(gen)
        # Drop some classes from some samples so counts differ per sample.
        labels[1][labels[1] > 10] = 3
        labels[2][labels[2] > 2] = 255
        mask = class_mix_mask(labels, generator=gen, num_classes=19)
        for b in range(labels.shape[0]):
            present = set(labels[b][labels[b] != 255].unique().tolist())
            chosen = set(labels[b][mask[b] & (labels[b] != 255)].unique().tolist())
            assert chosen <= present
            assert len(chosen) == len(present) // 2
            # No partial class: a chosen class is pasted everywhere it occurs.
            for c in present:
                sel = mask[b][labels[b] == c]
                assert sel.all() or (~sel).all()
            assert mask[b][labels[b] == 255].all()
        chosen = [labels[b][mask[b] & (labels[b] != 255)].unique().tolist() for b in range(4)]
        assert torch.equal(mask, paper_mask_from_classes(labels, chosen))

    def test_each_class_chosen_about_half_the_time(self):
        # Four classes present in one image: each chosen with probability 2/4 = 0.5.
        labels = torch.tensor([[[0, 1], [2, 3]]]).expand(2000, 2, 2).contiguous()
        mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(1), num_classes=4)
        freq = mask.float().mean(0).flatten()
        # 2000 draws: std of the mean is about 0.011; 5 sigma.
        assert torch.allclose(freq, torch.full((4,), 0.5), atol=0.056)
        assert (mask.sum(dim=(1, 2)) == 2).all()
        # Each of the 6 pairs comes up about 1/6 of the time (uniform subsets).
        codes = (mask.reshape(2000, 4).long() * torch.tensor([1, 2, 4, 8])).sum(1)
        counts = torch.bincount(codes, minlength=16)[[3, 5, 6, 9, 10, 12]].float() / 2000
        assert torch.allclose(counts, torch.full((6,), 1 / 6), atol=0.05)

    def test_three_classes_keep_one(self):
        labels = torch.tensor([[[0, 1, 2]]]).expand(600, 1, 3).contiguous()
        mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(2))
        assert (mask.sum(dim=(1, 2)) == 1).all()
        assert torch.allclose(mask.float().mean(0).flatten(), torch.full((3,), 1 / 3), atol=0.07)

    def test_one_class_pastes_only_ignore(self):
        labels = torch.tensor([[[5, 5], [255, 5]]])
        mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(0))
        assert mask.tolist() == [[[False, False], [True, False]]]

    def test_all_ignore_is_all_true(self):
        labels = torch.full((2, 3, 3), 255)
        assert class_mix_mask(labels, num_classes=19).all()

    def test_seeded_determinism(self):
        labels = random_labels(torch.Generator().manual_seed(0))
        a = class_mix_mask(labels, generator=torch.Generator().manual_seed(7))
        b = class_mix_mask(labels, generator=torch.Generator().manual_seed(7))
        c = class_mix_mask(labels, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)

    @pytest.mark.parametrize("ignore_index", [255, -1, 3])
    def test_several_masks_are_calls_in_a_row(self, gen, ignore_index, device):
        labels = random_labels(gen)
        labels = labels.masked_fill(labels == 255, ignore_index).to(device)
        kw = dict(ignore_index=ignore_index, num_classes=19)
        for gen_device in {"cpu", device.type}:  # a CPU generator; on a GPU also one there (its own draws)
            g1, g2 = (torch.Generator(device=gen_device).manual_seed(3) for _ in range(2))
            calls = torch.stack([class_mix_mask(labels, generator=g1, **kw) for _ in range(3)])
            masks = class_mix_mask(labels, generator=g2, num_masks=3, **kw)
            assert masks.shape == (3, *labels.shape) and torch.equal(masks, calls)
            # the same draws used
            assert torch.equal(torch.rand(4, generator=g1, device=gen_device),
                               torch.rand(4, generator=g2, device=gen_device))
        with pytest.raises(ValueError, match="num_masks"):
            class_mix_mask(labels, num_masks=0, **kw)

    def test_device(self, device, gen):
        labels = random_labels(gen).to(device)
        mask = class_mix_mask(labels, generator=torch.Generator().manual_seed(0), num_classes=19)
        assert mask.device.type == device.type and mask.dtype == torch.bool

    def test_other_ignore_index(self):
        labels = torch.tensor([[[-1, 0], [1, -1]]])
        mask = class_mix_mask(labels, ignore_index=-1, num_classes=2, generator=torch.Generator())
        assert mask[0, 0, 0] and mask[0, 1, 1] and int(mask.sum()) == 3

    @pytest.mark.parametrize(
        "labels, kwargs, match",
        [
            (torch.zeros(2, 2), {}, "labels"),
            (torch.zeros(1, 2, 2), {}, "integer"),
            (torch.zeros(0, 2, 2, dtype=torch.long), {}, "empty"),
            (torch.full((1, 2, 2), 19), {"num_classes": 19}, "labels"),
            (torch.full((1, 2, 2), -3), {}, "labels"),
            (torch.zeros(1, 2, 2, dtype=torch.long), {"num_classes": 0}, "num_classes"),
        ],
    )
    def test_bad_input(self, labels, kwargs, match):
        with pytest.raises(ValueError, match=match):
            class_mix_mask(labels, **kwargs)


class TestCrossDomainMix:
    def test_warmup_use_one_label_map(self, gen):
        labels = random_labels(gen, b=3)
        pasted, background = torch.rand(2, 3, 3, 12, 10, generator=gen)
        mixed, mixed_labels, mask = CrossDomainMix(num_classes=19)(
            pasted, background, labels, generator=gen
        )
        assert torch.equal(mixed_labels, labels)
        for b in range(3):  # the paper's per-sample composition
            ref = background[b] * (~mask[b]) + pasted[b] * mask[b]
            torch.testing.assert_close(mixed[b], ref)

    def test_self_training_use_mixes_labels(self, gen):
        src_lbl = random_labels(gen, b=2)
        tgt_lbl = random_labels(gen, b=2)
        src, tgt = torch.rand(2, 2, 3, 12, 10, generator=gen)
        mixed, mixed_lbl, mask = CrossDomainMix()(src, tgt, src_lbl, tgt_lbl, generator=gen)
        ref = tgt_lbl.clone()
        ref[mask] = src_lbl[mask]
        assert torch.equal(mixed_lbl, ref)
        assert torch.equal(mixed[:, :, mask[0]][0], src[0][:, mask[0]])

    def test_given_mask(self, gen):
        labels = random_labels(gen, b=1)
        mask = torch.zeros(1, 12, 10, dtype=torch.bool)
        mask[:, :6] = True
        a, b = torch.rand(2, 1, 3, 12, 10, generator=gen)
        mixed, _, out_mask = CrossDomainMix()(a, b, labels, mask=mask)
        assert out_mask is mask
        assert torch.equal(mixed[:, :, :6], a[:, :, :6]) and torch.equal(mixed[:, :, 6:], b[:, :, 6:])

    def test_all_ignore_source_is_defined(self):
        labels = torch.full((2, 4, 4), 255)
        a, b = torch.rand(2, 2, 3, 4, 4)
        mixed, mixed_lbl, mask = CrossDomainMix(num_classes=19)(a, b, labels)
        assert torch.equal(mixed, a) and mask.all() and (mixed_lbl == 255).all()

    def test_low_precision(self, gen, low_dtype):
        labels = random_labels(gen, b=2)
        a, b = torch.rand(2, 2, 3, 12, 10, generator=gen).to(low_dtype)
        mixed, _, _ = CrossDomainMix(num_classes=19)(a, b, labels, generator=gen)
        assert mixed.dtype == low_dtype

    @pytest.mark.parametrize(
        "pasted, background, labels, bg_labels, mask, match",
        [
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5), torch.zeros(1, 4, 4).long(), None, None,
             "background"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.zeros(2, 4, 4).long(), None, None,
             "batch"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 5).long(), None, None,
             "spatial"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4).long(),
             torch.zeros(1, 4, 3).long(), None, "background_labels"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4).long(), None,
             torch.zeros(1, 4, 4), "mask"),
            (torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4).long(), None, None,
             "pasted"),
            (torch.full((1, 3, 4, 4), float("nan")), torch.rand(1, 3, 4, 4), torch.full((1, 4, 4), 255), None,
             None, "pasted"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.full((1, 4, 4), -3), None, None,
             "pasted_labels"),
        ],
    )
    def test_bad_input(self, pasted, background, labels, bg_labels, mask, match):
        with pytest.raises(ValueError, match=match):
            CrossDomainMix()(pasted, background, labels, bg_labels, mask)
