r"""Fréchet distance and kernel distance between two sets of features (Heusel et al. 2017;
Bińkowski et al. 2018) — the maths of FID and KID, for any feature extractor.

.. math:: \mathrm{FD} = \|\mu_1-\mu_2\|^2 + \mathrm{tr}\,\Sigma_1 + \mathrm{tr}\,\Sigma_2
          - 2\,\mathrm{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}

computed in float64 with symmetric eigendecompositions (no complex sqrtm). KID is the unbiased
MMD² with the cubic polynomial kernel k(a, b) = (aᵀb/d + 1)³, averaged over random subsets.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_stats", "frechet_distance", "kernel_distance"]


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (unbiased) of features (N, d), float64."""
    f = features.reshape(features.shape[0], -1).to(torch.float64)
    if f.shape[0] < 2:
        raise ValueError("need at least 2 feature vectors")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(m: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a, b) -> float:
    """FD between feature sets ``a`` and ``b`` (N, d), or between (mean, cov) pairs."""
    mu1, s1 = a if isinstance(a, tuple) else gaussian_stats(a)
    mu2, s2 = b if isinstance(b, tuple) else gaussian_stats(b)
    r1 = _psd_sqrt(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross).item()


def kernel_distance(a: Tensor, b: Tensor, subsets: int = 50, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) between feature sets a (N, d) and b (M, d)."""
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("need at least 2 feature vectors in each set")
    d = a.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=g)[:m]]
        y = b[torch.randperm(b.shape[0], generator=g)[:m]]
        kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
        vals.append((off(kxx) + off(kyy) - 2 * kxy.mean()).item())
    v = torch.tensor(vals, dtype=torch.float64)
    return v.mean().item(), v.std().item() if len(vals) > 1 else 0.0
