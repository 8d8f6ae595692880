r"""Inpainting with a latent model: the known image is encoded, the mask down-sampled to the
latent grid, the completion sampled in latent space (replacement or RePaint on z̃), decoded,
and the known pixels pasted back:

.. math:: \tilde z_y = c\,E(m\odot y + (1-m)\odot\bar y),\quad m_z = \min_{f\times f}(m),\quad
          x = m\odot y + (1-m)\odot D(\hat{\tilde z}/c),

with m_z = 1 only on latent cells whose f×f pixels are all known, and the unknown pixels
replaced by ȳ, the mean colour of the known ones, before encoding — so nothing of the hidden
content reaches the sampler. A convolutional encoder's codes near the hole still see the fill
through their receptive field: they are known only approximately, and the decoded completion
is pasted under the known pixels exactly.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from .model import LatentDenoiser

__all__ = ["downsample_mask", "latent_inpaint", "through_latent"]


def downsample_mask(mask: Tensor, factor: int) -> Tensor:
    """The (…, H/f, W/f) mask that is 1 where every pixel of the f×f block is known."""
    if factor == 1:
        return mask
    m = mask.to(torch.float32)
    lead = m.shape[:-2]
    h, w = m.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"mask size {h}×{w} is not divisible by the latent factor {factor}")
    out = -F.max_pool2d(-m.reshape(-1, 1, h, w), factor)
    return out.reshape(*lead, h // factor, w // factor).to(mask.dtype)


def latent_inpaint(model: LatentDenoiser, y: Tensor, mask: Tensor,
                   run: Callable[[Tensor, Tensor], tuple[Tensor, dict]]):
    """(completed images, stats): ``run(z_y, m_z)`` completes the latents (it must not decode);
    the mask (H, W), (1, 1, H, W) or (B, 1|C, H, W) marks known pixels with 1."""
    mask = torch.as_tensor(mask, device=y.device)
    if mask.ndim < 2 or tuple(mask.shape[-2:]) != tuple(y.shape[-2:]):
        raise ValueError(f"the mask must have the images' size {tuple(y.shape[-2:])}, got "
                         f"{tuple(mask.shape)}")
    m = mask.reshape(*(1,) * (4 - mask.ndim), *mask.shape) if mask.ndim < 4 else mask
    if m.shape[1] not in (1, y.shape[1]):
        raise ValueError(f"the mask needs 1 or {y.shape[1]} channels, got {m.shape[1]}")
    if len(model.latent_shape) < 3:
        raise ValueError("this autoencoder's latents have no pixel layout (shape "
                         f"{model.latent_shape}): latent inpainting needs a spatial autoencoder")
    mz = downsample_mask(m.amin(1, keepdim=True), model.factor)
    if not bool(mz.any()):
        raise ValueError(f"no {model.factor}×{model.factor} block of the mask is fully known: "
                         "latent inpainting needs known regions of whole latent cells")
    known = m.expand_as(y).to(y.dtype)
    fill = (y * known).sum((-2, -1), keepdim=True) / known.sum((-2, -1), keepdim=True).clamp_min(1)
    zy = model.encode(known * y + (1 - known) * fill)
    z, stats = run(zy, mz.to(zy.dtype).expand(zy.shape[0], *mz.shape[1:]))
    with torch.no_grad():
        x = model.decode(z)
    m = m.to(x.dtype)
    return m * y + (1 - m) * x, stats


def through_latent(fn: Callable) -> Callable:
    """Decorate an inpainting method ``fn(model, y, mask, **opts)`` (completing in the model's
    own space, returning (x, stats) with ``return_stats=True``) so that a latent model completes
    in latent space (:func:`latent_inpaint`); other models go to ``fn`` unchanged."""
    @functools.wraps(fn)
    def wrapper(model, y: Tensor, mask: Tensor, **opts):
        from .model import find_latent
        latent = find_latent(model)
        if latent is None:
            return fn(model, y, mask, **opts)
        if opts.get("basis") is not None or opts.get("x_T") is not None:
            raise ValueError("a latent model inpaints through its latents: basis (colorization) "
                             "and x_T (a pixel-space start) do not apply")
        want = opts.pop("return_stats", False)
        x, stats = latent_inpaint(latent, y, mask,
                                  lambda zy, mz: fn(model, zy, mz, return_stats=True, **opts))
        return (x, stats) if want else x
    return wrapper
