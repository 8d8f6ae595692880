r"""Diffusion Transformer (Peebles & Xie 2023): patchify, transformer blocks with adaLN-Zero
conditioning, unpatchify.

An image (B, C, H, W) becomes N = (H/p)(W/p) tokens by a p×p strided convolution plus fixed 2-D
sin-cos position embeddings. Each block, with (γ₁, β₁, α₁, γ₂, β₂, α₂) = Linear(SiLU(e)) from the
conditioning vector e (time + class),

.. math:: h \leftarrow h + \alpha_1\,\mathrm{Attn}(\mathrm{LN}(h)(1+\gamma_1)+\beta_1),\quad
          h \leftarrow h + \alpha_2\,\mathrm{MLP}(\mathrm{LN}(h)(1+\gamma_2)+\beta_2),

with the modulation layers initialised to zero ("-Zero": every block starts as the identity).
The final layer is adaLN + Linear to p²·C_out per token (also zero-initialised).

``text_vocab`` > 0 conditions on a caption's token ids ``tokens`` (B, L) (:mod:`.text`): the
text encoder's pooled output is added to e, and every block gets a cross-attention sub-layer
h ← h + α₃ CrossAttn(LN(h), text) between its attention and its MLP, with its own zero-initialised
gate α₃ = Linear(SiLU(e)) (PixArt-α's layout, adaLN-Zero gated).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .args import (DROPOUT, EMBEDDING, NONNEGATIVE_INT, OPTIONAL_POSITIVE_INT,
                   OPTIONAL_POSITIVE_REAL, POSITIVE_INT, POSITIVE_REAL, Relation, checked_args)
from .conditioning import ConditionEmbedding
from .text import TEXT_RELATIONS, TEXT_RULES, CrossAttention, encode_tokens, text_parts

__all__ = ["DiT", "DiTBlock", "sincos_2d"]


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, (grid², dim)."""
    if dim % 4:
        raise ValueError("DiT hidden size must be divisible by 4")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    yy, xx = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = [f(pos.reshape(-1, 1) * omega) for pos in (yy, xx) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 text_dim: int = 0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"),
                                 nn.Dropout(dropout), nn.Linear(inner, hidden))
        self.ada = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        if text_dim:  # absent without text, so such a block keeps its parameter names
            self.cross = CrossAttention(hidden, text_dim, heads, zero_init=False)
            self.cross_gate = nn.Linear(hidden, hidden)
            nn.init.zeros_(self.cross_gate.weight)
            nn.init.zeros_(self.cross_gate.bias)

    def forward(self, h: Tensor, e: Tensor, text=None) -> Tensor:
        b, n, d = h.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(e).chunk(6, dim=1)
        q, k, v = self.qkv(_modulate(self.norm1(h), sh1, sc1)).reshape(
            b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        h = h + g1[:, None] * self.proj(a)
        if text is not None:
            h = h + self.cross_gate(e)[:, None] * self.cross.update(h, text[0], text[1])
        return h + g2[:, None] * self.mlp(_modulate(self.norm2(h), sh2, sc2))


_DIT_RULES = dict(
    in_channels=POSITIVE_INT, out_channels=OPTIONAL_POSITIVE_INT, resolution=POSITIVE_INT,
    patch_size=POSITIVE_INT, hidden=POSITIVE_INT, depth=NONNEGATIVE_INT, heads=POSITIVE_INT,
    mlp_ratio=POSITIVE_REAL, dropout=DROPOUT, embedding=EMBEDDING,
    embedding_scale=OPTIONAL_POSITIVE_REAL, num_classes=NONNEGATIVE_INT,
    cond_channels=NONNEGATIVE_INT, **TEXT_RULES)
_DIT_RELATIONS = (*TEXT_RELATIONS,
    Relation("resolution", lambda a: a["resolution"] % a["patch_size"] == 0,
             lambda a: f"divisible by patch_size {a['patch_size']}"),
    Relation("hidden", lambda a: a["hidden"] % 4 == 0 and a["hidden"] % a["heads"] == 0,
             lambda a: f"a multiple of 4 (2-D sin-cos positions) and of heads {a['heads']}"))


class DiT(nn.Module):
    """x (B, C, H, W), c (B,) → (B, C_out, H, W); see the module docstring.

    Args:
        in_channels, out_channels, resolution: image shape (resolution divisible by patch_size).
        patch_size: p; hidden: token width; depth: blocks; heads: attention heads.
        num_classes: > 0 adds a class-label embedding (index num_classes = unconditional).
        cond_channels: channels of a conditioning image concatenated to x before patchifying.
        text_vocab, text_dim, text_layers, text_length: > 0 adds a text encoder of that
            vocabulary, width, depth and length, and cross-attention to its tokens.
    """

    @checked_args("dit", _DIT_RULES, *_DIT_RELATIONS)
    def __init__(self, in_channels: int = 1, out_channels: int | None = None, resolution: int = 8,
                 patch_size: int = 2, hidden: int = 192, depth: int = 6, heads: int = 3,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, embedding: str = "fourier",
                 embedding_scale: float | None = None, num_classes: int = 0,
                 cond_channels: int = 0, text_vocab: int = 0, text_dim: int = 128,
                 text_layers: int = 2, text_length: int = 16):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.cond_channels, self.resolution, self.p = cond_channels, resolution, patch_size
        self.grid = resolution // patch_size
        self.patch = nn.Conv2d(in_channels + cond_channels, hidden, patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_2d(hidden, self.grid)[None], persistent=False)
        self.cond = ConditionEmbedding(hidden, hidden, num_classes, embedding, embedding_scale)
        self.text, self.text_proj = text_parts(text_vocab, text_dim, text_layers, text_length,
                                               hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio, dropout,
                                             text_dim if text_vocab else 0) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(hidden, 2 * hidden)
        self.final = nn.Linear(hidden, patch_size**2 * self.out_channels)
        for m in (self.final_ada, self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, c: Tensor, class_labels: Tensor | None = None,
                x_cond: Tensor | None = None, tokens: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] != self.resolution \
                or x.shape[-2] != self.resolution:
            raise ValueError(f"expected images (B, {self.in_channels}, {self.resolution}, "
                             f"{self.resolution}), got {tuple(x.shape)}")
        if self.cond_channels:
            if x_cond is None or x_cond.shape != (x.shape[0], self.cond_channels, *x.shape[2:]):
                raise ValueError(f"this DiT needs x_cond of shape (B, {self.cond_channels}, H, W)")
            x = torch.cat([x, x_cond.to(x.dtype)], dim=1)
        elif x_cond is not None:
            raise ValueError("x_cond given to a DiT built with cond_channels=0")
        e = self.cond(c, class_labels, dtype=x.dtype)
        text = encode_tokens(self.text, tokens, x.shape[0], x.device)
        if text is not None:
            e = e + self.text_proj(text[2].to(x.dtype))
        e = F.silu(e)
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)
        for block in self.blocks:
            h = block(h, e, text)
        shift, scale = self.final_ada(e).chunk(2, dim=1)
        h = self.final(_modulate(self.final_norm(h), shift, scale))  # (B, N, p²C)
        b, g, p, c = x.shape[0], self.grid, self.p, self.out_channels
        return h.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)
