r"""U-Net of the DDPM++ / NCSN++ family (Ho et al. 2020; Song et al. 2021, appendix H;
Karras et al. 2022 for the layout as used in EDM).

Each resolution has ``num_res_blocks`` residual blocks

.. math:: h = x + \mathrm{Conv}(\mathrm{Drop}(\mathrm{SiLU}(\mathrm{GN}(h_1)(1 + a) + b))),\quad
          h_1 = \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))),\quad (a, b) = \mathrm{Linear}(e),

(adaptive GroupNorm scale/shift from the conditioning vector e = time (+ class) embedding; the
residual sum is scaled by 1/√2 as in DDPM++), self-attention at the resolutions in
``attn_resolutions``, strided-conv downsampling and nearest upsampling, and skip connections
from every encoder block to the decoder. Output convolutions start at zero, so a fresh network
predicts 0 (with EDM preconditioning: D(x) = c_skip x).

``cond_channels`` > 0 concatenates a conditioning image ``x_cond`` to the input (SR3/Palette).
``text_vocab`` > 0 conditions on a caption's token ids ``tokens`` (B, L) (:mod:`.text`): the
text encoder's pooled output is added to e and a cross-attention block follows every
self-attention block (the attention resolutions and the middle), as in Stable Diffusion.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .args import (DROPOUT, EMBEDDING, INT_LIST, NONNEGATIVE_INT, OPTIONAL_POSITIVE_INT,
                   OPTIONAL_POSITIVE_REAL, POSITIVE_INT, POSITIVE_INT_LIST, Relation, checked_args)
from .conditioning import ConditionEmbedding, norm_groups
from .text import TEXT_RELATIONS, TEXT_RULES, CrossAttention, encode_tokens, text_parts

__all__ = ["UNet", "ResBlock", "AttentionBlock", "LEVEL_RELATIONS"]


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """Residual block with adaptive GroupNorm conditioning (see module docstring)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.drop(h))
        return (self.skip(x) + h) * (1 / math.sqrt(2))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions (scaled dot-product attention).

    Works on (B, H·W, C) tokens so that q, k, v reach the fused attention kernels with unit
    stride in the head dimension; with channels-last activations the token view is free."""

    def __init__(self, channels: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(norm_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).unflatten(2, (3, self.heads, c // self.heads)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, HW, C)
        out = self.proj(out).transpose(1, 2).unflatten(2, (h, w))
        return (x + out) * (1 / math.sqrt(2))


def uneven_attention_widths(a: dict, head_dim: int, middle: bool = True) -> list[int]:
    """Channel widths of a U-Net's attention layers (levels in ``attn_resolutions``, and the
    middle block) whose head count max(1, width // head_dim) does not split them evenly."""
    mult, res = a["channel_mult"], [a["resolution"] // 2**i for i in range(len(a["channel_mult"]))]
    widths = {a["channels"] * m for r, m in zip(res, mult) if r in set(a["attn_resolutions"])}
    widths |= {a["channels"] * mult[-1]} if middle else set()
    return sorted(c for c in widths if c % max(1, c // head_dim))


#: how the encoder's levels constrain resolution, attention and width (U-Net and classifier)
LEVEL_RELATIONS = (
    Relation("resolution", lambda a: a["resolution"] % 2 ** (len(a["channel_mult"]) - 1) == 0,
             lambda a: f"divisible by 2^{len(a['channel_mult']) - 1} = "
                       f"{2 ** (len(a['channel_mult']) - 1)} (channel_mult has {len(a['channel_mult'])} levels)"),
    # attn_resolutions that no level reaches are allowed: the constructor defaults have them at
    # resolutions 4k + 2, and checkpoints built so must keep loading
    Relation("channels", lambda a: a["channels"] % 2 == 0,
             lambda a: "even (the noise embedding has that many features)"))

_UNET_RULES = dict(
    in_channels=POSITIVE_INT, out_channels=OPTIONAL_POSITIVE_INT, resolution=POSITIVE_INT,
    channels=POSITIVE_INT, channel_mult=POSITIVE_INT_LIST, num_res_blocks=NONNEGATIVE_INT,
    attn_resolutions=INT_LIST, dropout=DROPOUT, embedding=EMBEDDING,
    embedding_scale=OPTIONAL_POSITIVE_REAL, num_classes=NONNEGATIVE_INT,
    cond_channels=NONNEGATIVE_INT, head_dim=POSITIVE_INT, **TEXT_RULES)
_UNET_HEADS = Relation(
    "head_dim", lambda a: not uneven_attention_widths(a, a["head_dim"]),
    lambda a: f"a head size that splits every attention width into whole heads "
              f"(widths {uneven_attention_widths(a, a['head_dim'])} do not split)")


def _attention_pair(c: int, here: bool, head_dim: int, text_dim: int):
    """(self-attention, cross-attention to text of width text_dim) at width c; Identity for
    what is absent (text_dim = 0: no text)."""
    if not here:
        return nn.Identity(), nn.Identity()
    attn = AttentionBlock(c, head_dim)
    return attn, CrossAttention(c, text_dim, attn.heads) if text_dim else nn.Identity()


class _Level(nn.Module):
    """A resolution's blocks and attention: ``attns`` holds (self, cross) pairs; the cross
    ones are registered (as ``crosses``) only when some exist, so a network without text keeps
    its parameter names."""

    def __init__(self, blocks, attns):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(a for a, _ in attns)
        if any(not isinstance(x, nn.Identity) for _, x in attns):
            self.crosses = nn.ModuleList(x for _, x in attns)

    def run(self, h: Tensor, emb: Tensor, text, skips: list | None = None,
            store: list | None = None) -> Tensor:
        """Each block (its input concatenated with ``skips.pop()`` in the decoder), then its
        attention; the outputs appended to ``store`` (the encoder's skips)."""
        for j, (block, attn) in enumerate(zip(self.blocks, self.attns)):
            h = attn(block(h if skips is None else torch.cat([h, skips.pop()], dim=1), emb))
            cross = self.crosses[j] if text is not None and hasattr(self, "crosses") else None
            if isinstance(cross, CrossAttention):
                h = cross.forward_image(h, text[0], text[1])
            if store is not None:
                store.append(h)
        return h


class UNet(nn.Module):
    """x (B, C, H, W), c (B,) → (B, C_out, H, W).

    Args:
        in_channels, out_channels: image channels (out defaults to in).
        resolution: input height = width (must be divisible by 2^(len(channel_mult) − 1)).
        channels: base width; level i has ``channels * channel_mult[i]``.
        num_res_blocks: residual blocks per level (the decoder has one more, as DDPM).
        attn_resolutions: resolutions with self-attention after each block.
        dropout: dropout inside residual blocks.
        embedding: ``"fourier"`` (NCSN++) or ``"sinusoidal"`` (DDPM) features of c.
        num_classes: > 0 adds a class-label embedding (index num_classes = unconditional).
        cond_channels: channels of a conditioning image concatenated to x (SR3/Palette).
        text_vocab, text_dim, text_layers, text_length: > 0 adds a text encoder of that
            vocabulary, width, depth and length, and cross-attention to its tokens.
    """

    @checked_args("unet", _UNET_RULES, *LEVEL_RELATIONS, _UNET_HEADS, *TEXT_RELATIONS)
    def __init__(self, in_channels: int = 1, out_channels: int | None = None, resolution: int = 8,
                 channels: int = 64, channel_mult=(1, 2), num_res_blocks: int = 2,
                 attn_resolutions=(4,), dropout: float = 0.0, embedding: str = "fourier",
                 embedding_scale: float | None = None, num_classes: int = 0,
                 cond_channels: int = 0, head_dim: int = 64, text_vocab: int = 0,
                 text_dim: int = 128, text_layers: int = 2, text_length: int = 16):
        super().__init__()
        levels = len(channel_mult)
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cond_channels, self.resolution = cond_channels, resolution
        emb_dim = 4 * channels
        self.cond = ConditionEmbedding(channels, emb_dim, num_classes, embedding, embedding_scale)
        self.inp = nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1)
        self.text, self.text_proj = text_parts(text_vocab, text_dim, text_layers, text_length,
                                               emb_dim)
        attn, text = set(attn_resolutions), text_dim if text_vocab else 0

        widths, skips, res, c = [], [channels], resolution, channels
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, m in enumerate(channel_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c, channels * m, emb_dim, dropout))
                c = channels * m
                attns.append(_attention_pair(c, res in attn, head_dim, text))
                skips.append(c)
            self.down.append(_Level(blocks, attns))
            last = i == levels - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)
                res //= 2
            widths.append(c)
        mid_attn, mid_cross = _attention_pair(c, True, head_dim, text)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), mid_attn,
                                  ResBlock(c, c, emb_dim, dropout)])
        if text:
            self.mid_cross = mid_cross
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, m in reversed(list(enumerate(channel_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), channels * m, emb_dim, dropout))
                c = channels * m
                attns.append(_attention_pair(c, res in attn, head_dim, text))
            self.up.append(_Level(blocks, attns))
            self.upsample.append(nn.Identity() if i == 0 else nn.Conv2d(c, c, 3, padding=1))
            if i:
                res *= 2
        self.out_norm = nn.GroupNorm(norm_groups(c), c)
        self.out = _zero(nn.Conv2d(c, out_channels, 3, padding=1))

    def _input(self, x: Tensor, x_cond: Tensor | None) -> Tensor:
        """x with the conditioning image concatenated (checked)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.cond_channels:
            if x_cond is None or x_cond.shape != (x.shape[0], self.cond_channels, *x.shape[2:]):
                raise ValueError(f"this U-Net needs x_cond of shape "
                                 f"(B, {self.cond_channels}, {x.shape[2]}, {x.shape[3]})")
            return torch.cat([x, x_cond.to(x.dtype)], dim=1)
        if x_cond is not None:
            raise ValueError("x_cond given to a U-Net built with cond_channels=0")
        return x

    def forward(self, x: Tensor, c: Tensor, class_labels: Tensor | None = None,
                x_cond: Tensor | None = None, tokens: Tensor | None = None) -> Tensor:
        x = self._input(x, x_cond)
        e = self.cond(c, class_labels, dtype=x.dtype)
        text = encode_tokens(self.text, tokens, x.shape[0], x.device)
        if text is not None:
            e = e + self.text_proj(text[2].to(x.dtype))
        emb = F.silu(e)
        h = self.inp(x)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            h = level.run(h, emb, text, store=hs)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid[1](self.mid[0](h, emb))
        if text is not None:
            h = self.mid_cross.forward_image(h, text[0], text[1])
        h = self.mid[2](h, emb)
        for level, up in zip(self.up, self.upsample):
            h = level.run(h, emb, text, skips=hs)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
