"""Controllable generation from score models: classifier and classifier-free guidance.

Guided models are :class:`~sdeflow.Denoiser` s, so every sampler works on them.
"""
from .base import GuidedDenoiser, shift_score
from .cfg import ClassifierFreeGuidance
from .classifier import (ClassifierConfig, ClassifierGuidance, NoisyClassifier, classifier_accuracy,
                         load_classifier, sample_noise_levels, train_classifier)

__all__ = ["GuidedDenoiser", "shift_score", "ClassifierFreeGuidance", "ClassifierGuidance",
           "NoisyClassifier", "ClassifierConfig", "train_classifier", "load_classifier",
           "sample_noise_levels", "classifier_accuracy"]
