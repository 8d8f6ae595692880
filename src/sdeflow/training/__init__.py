"""One training engine for every training program.

A program is an :class:`Objective` (its networks, its batch, its loss) with a typed config;
:func:`train` runs any of them. Built in: score matching (:class:`TrainConfig`) and the
noise-conditional classifier of classifier guidance (:class:`ClassifierConfig`).
"""
from .config import PRECISIONS, EngineConfig
from .engine import Trainer, train
from .objective import Objective, get_objective, list_objectives, register_objective
from .score import ScoreMatching, TrainConfig, build_denoiser
from .classifier import ClassifierConfig, NoisyClassification, load_classifier, train_classifier

__all__ = ["EngineConfig", "PRECISIONS", "Trainer", "train", "Objective", "register_objective",
           "get_objective", "list_objectives", "TrainConfig", "ScoreMatching", "build_denoiser",
           "ClassifierConfig", "NoisyClassification", "train_classifier", "load_classifier"]
