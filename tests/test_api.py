"""The API style: module constructors take their settings keyword-only."""

from __future__ import annotations

import pytest
import torch

import diga


@pytest.mark.parametrize(
    "make",
    [
        lambda: diga.EMATeacher(torch.nn.Conv2d(3, 3, 1), 0.9),
        lambda: diga.CrossDomainMix(255),
        lambda: diga.StrongPhotometric(0.4),
        lambda: diga.ConfusionMatrix(3, 255),
        lambda: diga.SegmentationCELoss(255),
        lambda: diga.SymmetricKDLoss(0.5),
        lambda: diga.ClassCentroids(3, 4, 1e-4),
        lambda: diga.ConfidenceThresholdSelector(0.9),
    ],
)
def test_settings_are_keyword_only(make):
    with pytest.raises(TypeError):
        make()
