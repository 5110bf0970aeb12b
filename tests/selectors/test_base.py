"""One call for every selector: ``selector(pseudo_labels, *, features=None, logits=None)``."""

from __future__ import annotations

import pytest
import torch

from diga import (
    ClassBalancedSelector,
    ClassCentroids,
    ConfidenceThresholdSelector,
    DynamicPseudoLabelSelector,
    PseudoLabelSelector,
)

C, D = 3, 4


def selectors():
    bank = ClassCentroids.from_tensor(torch.randn(C, D, generator=torch.Generator().manual_seed(0)))
    return [DynamicPseudoLabelSelector(bank), ConfidenceThresholdSelector(threshold=0.5),
            ClassBalancedSelector(portion=0.5)]


@pytest.mark.parametrize("selector", selectors(), ids=lambda s: type(s).__name__)
def test_every_selector_takes_the_same_keywords(selector):
    g = torch.Generator().manual_seed(1)
    pseudo = torch.randint(0, C, (2, 8, 8), generator=g)
    feats, logits = torch.randn(2, D, 4, 4, generator=g), torch.randn(2, C, 4, 4, generator=g)
    assert isinstance(selector, PseudoLabelSelector)
    out, stats = selector(pseudo, features=feats, logits=logits, return_stats=True)
    assert out.shape == pseudo.shape and stats.kept_per_class.shape == (C,)
    with pytest.raises(TypeError):
        selector(pseudo, feats)  # inputs are keyword-only: no order to get wrong
    needed = "features" if isinstance(selector, DynamicPseudoLabelSelector) else "logits"
    with pytest.raises(ValueError, match=f"`{needed}` is required by {type(selector).__name__}"):
        selector(pseudo, **({"logits": logits} if needed == "features" else {"features": feats}))


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        ConfidenceThresholdSelector(0.9)
    with pytest.raises(TypeError):
        ClassBalancedSelector(0.5)
