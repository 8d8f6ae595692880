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
from .text import TEXT_RELATIONS, TEXT_RULES, encode_tokens, text_parts

__all__ = ["MLP"]


class MLP(nn.Module):
    """x (B, D), c (B,) → (B, D) (or (B, out_dim)): residual SiLU blocks, the time embedding
    added to each block. ``text_vocab`` > 0 adds a text encoder (:mod:`.text`) whose pooled
    output of ``tokens`` (B, L) is added to the time embedding (no cross-attention)."""

    @checked_args("mlp", dict(dim=POSITIVE_INT, hidden=POSITIVE_INT, depth=NONNEGATIVE_INT,
                              emb_dim=POSITIVE_INT, embedding=EMBEDDING,
                              out_dim=OPTIONAL_POSITIVE_INT, **TEXT_RULES),
                  Relation("emb_dim", lambda a: a["emb_dim"] % 2 == 0, lambda a: "even"),
                  *TEXT_RELATIONS)
    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 64,
                 embedding: str = "fourier", out_dim: int | None = None, text_vocab: int = 0,
                 text_dim: int = 128, text_layers: int = 2, text_length: int = 16):
        super().__init__()
        # (None, None) without text: such a network keeps its parameter names
        self.text, self.text_proj = text_parts(text_vocab, text_dim, text_layers, text_length,
                                               hidden)
        self.emb = (FourierEmbedding(emb_dim, scale=1.0) if embedding == "fourier"
                    else SinusoidalEmbedding(emb_dim, scale=100.0))
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out_dim or dim))

    def forward(self, x: Tensor, c: Tensor, tokens: Tensor | None = None) -> Tensor:
        e = self.emb_mlp(self.emb(c).to(x.dtype))
        text = encode_tokens(self.text, tokens, x.shape[0], x.device)
        if text is not None:
            e = e + self.text_proj(text[2].to(x.dtype))
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)
