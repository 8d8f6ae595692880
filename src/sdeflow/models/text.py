r"""Text conditioning: a small transformer text encoder and a cross-attention block, as in
Latent Diffusion / Stable Diffusion (Rombach et al. 2022) and Imagen (Saharia et al. 2022).

The encoder maps token ids (B, L) (id 0 = padding; an all-padding row is the *empty prompt*
classifier-free guidance trains on) to token features c (B, L, d), their mask and the masked
mean ``pooled`` (B, d), which the networks add to their conditioning vector e. A cross-attention
block lets image tokens h (B, N, C) read c:

.. math:: h \leftarrow h + W_o\,\mathrm{softmax}\!\big(q k^\top/\sqrt{d_h}\big)\,v,\quad
          q = W_q\,\mathrm{LN}(h),\quad [k; v] = [k_\varnothing; v_\varnothing] \cup W_{kv}\,c,

keys of padding masked out. A learned null key/value pair is always attended to, so the empty
prompt attends to it alone (no NaN from an all-masked row). W_o starts at zero: a fresh block is
the identity, and a network with text equals the same network without it until it has trained.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .args import NONNEGATIVE_INT, POSITIVE_INT, Relation

__all__ = ["TextEncoder", "CrossAttention", "TEXT_RULES", "TEXT_RELATIONS", "TEXT_HEADS",
           "encode_tokens", "text_parts"]

TEXT_HEADS = 4
#: the text arguments every network takes (``text_vocab=0``: no text path)
TEXT_RULES = dict(text_vocab=NONNEGATIVE_INT, text_dim=POSITIVE_INT, text_layers=NONNEGATIVE_INT,
                  text_length=POSITIVE_INT)
TEXT_RELATIONS = (Relation("text_dim", lambda a: a["text_dim"] % TEXT_HEADS == 0,
                           lambda a: f"a multiple of the text encoder's {TEXT_HEADS} heads"),)


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int, keep: Tensor) -> Tensor:
    """Multi-head attention of q (B, N, C) over k, v (B, M, C); keep (B, M) bool."""
    b, n, c = q.shape
    q, k, v = (t.unflatten(2, (heads, c // heads)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    return out.transpose(1, 2).flatten(2)


class _Layer(nn.Module):
    """A pre-LN transformer layer (self-attention over the unpadded tokens, then an MLP)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: Tensor, keep: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=2)
        h = h + self.proj(_attention(q, k, v, self.heads, keep))
        return h + self.mlp(self.norm2(h))


class TextEncoder(nn.Module):
    """Token ids (B, L ≤ length) → (tokens (B, L, dim), mask (B, L) bool, pooled (B, dim)):
    embeddings plus learned positions, ``layers`` pre-LN transformer layers that attend only
    to real tokens, a final LayerNorm; pooled = masked mean (0 for the empty prompt)."""

    def __init__(self, vocab_size: int, dim: int, layers: int = 2, heads: int = TEXT_HEADS,
                 length: int = 16):
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.layers = nn.ModuleList(_Layer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask = tokens != 0
        # the empty prompt attends to all its (padding) tokens, whose outputs are masked anyway
        keep = mask | ~mask.any(1, keepdim=True)
        h = self.embed(tokens) + self.pos[:, :tokens.shape[1]]
        for layer in self.layers:
            h = layer(h, keep)
        h = self.norm(h)
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return h, mask, pooled

    def check(self, tokens, batch: int, device) -> Tensor:
        """``tokens`` as ids (batch, L) on ``device``; None → the empty prompt."""
        if tokens is None:
            return torch.zeros(batch, self.length, dtype=torch.long, device=device)
        tokens = torch.as_tensor(tokens, device=device)
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[0] != batch or not 0 < tokens.shape[1] <= self.length:
            raise ValueError(f"tokens must have shape ({batch}, L) with 1 ≤ L ≤ {self.length}, "
                             f"got {tuple(tokens.shape)}")
        if ((tokens < 0) | (tokens >= self.vocab_size)).any():
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return tokens.long()


def encode_tokens(encoder: TextEncoder | None, tokens, batch: int, device):
    """The encoder's (tokens, mask, pooled) for a network's call, or None without text; a
    network built without text refuses tokens."""
    if encoder is None:
        if tokens is not None:
            raise ValueError("tokens given to a network built without text (text_vocab=0)")
        return None
    return encoder(encoder.check(tokens, batch, device))


def text_parts(text_vocab: int, text_dim: int, text_layers: int, text_length: int,
               cond_dim: int) -> tuple[TextEncoder | None, nn.Module | None]:
    """A network's text encoder and the zero-initialised map of its pooled output into the
    network's conditioning vector (width ``cond_dim``); (None, None) when text_vocab = 0."""
    if not text_vocab:
        return None, None
    proj = nn.Linear(text_dim, cond_dim)
    nn.init.zeros_(proj.weight)
    nn.init.zeros_(proj.bias)
    return TextEncoder(text_vocab, text_dim, text_layers, TEXT_HEADS, text_length), proj


class CrossAttention(nn.Module):
    """Image tokens (B, N, channels) attend to text tokens (B, L, context_dim) (see the module
    docstring); the output projection starts at zero unless ``zero_init=False`` (for a block
    whose update is gated by a zero-initialised gate instead, as DiT's)."""

    def __init__(self, channels: int, context_dim: int, heads: int, zero_init: bool = True):
        super().__init__()
        if channels % heads:
            raise ValueError(f"cross-attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.null = nn.Parameter(torch.randn(1, 1, 2 * channels) * 0.02)
        self.proj = nn.Linear(channels, channels)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def update(self, h: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """W_o softmax(q kᵀ/√d_h) v: what the block adds to h."""
        b = h.shape[0]
        kv = torch.cat([self.null.to(h.dtype).expand(b, 1, -1), self.kv(context.to(h.dtype))], 1)
        keep = torch.cat([mask.new_ones(b, 1), mask], 1)
        k, v = kv.chunk(2, dim=2)
        return self.proj(_attention(self.q(self.norm(h)), k, v, self.heads, keep))

    def forward(self, h: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        return h + self.update(h, context, mask)

    def forward_image(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """The block on an image (B, C, H, W), its H·W positions as tokens."""
        h = self(x.flatten(2).transpose(1, 2), context, mask)
        return h.transpose(1, 2).reshape(x.shape)
