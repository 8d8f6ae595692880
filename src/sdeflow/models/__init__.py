"""Network registry: ``build_model(name, **kwargs)`` picks an architecture by name."""
from __future__ import annotations

from torch import nn

from .mlp import MLP

__all__ = ["MLP", "build_model", "list_models"]

_MODELS: dict[str, type[nn.Module]] = {"mlp": MLP}


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choices: {list_models()}")
    return _MODELS[name](**kwargs)
