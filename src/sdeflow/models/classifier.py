"""Networks for noise-conditional classifiers p(y | x_t, t) (classifier guidance).

``encoder``: the encoder half of the U-Net (residual blocks with adaptive GroupNorm conditioned
on the noise input, strided downsampling, optional attention) followed by global average
pooling and a linear head, as the ADM classifier (Dhariwal & Nichol 2021) without its
attention pooling. ``mlp_classifier``: residual MLP for vectors. Both are called
``net(x, c) -> logits (B, K)`` with c the noise input given by
:class:`~sdeflow.guidance.NoisyClassifier`.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .args import (DROPOUT, EMBEDDING, INT_LIST, NONNEGATIVE_INT, POSITIVE_INT,
                   POSITIVE_INT_LIST, Relation, checked_args, int_at_least)
from .conditioning import ConditionEmbedding, norm_groups
from .mlp import MLP
from .unet import LEVEL_RELATIONS, AttentionBlock, ResBlock, uneven_attention_widths

__all__ = ["EncoderClassifier", "MLPClassifier", "build_classifier", "list_classifiers"]

_CLASSES = int_at_least(2)
_ENCODER_RULES = dict(
    num_classes=_CLASSES, in_channels=POSITIVE_INT, resolution=POSITIVE_INT,
    channels=POSITIVE_INT, channel_mult=POSITIVE_INT_LIST, num_res_blocks=NONNEGATIVE_INT,
    attn_resolutions=INT_LIST, dropout=DROPOUT, embedding=EMBEDDING)
_ENCODER_HEADS = Relation(  # AttentionBlock's default head size, 64
    "channels", lambda a: not uneven_attention_widths(a, 64, middle=False),
    lambda a: f"a width whose attention layers split into whole 64-channel heads "
              f"(widths {uneven_attention_widths(a, 64, middle=False)} do not split)")


class EncoderClassifier(nn.Module):
    """Images (B, C, H, W), c (B,) → logits (B, num_classes)."""

    @checked_args("encoder classifier", _ENCODER_RULES, *LEVEL_RELATIONS, _ENCODER_HEADS)
    def __init__(self, num_classes: int, in_channels: int = 1, resolution: int = 8,
                 channels: int = 32, channel_mult=(1, 2), num_res_blocks: int = 1,
                 attn_resolutions=(), dropout: float = 0.0, embedding: str = "fourier"):
        super().__init__()
        self.in_channels = in_channels
        emb = 4 * channels
        self.cond = ConditionEmbedding(channels, emb, 0, embedding)
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        layers, c, res = [], channels, resolution
        for i, m in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, channels * m, emb, dropout))
                c = channels * m
                if res in set(attn_resolutions):
                    layers.append(AttentionBlock(c))
            if i < len(channel_mult) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                res //= 2
        self.layers = nn.ModuleList(layers)
        self.norm = nn.GroupNorm(norm_groups(c), c)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        e = F.silu(self.cond(c, dtype=x.dtype))
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
        return self.head(F.silu(self.norm(h)).mean(dim=(2, 3)))


class MLPClassifier(MLP):
    """Vectors (B, D), c (B,) → logits (B, num_classes): the denoiser MLP with a class head."""

    @checked_args("mlp classifier", dict(num_classes=_CLASSES, dim=POSITIVE_INT,
                                         hidden=POSITIVE_INT, depth=NONNEGATIVE_INT,
                                         emb_dim=POSITIVE_INT))
    def __init__(self, num_classes: int, dim: int = 2, hidden: int = 128, depth: int = 3,
                 emb_dim: int = 64):
        super().__init__(dim, hidden, depth, emb_dim, out_dim=num_classes)


_CLASSIFIERS = {"encoder": EncoderClassifier, "mlp": MLPClassifier}


def list_classifiers() -> list[str]:
    return sorted(_CLASSIFIERS)


def build_classifier(name: str, **kwargs) -> nn.Module:
    """The classifier ``name`` built with ``kwargs`` (checked as :func:`~sdeflow.models.build_model`)."""
    if name not in _CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choices: {list_classifiers()}")
    return _CLASSIFIERS[name](**kwargs)
