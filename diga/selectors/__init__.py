"""Pseudo-label selection: class centroids, DiGA's dynamic selector, threshold baselines."""

from diga.selectors._upsample import bilinear_argmax
from diga.selectors.base import PseudoLabelSelector
from diga.selectors.centroids import ClassCentroids, init_centroids
from diga.selectors.collapse import ClassShareMonitor, ShareStats
from diga.selectors.dynamic import DynamicPseudoLabelSelector
from diga.selectors.stats import SelectionStats, kept_fractions
from diga.selectors.threshold import (
    ClassBalancedSelector,
    ConfidenceThresholdSelector,
    pseudo_label_confidence,
)

__all__ = [
    "ClassBalancedSelector",
    "ClassCentroids",
    "ClassShareMonitor",
    "ConfidenceThresholdSelector",
    "DynamicPseudoLabelSelector",
    "PseudoLabelSelector",
    "SelectionStats",
    "ShareStats",
    "bilinear_argmax",
    "init_centroids",
    "kept_fractions",
    "pseudo_label_confidence",
]
