r"""Gaussian mixtures: the ground truth every sampler, likelihood and training test is held to.

For data :math:`p_0 = \sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` and any SDE of the family
:math:`x_t = s\,x_0 + \sigma\,\varepsilon`, every quantity is closed-form:

.. math::
    p_t(x) = \sum_k \pi_k\,\mathcal N(x;\ s\mu_k,\ C_k),\qquad C_k = s^2\Sigma_k + \sigma^2 I,

    \nabla\log p_t(x) = -\sum_k r_k(x)\,C_k^{-1}(x - s\mu_k),\qquad
    E[x_0\mid x_t = x] = \sum_k r_k(x)\big(\mu_k + s\,\Sigma_k C_k^{-1}(x - s\mu_k)\big),

with responsibilities :math:`r_k(x) \propto \pi_k \mathcal N(x; s\mu_k, C_k)`. Each Σ_k is kept as
its eigendecomposition U_k diag(λ_k) U_kᵀ, so C_k⁻¹ is diagonal in U_k's basis.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .denoiser import Denoiser
from .sde import SDE

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions (parameters kept in float64).

    Args:
        weights: (K,) positive mixture weights (normalised here).
        means: (K, D).
        covs: (K, D, D) symmetric positive-definite covariances, or ``stds`` for isotropic ones.
        stds: (K,) or scalar isotropic standard deviations (used when ``covs`` is None).
    """

    def __init__(self, weights, means, covs=None, stds=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.shape != (K,) or (w <= 0).any():
            raise ValueError(f"weights must be {K} positive numbers")
        if covs is None:
            if stds is None:
                raise ValueError("give covs or stds")
            stds = torch.as_tensor(stds, dtype=torch.float64).expand(K)
            if (stds <= 0).any():
                raise ValueError("stds must be positive")
            evals = (stds**2)[:, None].expand(K, D).clone()
            evecs = torch.eye(D, dtype=torch.float64).expand(K, D, D).clone()
        else:
            covs = torch.as_tensor(covs, dtype=torch.float64)
            if covs.shape != (K, D, D):
                raise ValueError(f"covs must have shape ({K}, {D}, {D}), got {tuple(covs.shape)}")
            evals, evecs = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
            if (evals <= 0).any():
                raise ValueError("covariances must be positive definite")
        self.weights, self.means, self.evals, self.evecs = w / w.sum(), means, evals, evecs

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def covs(self) -> Tensor:
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(1, 2)

    # --- constructors ---------------------------------------------------------------------------
    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.25, dim: int = 2):
        """k equal isotropic components on a circle in the first two coordinates."""
        ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        means = torch.zeros(k, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * ang.cos(), radius * ang.sin()
        return cls(torch.ones(k), means, stds=std)

    @classmethod
    def random(cls, dim: int, k: int = 4, seed: int = 0, scale: float = 1.0,
               std_range: tuple[float, float] = (0.1, 0.5)):
        """k components with random means (N(0, scale²)), random rotations and eigenvalues
        log-uniform in std_range², and unequal weights — an anisotropic high-D test problem."""
        g = torch.Generator().manual_seed(seed)
        means = scale * torch.randn(k, dim, generator=g, dtype=torch.float64)
        lo, hi = (math.log(v) for v in std_range)
        stds = torch.exp(lo + (hi - lo) * torch.rand(k, dim, generator=g, dtype=torch.float64))
        q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
        covs = q @ torch.diag_embed(stds**2) @ q.transpose(1, 2)
        weights = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
        return cls(weights, means, covs=covs)

    # --- sampling and densities -----------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float64,
               device=None, return_labels: bool = False):
        """n draws from p_0 (and their component labels if asked)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nde,ne->nd", self.evecs[k], self.evals[k].sqrt() * z)
        x = x.to(dtype=dtype, device=device)
        return (x, k) if return_labels else x

    def _parts(self, x: Tensor, s: Tensor, sigma: Tensor):
        """(log π_k N_k(x), y in eigenbases, c = eigenvalues of C_k), all (B, K, ...)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        dt, dev = x.dtype, x.device
        mu, U, lam = (a.to(dtype=dt, device=dev) for a in (self.means, self.evecs, self.evals))
        s = torch.as_tensor(s, dtype=dt, device=dev).expand(x.shape[0])
        sigma = torch.as_tensor(sigma, dtype=dt, device=dev).expand(x.shape[0])
        diff = x[:, None, :] - s[:, None, None] * mu[None]
        y = torch.einsum("bkd,kde->bke", diff, U)
        c = s[:, None, None] ** 2 * lam[None] + sigma[:, None, None] ** 2
        logn = -0.5 * ((y**2 / c).sum(-1) + c.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return self.weights.to(dt).to(dev).log() + logn, y, c, s, U, lam

    def log_prob(self, x: Tensor, s=1.0, sigma=0.0) -> Tensor:
        """log p_t(x) for the marginal with scale s and std σ (defaults: the data density p_0)."""
        logp, *_ = self._parts(x, s, sigma)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: Tensor, s=1.0, sigma=0.0) -> Tensor:
        """∇ log p_t(x)."""
        logp, y, c, _, U, _ = self._parts(x, s, sigma)
        r = torch.softmax(logp, dim=1)
        return -torch.einsum("bk,bke,kde->bd", r, y / c, U)

    def x0(self, x: Tensor, s, sigma) -> Tensor:
        """The exact denoiser E[x_0 | x_t = x]."""
        logp, y, c, s, U, lam = self._parts(x, s, sigma)
        r = torch.softmax(logp, dim=1)
        post = torch.einsum("bke,kde->bkd", s[:, None, None] * lam[None] / c * y, U)
        return torch.einsum("bk,bkd->bd", r, self.means.to(x)[None] + post)

    def responsibilities(self, x: Tensor, s=1.0, sigma=0.0) -> Tensor:
        """r_k(x) = P(component k | x_t = x), shape (B, K)."""
        return torch.softmax(self._parts(x, s, sigma)[0], dim=1)

    def denoiser(self, sde: SDE, prediction: str = "x0") -> Denoiser:
        """The exact model under ``sde`` as a :class:`Denoiser` (x0- or score-parameterised)."""
        if prediction == "x0":
            def net(x, t):
                return self.x0(x, sde.s(t), sde.sigma(t))
        elif prediction == "score":
            def net(x, t):
                return self.score(x, sde.s(t), sde.sigma(t))
        else:
            raise ValueError("the oracle is exposed as prediction 'x0' or 'score'")
        return Denoiser(net, sde, prediction=prediction)

    # --- conditionals (ground truth for guidance and inpainting) --------------------------------
    def subset(self, components) -> "GaussianMixture":
        """The mixture restricted to ``components`` (weights renormalised): p_0(x | class) when
        a class is a group of components."""
        idx = torch.as_tensor(components, dtype=torch.long).reshape(-1)
        out = object.__new__(GaussianMixture)
        w = self.weights[idx]
        out.weights, out.means = w / w.sum(), self.means[idx]
        out.evals, out.evecs = self.evals[idx], self.evecs[idx]
        return out

    def class_log_likelihoods(self, x: Tensor, classes, s=1.0, sigma=0.0) -> Tensor:
        r"""log p_t(x, y) for each class y (a list of component groups), shape (B, n_classes):
        the exact noise-conditional classifier's logits, :math:`\log p_t(y\mid x)` up to a
        per-sample constant."""
        logp = self._parts(x, s, sigma)[0]
        return torch.stack([torch.logsumexp(logp[:, list(c)], dim=1) for c in classes], dim=1)

    def conditional(self, known, values) -> "GaussianMixture":
        r"""p_0(x_u | x_k = values) over the unknown coordinates u (Gaussian conditioning per
        component, weights ∝ π_k N(values; μ_k[k], Σ_k[k,k])):

        .. math:: \mu_{u|k} = \mu_u + \Sigma_{uk}\Sigma_{kk}^{-1}(v - \mu_k),\quad
                  \Sigma_{u|k} = \Sigma_{uu} - \Sigma_{uk}\Sigma_{kk}^{-1}\Sigma_{ku}.
        """
        known = torch.as_tensor(known, dtype=torch.bool).reshape(-1)
        if known.shape != (self.dim,) or known.all() or not known.any():
            raise ValueError(f"known must be a boolean mask of {self.dim} coordinates with at least "
                             "one known and one unknown")
        v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if v.shape != (int(known.sum()),):
            raise ValueError(f"values must hold the {int(known.sum())} known coordinates")
        S, mu = self.covs, self.means
        k, u = known, ~known
        Skk, Suk, Suu = S[:, k][:, :, k], S[:, u][:, :, k], S[:, u][:, :, u]
        diff = v[None] - mu[:, k]
        sol = torch.linalg.solve(Skk, diff[..., None])[..., 0]
        means = mu[:, u] + torch.einsum("kij,kj->ki", Suk, sol)
        covs = Suu - Suk @ torch.linalg.solve(Skk, Suk.transpose(1, 2))
        _, logdet = torch.linalg.slogdet(Skk)
        logw = (self.weights.log() - 0.5 * ((diff * sol).sum(-1) + logdet))
        return GaussianMixture(torch.softmax(logw, 0).clamp_min(1e-300), means,
                               covs=0.5 * (covs + covs.transpose(1, 2)))
