"""One default network per data shape: :func:`default_model_kwargs`.

The architecture a run gets when it names only the model — widths, levels, blocks, attention,
patch size, depth — chosen from the data's resolution (images) or size (vectors). The data's own
sizes (``in_channels``, ``resolution``, ``dim``, ``num_classes``, ``cond_channels``) are not
included: the training config fills them in, and whatever the user passes overrides both.

The constructors keep their own defaults on purpose: a checkpoint stores only the keyword
arguments it was built with and is rebuilt with the constructor defaults for the rest.

U-Net rows follow DDPM (Ho et al. 2020) and DDPM++ (Song et al. 2021): attention at 16×16 from
32×32 up, channel multipliers growing with depth; the 8×8 row is the digits demo's U-Net.
DiT rows are DiT-S and DiT-B of Peebles & Xie (2023), the patch size growing with the resolution.
Measured speeds are in docs/model_notes.md.
"""
from __future__ import annotations

import copy
import math

__all__ = ["default_model_kwargs"]

#: (smallest resolution, U-Net settings, index of the level with self-attention)
_UNET = [
    (0, dict(channels=32, channel_mult=[1, 2], num_res_blocks=1), 1),
    (16, dict(channels=64, channel_mult=[1, 2, 2], num_res_blocks=2), 1),
    (32, dict(channels=128, channel_mult=[1, 2, 2], num_res_blocks=2, dropout=0.1), 1),
    (64, dict(channels=128, channel_mult=[1, 2, 2, 2], num_res_blocks=2, dropout=0.1), 2),
    (128, dict(channels=128, channel_mult=[1, 1, 2, 2, 4], num_res_blocks=2, dropout=0.1), 3),
    (256, dict(channels=128, channel_mult=[1, 1, 2, 2, 4, 4], num_res_blocks=2, dropout=0.1), 4),
]

#: (smallest resolution, DiT settings); the patch size shrinks until it divides the resolution
_DIT = [
    (0, dict(patch_size=2, hidden=192, depth=6, heads=3)),
    (32, dict(patch_size=2, hidden=384, depth=12, heads=6)),
    (64, dict(patch_size=4, hidden=384, depth=12, heads=6)),
    (128, dict(patch_size=8, hidden=768, depth=12, heads=12)),
]

#: (smallest data size D, MLP settings); the first row is what every 2-D toy run has used
_MLP = [
    (0, dict(hidden=128, depth=3, emb_dim=64)),
    (16, dict(hidden=256, depth=3, emb_dim=64)),
    (64, dict(hidden=512, depth=4, emb_dim=128)),
]


def _row(table: list, size: int) -> tuple:
    return copy.deepcopy([row for row in table if row[0] <= size][-1][1:])


def _image_size(model: str, shape: tuple) -> int:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{model}: needs a square image shape (C, H, H), got {shape}")
    return shape[-1]


def _unet(shape: tuple) -> dict:
    resolution = _image_size("unet", shape)
    kw, attn_level = _row(_UNET, resolution)
    mult = kw["channel_mult"]
    while len(mult) > 1 and resolution % 2 ** (len(mult) - 1):
        mult.pop()  # 28×28: levels 28, 14, 7
    return dict(kw, attn_resolutions=[resolution // 2 ** min(attn_level, len(mult) - 1)])


def _dit(shape: tuple) -> dict:
    resolution = _image_size("dit", shape)
    (kw,) = _row(_DIT, resolution)
    while resolution % kw["patch_size"]:
        kw["patch_size"] //= 2
    return kw


def _mlp(shape: tuple) -> dict:
    (kw,) = _row(_MLP, math.prod(shape))
    return kw


_DEFAULTS = {"mlp": _mlp, "unet": _unet, "dit": _dit}


def default_model_kwargs(model: str, shape) -> dict:
    """Architecture keyword arguments of ``model`` for data of ``shape`` — (C, H, W) images for
    ``unet``/``dit`` (keyed by the resolution H = W), (D,) vectors for ``mlp`` — without the
    data sizes the training config sets (see the module docstring)."""
    if model not in _DEFAULTS:
        raise ValueError(f"unknown model {model!r}; choices: {sorted(_DEFAULTS)}")
    return _DEFAULTS[model](tuple(int(s) for s in shape))
