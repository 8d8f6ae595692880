"""Network registry: ``build_model(name, **kwargs)`` picks an architecture by name.

``mlp`` for vectors (B, D); ``unet`` (DDPM++/NCSN++ family) and ``dit`` (Diffusion Transformer)
for images (B, C, H, W). Every network is called as ``net(x, c, **cond)`` with c the noise input
the :class:`~sdeflow.Denoiser` passes (t, or c_noise under EDM preconditioning).

Arguments are checked against each network's rules (:mod:`.args`) before any tensor is built;
:func:`default_model_kwargs` gives the default architecture for a data shape.
"""
from __future__ import annotations

from torch import nn

from .defaults import default_model_kwargs
from .dit import DiT
from .mlp import MLP
from .unet import UNet

__all__ = ["MLP", "UNet", "DiT", "build_model", "list_models", "default_model_kwargs",
           "IMAGE_MODELS"]

_MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "dit": DiT}
IMAGE_MODELS = ("unet", "dit")


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, **kwargs) -> nn.Module:
    """The network ``name`` built with ``kwargs``; a bad name or value is a one-line
    ValueError naming the argument and what is allowed."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choices: {list_models()}")
    return _MODELS[name](**kwargs)
