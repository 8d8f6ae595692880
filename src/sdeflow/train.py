"""Score-model training, as ``sdeflow.train`` has always offered it: the names below are the
score-matching program of the training engine (:mod:`sdeflow.training`)."""
from __future__ import annotations

from .denoiser import Denoiser
from .training import PRECISIONS, TrainConfig, Trainer, build_denoiser, train

__all__ = ["TrainConfig", "TrainState", "train", "load_denoiser", "build_denoiser", "PRECISIONS"]

TrainState = Trainer


def load_denoiser(path, ema: bool = True, device=None) -> tuple[Denoiser, TrainConfig]:
    """The trained score model of a run directory or checkpoint folder (EMA weights by
    default) and its config: ``sdeflow.load(path, kind="score")``."""
    from .loading import load
    return load(path, ema=ema, device=device, kind="score")
