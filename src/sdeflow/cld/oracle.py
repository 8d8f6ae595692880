r"""Exact CLD scores and densities of a Gaussian mixture.

Under CLD each component N(m_k, C_k) of the data stays Gaussian in (x, v): in the eigenbasis
C_k = U_k diag(λ_k) U_kᵀ every direction e decouples into a 2×2 block

.. math:: P_{k,e}(t) = \begin{pmatrix}a^2\lambda_{k,e} + \Sigma_{xx} & ab\,\lambda_{k,e} + \Sigma_{xv}\\
          ab\,\lambda_{k,e} + \Sigma_{xv} & b^2\lambda_{k,e} + \Sigma_{vv}\end{pmatrix}

around the mean (a m_k, b m_k), so log p_t(x, v) and both halves of its gradient are closed-form
mixtures (responsibilities × per-component Gaussian scores).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..oracle import GaussianMixture
from ..sde import bcast
from .model import CLDModel
from .process import CLD, split_state

__all__ = ["mixture_log_prob", "mixture_score", "mixture_model"]


def _parts(gmm: GaussianMixture, cld: CLD, u: Tensor, t):
    """(log π_k N_k(u), per-component score_x, score_v in the data basis), float64."""
    x, v = (z.double() for z in split_state(u))
    if x.ndim != 2 or x.shape[1] != gmm.dim:
        raise ValueError(f"u must have shape (B, {2 * gmm.dim}), got {tuple(u.shape)}")
    t = torch.as_tensor(t, dtype=torch.float64, device=u.device).expand(x.shape[0])
    a, b = cld.mean_coeffs(t)
    mu, U, lam = (z.to(u.device) for z in (gmm.means, gmm.evecs, gmm.evals))
    yx = torch.einsum("bkd,kde->bke", x[:, None] - bcast(a, x)[:, None] * mu[None], U)
    yv = torch.einsum("bkd,kde->bke", v[:, None] - bcast(b, v)[:, None] * mu[None], U)
    pxx, pxv, pvv = cld.data_cov(t[:, None, None], lam.double())  # per (sample, component, e)
    det = pxx * pvv - pxv**2
    gx, gv = (pvv * yx - pxv * yv) / det, (pxx * yv - pxv * yx) / det  # P⁻¹ y
    quad = (yx * gx + yv * gv).sum(-1)
    logn = -0.5 * (quad + det.log().sum(-1) + 2 * gmm.dim * math.log(2 * math.pi))
    back = "bke,kde->bkd"
    return (gmm.weights.to(u.device).log() + logn, -torch.einsum(back, gx, U),
            -torch.einsum(back, gv, U))


def mixture_log_prob(gmm: GaussianMixture, cld: CLD, u: Tensor, t) -> Tensor:
    """log p_t(x, v) of the mixture under CLD (float64, shape (B,))."""
    return torch.logsumexp(_parts(gmm, cld, u, t)[0], dim=1)


def mixture_score(gmm: GaussianMixture, cld: CLD, u: Tensor, t) -> tuple[Tensor, Tensor]:
    """(∇_x log p_t, ∇_v log p_t) at u = (x, v), float64."""
    logp, sx, sv = _parts(gmm, cld, u, t)
    r = torch.softmax(logp, dim=1)
    return torch.einsum("bk,bkd->bd", r, sx), torch.einsum("bk,bkd->bd", r, sv)


def mixture_model(gmm: GaussianMixture, cld: CLD, score_scale: float = 1.0,
                  sigma_data: float = 1.0) -> CLDModel:
    """The exact model α = −∇_v log p_t / ℓ_t as a :class:`CLDModel` (``sigma_data``: the σ_d
    whose Gaussian score SSCS's S step linearises around; ``score_scale`` ≠ 1 scales the score:
    a deliberately wrong model for tests that must reject it)."""
    def net(u: Tensor, t: Tensor) -> Tensor:
        sv = mixture_score(gmm, cld, u, t)[1]
        return (-score_scale * sv / bcast(cld.ell(t.double()), sv)).to(u.dtype)
    return CLDModel(net, cld, precondition=None, sigma_data=sigma_data)
