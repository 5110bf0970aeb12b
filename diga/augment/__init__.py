"""Augmentations: class-mix masks, cross-domain mixture, strong photometric (translators: :mod:`diga.translation`)."""

from diga.augment.block_mask import block_mask, mask_images
from diga.augment.class_mix import CrossDomainMix, class_mix_mask, mix_by_mask
from diga.augment.photometric import StrongPhotometric, strong_photometric

__all__ = [
    "CrossDomainMix",
    "StrongPhotometric",
    "block_mask",
    "class_mix_mask",
    "mask_images",
    "mix_by_mask",
    "strong_photometric",
]
