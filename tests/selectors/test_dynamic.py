"""DynamicPseudoLabelSelector against the paper's bilateral consensus, and the exact shortcut."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga import ClassCentroids, DynamicPseudoLabelSelector
from diga.selectors import bilinear_argmax

C, D = 6, 8


def paper_select(pseudo, feats, centroids, ignore_index=255):
    """The paper's self-training step: per-class norm, softmax(-d), upsample, argmax, compare."""
    n, _, h, w = feats.shape
    dist = torch.empty(n, centroids.shape[0], h, w, dtype=feats.dtype)
    for i in range(centroids.shape[0]):
        dist[:, i] = torch.norm(centroids[i].reshape(-1, 1, 1).expand(-1, h, w) - feats, 2, dim=1)
    weights = F.softmax(-dist, dim=1)
    weights = F.interpolate(weights, size=pseudo.shape[-2:], mode="bilinear", align_corners=True)
    feat_pseudo = weights.max(1, keepdim=True)[1].squeeze(1)
    out = pseudo.clone()
    out[pseudo != feat_pseudo] = ignore_index
    return out


def smooth_features(gen, b=2, h=16, w=28, d=D):
    """Spatially smooth features (large same-class regions), like a real decoder's."""
    coarse = torch.randn(b, d, 4, 7, generator=gen) * 3
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


class TestDynamicPseudoLabelSelector:
    @pytest.mark.parametrize("shortcut", [True, False])
    @pytest.mark.parametrize("smooth", [True, False])
    def test_matches_paper(self, gen, shortcut, smooth):
        cents = torch.randn(C, D, generator=gen) * 3
        feats = smooth_features(gen) if smooth else torch.randn(2, D, 16, 28, generator=gen) * 3
        pseudo = torch.randint(0, C, (2, 128, 224), generator=gen)
        pseudo[:, :10] = 255
        sel = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(cents), shortcut=shortcut)
        assert torch.equal(sel(pseudo, features=feats), paper_select(pseudo, feats, cents))

    def test_pseudo_equal_to_nearest_is_kept(self, gen):
        cents = torch.randn(C, D, generator=gen) * 3
        feats = smooth_features(gen)
        sel = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(cents))
        nearest = sel.nearest_at(feats, (64, 112))
        assert torch.equal(sel(nearest, features=feats), nearest)

    def test_same_resolution(self, gen):
        cents = torch.randn(C, D, generator=gen)
        feats = torch.randn(2, D, 5, 5, generator=gen)
        pseudo = torch.randint(0, C, (2, 5, 5), generator=gen)
        sel = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(cents))
        assert torch.equal(sel(pseudo, features=feats), paper_select(pseudo, feats, cents))

    def test_stats(self, gen):
        cents = torch.randn(C, D, generator=gen)
        feats = smooth_features(gen)
        pseudo = torch.randint(0, C, (2, 32, 56), generator=gen)
        sel = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(cents))
        out, stats = sel(pseudo, features=feats, return_stats=True)
        kept = (out != 255).float().mean()
        torch.testing.assert_close(stats.kept, kept.to(stats.kept.dtype))
        for c in range(C):
            m = pseudo == c
            if m.any():
                torch.testing.assert_close(
                    stats.kept_per_class[c], ((out == c) & m).sum() / m.sum().float()
                )

    def test_follows_centroid_bank(self, gen):
        bank = ClassCentroids.from_tensor(torch.zeros(2, 1))
        sel = DynamicPseudoLabelSelector(bank)
        feats = torch.ones(1, 1, 2, 2)
        pseudo = torch.ones(1, 2, 2, dtype=torch.long)
        assert (sel(pseudo, features=feats) == 255).all()  # tie between equal centroids: class 0 wins
        bank.centroids[1] = 1.0
        assert (sel(pseudo, features=feats) == 1).all()

    def test_device(self, gen, device):
        bank = ClassCentroids.from_tensor(torch.randn(C, D, generator=gen)).to(device)
        sel = DynamicPseudoLabelSelector(bank)
        out = sel(torch.zeros(1, 8, 8, dtype=torch.long, device=device), features=torch.randn(1, D, 4, 4).to(device))
        assert out.device.type == device.type

    @pytest.mark.parametrize(
        "pseudo, feats, match",
        [
            (torch.zeros(2, 8, 8), torch.zeros(2, D, 4, 4), "pseudo_labels"),
            (torch.full((2, 8, 8), C), torch.zeros(2, D, 4, 4), "pseudo_labels"),
            (torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(2, D, 4, 4), "batch"),
            (torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, D + 1, 4, 4), "features"),
        ],
    )
    def test_bad_input(self, pseudo, feats, match):
        sel = DynamicPseudoLabelSelector(ClassCentroids.from_tensor(torch.zeros(C, D)))
        with pytest.raises(ValueError, match=match):
            sel(pseudo, features=feats)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="centroids"):
            DynamicPseudoLabelSelector(torch.zeros(3, 2))
        with pytest.raises(ValueError, match="shortcut"):
            DynamicPseudoLabelSelector(ClassCentroids(2, 2), shortcut="yes")


class TestBilinearArgmax:
    @pytest.mark.parametrize("size", [(64, 112), (50, 61), (7, 9), (1, 1), (128, 5)])
    @pytest.mark.parametrize("align_corners", [True, False])
    def test_equals_full_upsample(self, gen, size, align_corners):
        scores = torch.randn(2, 7, 8, 14, generator=gen)
        full = F.interpolate(scores, size=size, mode="bilinear", align_corners=align_corners).argmax(1)
        assert torch.equal(bilinear_argmax(scores, size, align_corners=align_corners), full)

    def test_single_pixel_input(self, gen):
        scores = torch.randn(1, 3, 1, 1, generator=gen)
        out = bilinear_argmax(scores, (4, 5))
        assert (out == scores.argmax(1)).all()


def test_bilinear_argmax_float64_and_ties():
    # Exact ties between classes resolve to the lowest index, as argmax does.
    scores = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    scores[0, 1] = 1.0
    scores[0, 2] = 1.0
    assert (bilinear_argmax(scores, (5, 7)) == 1).all()
    g = torch.Generator().manual_seed(4)
    s64 = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    full = F.interpolate(s64, (40, 56), mode="bilinear", align_corners=True).argmax(1)
    assert torch.equal(bilinear_argmax(s64, (40, 56)), full)
