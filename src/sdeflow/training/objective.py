"""A training program is an objective: it names its networks and returns the loss for a batch.

The engine (:mod:`sdeflow.training.engine`) owns everything else — optimiser, warm-up,
clipping, AMP, ``torch.compile``, EMA, DDP, the global-batch generator, logging, preview grids,
checkpoints and exact resume. A new program subclasses :class:`Objective`, sets ``Config`` (an
:class:`~sdeflow.training.config.EngineConfig` subclass whose ``KIND`` names its checkpoints)
and registers itself with :func:`register_objective`; ``sdeflow.load`` then loads its runs.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from .config import EngineConfig

__all__ = ["Objective", "register_objective", "get_objective", "list_objectives"]


class Objective:
    """One training program. Subclasses implement :meth:`build`, :meth:`batch` and :meth:`loss`.

    ``trainable`` networks are optimised and get an EMA copy; any other network :meth:`build`
    returns (a teacher, a target network) is held, saved and restored but not optimised.
    ``metrics`` names the extra scalars :meth:`loss` reports (logged beside the loss).
    """

    Config: ClassVar[type[EngineConfig]] = EngineConfig
    trainable: ClassVar[tuple[str, ...]] = ("model",)
    metrics: ClassVar[tuple[str, ...]] = ()
    how_to_train: ClassVar[str] = ""  # for errors: how a user gets a checkpoint of this kind
    # what export() gives: "denoiser" (a Denoiser every sampler takes) or another model type;
    # sdeflow.load(kind="denoiser") accepts every program that exports one
    exports: ClassVar[str] = "denoiser"

    def __init__(self, cfg: EngineConfig, data):
        self.cfg, self.data = cfg, data

    @classmethod
    def build(cls, cfg: EngineConfig) -> dict[str, nn.Module]:
        """The networks of a resolved config (from the config alone: checkpoints rebuild them)."""
        raise NotImplementedError

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Every random draw of one step for the global batch of ``n`` (CPU tensors with a
        leading batch dimension: each rank keeps its slice)."""
        raise NotImplementedError

    def loss(self, nets: dict[str, nn.Module], batch: dict[str, Tensor],
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss, {metric: scalar}) on this rank's slice of the batch; ``nets`` holds
        the views to train through (DDP/compile-wrapped)."""
        raise NotImplementedError

    def initialize(self, nets: dict[str, nn.Module]) -> None:
        """Hook for a fresh run, before the EMA copies are taken (e.g. load a teacher and
        start the student as its copy); a resumed run takes its weights from the checkpoint."""

    def view(self, name: str, net: nn.Module, wrap: Callable[[nn.Module], nn.Module]) -> nn.Module:
        """What :meth:`loss` calls for a trainable network, with ``wrap`` (DDP, compile)
        applied to the module whose ``forward`` carries the parameters."""
        return wrap(net)

    def after_step(self, nets: dict[str, nn.Module], step: int) -> None:
        """Hook after each optimiser and EMA update (e.g. a consistency target's EMA)."""

    @classmethod
    def export(cls, nets: dict[str, nn.Module], cfg: EngineConfig) -> nn.Module:
        """The model users get from a checkpoint (``nets`` hold the EMA weights by default)."""
        return nets["model"]

    def preview(self, model: nn.Module, path: Path, step: int, device) -> Path | None:
        """Save a picture of what the model does now (a sample grid); None if there is none."""
        return None


_OBJECTIVES: dict[str, type[Objective]] = {}
# modules holding the built-in programs, imported on first look-up (they import the engine)
_BUILTIN = ("sdeflow.training.score", "sdeflow.training.classifier",
            "sdeflow.training.progressive", "sdeflow.training.consistency",
            "sdeflow.training.cld", "sdeflow.training.autoencoder")


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make ``cls`` the program for checkpoints of kind ``cls.Config.KIND``."""
    kind = cls.Config.KIND
    if not kind:
        raise ValueError(f"{cls.__name__}.Config needs a KIND")
    if _OBJECTIVES.get(kind, cls) is not cls:
        raise ValueError(f"a training program of kind {kind!r} is already registered")
    _OBJECTIVES[kind] = cls
    return cls


def _load_builtin() -> None:
    for mod in _BUILTIN:
        importlib.import_module(mod)


def list_objectives() -> list[str]:
    """The checkpoint kinds that can be trained and loaded."""
    _load_builtin()
    return sorted(_OBJECTIVES)


def get_objective(kind: str) -> type[Objective]:
    _load_builtin()
    if kind not in _OBJECTIVES:
        raise ValueError(f"unknown training program {kind!r}; choices: {sorted(_OBJECTIVES)}")
    return _OBJECTIVES[kind]
