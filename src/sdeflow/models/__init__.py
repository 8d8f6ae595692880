"""Network registry: ``build_model(name, **kwargs)`` picks an architecture by name.

``mlp`` for vectors (B, D); ``unet`` (DDPM++/NCSN++ family) and ``dit`` (Diffusion Transformer)
for images (B, C, H, W). Every network is called as ``net(x, c, **cond)`` with c the noise input
the :class:`~sdeflow.Denoiser` passes (t, or c_noise under EDM preconditioning).
"""
from __future__ import annotations

from torch import nn

from .dit import DiT
from .mlp import MLP
from .unet import UNet

__all__ = ["MLP", "UNet", "DiT", "build_model", "list_models", "IMAGE_MODELS"]

_MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "dit": DiT}
IMAGE_MODELS = ("unet", "dit")


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choices: {list_models()}")
    return _MODELS[name](**kwargs)
