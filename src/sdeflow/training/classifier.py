"""The noise-conditional classifier p(y | x_t, t) of classifier guidance as a training
program: cross-entropy on forward-noised data x_t = s x0 + σ ε at noise levels log-uniform over
the whole trajectory (:func:`~sdeflow.guidance.classifier.sample_noise_levels`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data import list_vector_data
from ..guidance.classifier import NoisyClassifier, sample_noise_levels
from ..models.classifier import build_classifier, list_classifiers
from ..sde import get_sde, list_sdes
from .config import EngineConfig
from .engine import Trainer, train
from .objective import Objective, register_objective

__all__ = ["ClassifierConfig", "NoisyClassification", "train_classifier", "load_classifier"]


@dataclass
class ClassifierConfig(EngineConfig):
    """A noise-conditional classifier run (defaults differ from a score model's: digits, an
    encoder network, no gradient clipping)."""

    KIND = "classifier"

    data: str = "digits"
    model: str = "encoder"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float = 0.0
    ema_decay: float = 0.999
    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    sigma_data: float = 0.5

    def checks(self) -> list[tuple[bool, str]]:
        return super().checks() + [
            (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
            (self.model in list_classifiers(), f"model {self.model!r} not in {list_classifiers()}"),
            ((self.model == "mlp") == (self.data in list_vector_data()),
             "use model 'mlp' for toy data and 'encoder' for images"),
            (self.sigma_data > 0, "sigma_data must be positive")]

    def resolve_model(self, data, fresh: bool) -> None:
        if not self.num_classes or getattr(data, "y", None) is None:
            raise ValueError(f"data {self.data!r} has no labels to train a classifier on")
        self.model_kwargs.setdefault("num_classes", self.num_classes)


@register_objective
class NoisyClassification(Objective):
    """Cross-entropy of ``classifier(x_t, t)`` against the labels; reports the accuracy."""

    Config = ClassifierConfig
    how_to_train = "train one with `sdeflow train-classifier`"
    exports = "classifier"
    metrics = ("accuracy",)

    @classmethod
    def build(cls, cfg: ClassifierConfig) -> dict[str, nn.Module]:
        clf = NoisyClassifier(build_classifier(cfg.model, **cfg.model_kwargs),
                              get_sde(cfg.sde, **cfg.sde_kwargs), cfg.sigma_data)
        clf.num_classes = cfg.num_classes
        return {"model": clf}

    def __init__(self, cfg: ClassifierConfig, data):
        super().__init__(cfg, data)
        self.sde = get_sde(cfg.sde, **cfg.sde_kwargs)

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        x0, y = self.data.draw(n, generator)
        t = sample_noise_levels(self.sde, n, generator)
        return dict(x0=x0, y=y, t=t, eps=torch.randn(x0.shape, generator=generator))

    def loss(self, nets, batch, generator):
        clf, y = nets["model"], batch["y"].long()
        xt = self.sde.marginal(batch["x0"], batch["t"], batch["eps"])
        logits = clf(xt, batch["t"])
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        return F.cross_entropy(logits, y), dict(accuracy=accuracy)


def train_classifier(cfg: ClassifierConfig, run_dir, *, resume: bool = False,
                     progress: bool = True, device=None) -> NoisyClassifier:
    """Train (or, with ``resume``, continue) a classifier run; returns the EMA classifier."""
    st: Trainer = train(cfg, run_dir, resume=resume, progress=progress, device=device)
    return st.ema_model.eval()


def load_classifier(path, device=None) -> NoisyClassifier:
    """The EMA classifier of a run directory or checkpoint folder."""
    from ..loading import load
    return load(path, kind="classifier", device=device)[0]
