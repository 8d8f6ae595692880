"""An MLP score/denoiser network for low-dimensional data, with a time embedding.

The network sees ``c_noise(t)`` = ¼ log σ̃(t) (the EDM noise conditioning, well scaled for every
SDE) when built through :func:`sdeflow.models.build_model`; used bare it takes whatever scalar
it is given.
"""
from __future__ import annotations

from torch import Tensor, nn

from .args import (EMBEDDING, NONNEGATIVE_INT, OPTIONAL_POSITIVE_INT, POSITIVE_INT, Relation,
                   checked_args)
from .embeddings import FourierEmbedding, SinusoidalEmbedding

__all__ = ["MLP"]


class MLP(nn.Module):
    """x (B, D), c (B,) → (B, D) (or (B, out_dim)): residual SiLU blocks, the time embedding
    added to each block."""

    @checked_args("mlp", dict(dim=POSITIVE_INT, hidden=POSITIVE_INT, depth=NONNEGATIVE_INT,
                              emb_dim=POSITIVE_INT, embedding=EMBEDDING,
                              out_dim=OPTIONAL_POSITIVE_INT),
                  Relation("emb_dim", lambda a: a["emb_dim"] % 2 == 0, lambda a: "even"))
    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 64,
                 embedding: str = "fourier", out_dim: int | None = None):
        super().__init__()
        self.emb = (FourierEmbedding(emb_dim, scale=1.0) if embedding == "fourier"
                    else SinusoidalEmbedding(emb_dim, scale=100.0))
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out_dim or dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        e = self.emb_mlp(self.emb(c).to(x.dtype))
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)
