r"""Colorization as inpainting in a decoupled colour basis (Song et al. 2021, appendix I.3).

An orthogonal 3×3 matrix B whose first row is (1, 1, 1)/√3 maps RGB to coordinates whose first
channel is √3 × the grey level g = (r + g + b)/3; the other two carry colour. Colorizing a grey
image is inpainting with the first channel known (√3 g) and the two colour channels generated,
so the output's grey level equals the input exactly and every sampler works.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .repaint import repaint
from .replacement import inpaint

__all__ = ["COLOR_BASIS", "grey", "colorize"]

# rows: grey, red–(green+blue)/2, green–blue (orthonormal)
COLOR_BASIS = torch.tensor([[1 / math.sqrt(3)] * 3,
                            [2 / math.sqrt(6), -1 / math.sqrt(6), -1 / math.sqrt(6)],
                            [0.0, 1 / math.sqrt(2), -1 / math.sqrt(2)]], dtype=torch.float64)


def grey(x: Tensor) -> Tensor:
    """Grey level (r + g + b)/3 of RGB images (B, 3, H, W) → (B, 1, H, W)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(x.shape)}")
    return x.mean(dim=1, keepdim=True)


def colorize(model: Denoiser, g: Tensor, *, method: str = "replace", **opts):
    """RGB samples whose grey level is ``g`` (B, 1, H, W) exactly. ``method``: ``"replace"``
    (:func:`~sdeflow.inpainting.inpaint`, default solver ``pc``) or ``"repaint"``; ``opts`` go to it."""
    if g.ndim != 4 or g.shape[1] != 1:
        raise ValueError(f"expected grey images (B, 1, H, W), got {tuple(g.shape)}")
    y = torch.zeros(g.shape[0], 3, *g.shape[2:], dtype=g.dtype, device=g.device)
    y[:, :1] = math.sqrt(3) * g
    mask = torch.zeros(1, 3, 1, 1, dtype=g.dtype, device=g.device)
    mask[:, 0] = 1
    if method not in ("replace", "repaint"):
        raise ValueError(f"unknown method {method!r}; choices: ['repaint', 'replace']")
    fn = inpaint if method == "replace" else repaint
    return fn(model, y, mask, basis=COLOR_BASIS.to(g), **opts)
