"""Controllable generation from score models: classifier and classifier-free guidance.

Guided models are :class:`~sdeflow.Denoiser` s, so every sampler works on them.
"""
from .base import GuidedDenoiser, shift_score
from .cfg import ClassifierFreeGuidance
from .classifier import ClassifierGuidance, NoisyClassifier, classifier_accuracy, sample_noise_levels

__all__ = ["GuidedDenoiser", "shift_score", "ClassifierFreeGuidance", "ClassifierGuidance",
           "NoisyClassifier", "ClassifierConfig", "train_classifier", "load_classifier",
           "sample_noise_levels", "classifier_accuracy"]


def __getattr__(name):
    # the classifier's training program lives with the training engine, which imports this
    # package: importing it here lazily keeps the two free of an import cycle
    if name in ("ClassifierConfig", "train_classifier", "load_classifier"):
        from ..training import classifier
        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
