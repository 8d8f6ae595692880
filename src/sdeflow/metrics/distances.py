r"""Sample-based distances between distributions, for tests and evaluation.

* Sliced Wasserstein-2 (Rabin et al. 2011): :math:`SW_2^2 = E_\theta[W_2^2(\theta^\top X, \theta^\top Y)]`
  over random unit directions θ; each 1-D W₂ is exact between sorted equal-size samples.
* MMD² with a sum of RBF kernels (Gretton et al. 2012), unbiased estimator.

Both come with a *noise floor*: the same distance between two independent samples of the
reference itself, against which thresholds are calibrated.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "mmd2", "noise_floor"]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size samples (rows are samples)."""
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise ValueError(f"samples must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = (x @ theta).sort(0)
    py, _ = (y @ theta).sort(0)
    return (px - py).pow(2).mean().sqrt().item()


def mmd2(x: Tensor, y: Tensor, bandwidths=(0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased MMD² with the kernel Σ_b exp(−‖a−c‖²/(2 b² D)) (bandwidths relative to √D)."""
    x, y = _flat(x), _flat(y)
    d = x.shape[1]

    def k(a, c):
        d2 = torch.cdist(a, c).pow(2)
        return sum(torch.exp(-d2 / (2 * b**2 * d)) for b in bandwidths)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean()).item()


def noise_floor(sampler, n: int, metric=sliced_wasserstein, repeats: int = 5, seed: int = 0) -> float:
    """Largest ``metric`` between pairs of independent n-samples of the reference
    (``sampler(n, generator)`` draws them) over ``repeats`` pairs."""
    g = torch.Generator().manual_seed(seed)
    return max(metric(sampler(n, g), sampler(n, g)) for _ in range(repeats))
