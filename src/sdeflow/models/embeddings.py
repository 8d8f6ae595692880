r"""Time embeddings: sinusoidal (Vaswani et al. 2017, as in DDPM) and random Fourier features
(Tancik et al. 2020, as in NCSN++): :math:`[\sin(2\pi W c), \cos(2\pi W c)]`, W ~ N(0, scale²)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "FourierEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Embed a scalar c (B,) into ``dim`` features with geometric frequencies 1 … 1/max_period."""

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))
        self.scale = scale

    def forward(self, c: Tensor) -> Tensor:
        arg = self.scale * c[:, None].to(self.freqs.dtype) * self.freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (fixed, not trained)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, c: Tensor) -> Tensor:
        arg = 2 * math.pi * c[:, None].to(self.W.dtype) * self.W[None]
        return torch.cat([arg.sin(), arg.cos()], dim=1)
