"""Image translation (DiGA's stage 0) in one place: the ``Translator`` protocol, Fourier
translation, the learned translator's networks (with the VGG19 feature network), its
losses and its checkpoints. The trainer is :func:`diga.engine.train_translator`."""

from diga.translation.checkpoint import (
    CHECKPOINT_FORMAT,
    generator_from_checkpoint,
    generator_from_state,
    save_translator,
    translator_checkpoint,
)
from diga.translation.fourier import FourierTranslator, fourier_translate
from diga.translation.learned import LearnedTranslator
from diga.translation.losses import (
    PAPER_LAYER_WEIGHTS,
    LSGANLoss,
    PerceptualLoss,
    ReconstructionLoss,
    SemanticEdgeLoss,
    lsgan_loss,
    perceptual_loss,
    reconstruction_loss,
    semantic_edge_loss,
    semantic_edge_mask,
)
from diga.translation.networks import (
    VGG19_PAPER_LAYERS,
    MultiScaleDiscriminator,
    TranslatorDecoder,
    TranslatorEncoder,
    TranslatorGenerator,
    VGG19Features,
    vgg19_features,
)
from diga.translation.protocol import IdentityTranslator, Translator

__all__ = [
    "CHECKPOINT_FORMAT",
    "PAPER_LAYER_WEIGHTS",
    "VGG19_PAPER_LAYERS",
    "FourierTranslator",
    "IdentityTranslator",
    "LSGANLoss",
    "LearnedTranslator",
    "MultiScaleDiscriminator",
    "PerceptualLoss",
    "ReconstructionLoss",
    "SemanticEdgeLoss",
    "Translator",
    "TranslatorDecoder",
    "TranslatorEncoder",
    "TranslatorGenerator",
    "VGG19Features",
    "fourier_translate",
    "generator_from_checkpoint",
    "generator_from_state",
    "lsgan_loss",
    "perceptual_loss",
    "reconstruction_loss",
    "save_translator",
    "semantic_edge_loss",
    "semantic_edge_mask",
    "translator_checkpoint",
    "vgg19_features",
]
