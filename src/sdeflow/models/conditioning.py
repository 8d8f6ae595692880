"""What image networks share: the conditioning vector built from the noise input c (time or
c_noise) and an optional class label, and the GroupNorm group count.

Class labels are integers in [0, num_classes); the extra index ``num_classes`` is the *null*
label (classifier-free guidance trains on it with probability p_uncond); ``class_labels=None``
means null for the whole batch.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import FourierEmbedding, SinusoidalEmbedding

__all__ = ["ConditionEmbedding", "norm_groups", "time_embedding"]


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count ≤ max_groups that divides ``channels`` with ≥ 4 channels per group."""
    for g in range(min(max_groups, max(1, channels // 4)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def time_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    if kind == "fourier":
        return FourierEmbedding(dim, scale=16.0 if scale is None else scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, scale=1000.0 if scale is None else scale)
    raise ValueError(f"unknown embedding {kind!r}; choices: ['fourier', 'sinusoidal']")


class ConditionEmbedding(nn.Module):
    """e = MLP(embed(c)) + E[label]: the vector every block is conditioned on."""

    def __init__(self, dim: int, out_dim: int, num_classes: int = 0, kind: str = "fourier",
                 scale: float | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.embed = time_embedding(kind, dim, scale)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.label = nn.Embedding(num_classes + 1, out_dim) if num_classes else None

    def forward(self, c: Tensor, class_labels: Tensor | None = None, dtype=None) -> Tensor:
        e = self.mlp(self.embed(c.reshape(-1)).to(dtype or self.mlp[0].weight.dtype))
        if self.label is None:
            if class_labels is not None:
                raise ValueError("class_labels given to a network built without num_classes")
            return e
        if class_labels is None:
            class_labels = torch.full((e.shape[0],), self.num_classes, device=e.device)
        class_labels = torch.as_tensor(class_labels, device=e.device).long().reshape(-1)
        if class_labels.shape != (e.shape[0],):
            raise ValueError(f"class_labels must have shape ({e.shape[0]},)")
        if ((class_labels < 0) | (class_labels > self.num_classes)).any():
            raise ValueError(f"class labels must lie in [0, {self.num_classes}] "
                             f"({self.num_classes} = unconditional)")
        return e + self.label(class_labels)
