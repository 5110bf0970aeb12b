"""Semi-supervised splits: the scripts' counts, seeded, disjoint; bad fractions refused."""

from __future__ import annotations

import pytest

from diga.data.splits import labelled_split, parse_fraction


class TestLabelledSplit:
    @pytest.mark.parametrize("fraction,count", [("1/16", 186), ("1/8", 372), ("1/4", 744), ("1/2", 1488),
                                                (1.0, 2975)])
    def test_counts_of_the_semi_supervised_scripts(self, fraction, count):
        labelled, unlabelled = labelled_split(2975, fraction, seed=0)
        assert len(labelled) == count and len(unlabelled) == 2975 - count
        assert sorted(labelled + unlabelled) == list(range(2975))
        assert labelled == sorted(labelled) and unlabelled == sorted(unlabelled)

    def test_seeded(self):
        assert labelled_split(100, 0.1, seed=3) == labelled_split(100, "1/10", seed=3)
        assert labelled_split(100, 0.1, seed=3)[0] != labelled_split(100, 0.1, seed=4)[0]

    def test_draws_are_uniform(self):
        hits = [0] * 20
        for seed in range(400):
            for i in labelled_split(20, "1/4", seed=seed)[0]:
                hits[i] += 1
        assert all(60 <= h <= 140 for h in hits)  # 100 expected per item (5 of 20, 400 draws)

    def test_at_least_one_labelled(self):
        assert len(labelled_split(3, "1/16")[0]) == 1

    @pytest.mark.parametrize("bad", ["0", "1/0", "2", "half", -0.5, True, None])
    def test_bad_fraction(self, bad):
        with pytest.raises(ValueError, match="fraction"):
            labelled_split(10, bad)

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True])
    def test_bad_size(self, bad):
        with pytest.raises(ValueError, match="num_items"):
            labelled_split(bad, 0.5)

    def test_parse_fraction_names_the_flag(self):
        with pytest.raises(ValueError, match="--split"):
            parse_fraction("1/17x", "--split")
