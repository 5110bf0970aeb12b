"""Augmentations: class-mix masks, cross-domain mixture, strong photometric, translators."""

from diga.augment.class_mix import CrossDomainMix, class_mix_mask, mix_by_mask
from diga.augment.fourier import FourierTranslator, fourier_translate
from diga.augment.photometric import StrongPhotometric, strong_photometric
from diga.augment.translator import IdentityTranslator, Translator

__all__ = [
    "CrossDomainMix",
    "FourierTranslator",
    "IdentityTranslator",
    "StrongPhotometric",
    "Translator",
    "class_mix_mask",
    "fourier_translate",
    "mix_by_mask",
    "strong_photometric",
]
