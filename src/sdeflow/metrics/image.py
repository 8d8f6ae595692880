r"""Paired image metrics for images in [−1, 1] (data range 2): L1, MSE, PSNR and SSIM
(Wang et al. 2004; Gaussian window σ = 1.5, 11 × 11 or the image size if smaller, constants
K₁ = 0.01, K₂ = 0.03):

.. math:: \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
          {(\mu_x^2+\mu_y^2+C_1)(\sigma_x^2+\sigma_y^2+C_2)},\quad
          \mathrm{PSNR} = 10\log_{10}\frac{R^2}{\mathrm{MSE}}.

Each returns one value per image pair, shape (B,).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["l1", "mse", "psnr", "ssim"]


def _pair(x: Tensor, y: Tensor):
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two image batches (B, C, H, W) of equal shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    return x.to(torch.float64), y.to(torch.float64)


def l1(x: Tensor, y: Tensor) -> Tensor:
    x, y = _pair(x, y)
    return (x - y).abs().flatten(1).mean(1)


def mse(x: Tensor, y: Tensor) -> Tensor:
    x, y = _pair(x, y)
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    return 10 * torch.log10(data_range**2 / mse(x, y).clamp_min(1e-20))


def ssim(x: Tensor, y: Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    x, y = _pair(x, y)
    c = x.shape[1]
    k = min(window, x.shape[-1], x.shape[-2])
    k -= 1 - k % 2  # odd
    ax = torch.arange(k, dtype=torch.float64, device=x.device) - (k - 1) / 2
    g = torch.exp(-ax**2 / (2 * sigma**2))
    w = (g[:, None] * g[None]) / g.sum() ** 2
    w = w.expand(c, 1, k, k)
    blur = lambda z: F.conv2d(z, w, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
