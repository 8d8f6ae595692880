r"""Training losses of a CLD model (Dockhorn et al. 2022, §3.2).

**Hybrid score matching** (HSM) regresses on the kernel given x₀ only (v₀ ~ N(0, γM)
marginalised), whose velocity score is :math:`-\ell_t\varepsilon_v`:

.. math:: \mathcal L_{HSM} = E_{t,x_0,\varepsilon}\big[w(t)\,\|\alpha_\theta(u_t, t) - \varepsilon_v\|^2\big],
          \quad u_t = \mu_t(x_0) + L_t\varepsilon.

**Plain DSM** draws v₀ ~ N(0, γM) too and regresses on the kernel from u₀ = (x₀, v₀), whose
covariance :math:`\Sigma'_t` starts at 0: :math:`\nabla_v\log p(u_t\mid u_0) = -\ell'_t\varepsilon'_v`,
so in α units the target is :math:`(\ell'_t/\ell_t)\,\varepsilon'_v`, with ℓ'_t/ℓ_t → 2/√3 as
t → 0 (both grow like 𝓑^{-1/2}): DSM's extra variance is bounded, up to 16/9 of HSM's at small
t (tests/cld measure 1.75–1.80 there and 1.17 over t ~ U[10⁻⁵, 1] with the ε weighting).
Both have the same minimiser α* = E[ε_v | u_t].

Weightings ``w``: ``"eps"`` (λ(t) = ℓ_t⁻² in score units: a plain ε_v regression, the paper's
choice for sample quality) or ``"likelihood"`` (λ(t) = Γβ(t), half the velocity's g²: the
weighting whose loss bounds the negative log-likelihood, w = Γβℓ_t² in α units). Times are
uniform on [t_eps, T]; errors are averaged over dimensions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sde import bcast
from .model import CLDModel
from .process import join_state

__all__ = ["cld_loss", "CLD_LOSSES", "CLD_WEIGHTINGS", "draw_cld_noise"]

CLD_LOSSES = ("hsm", "dsm")
CLD_WEIGHTINGS = ("eps", "likelihood")


def draw_cld_noise(x0: Tensor, t_eps: float, T: float, generator=None) -> dict[str, Tensor]:
    """Every random number of a CLD loss: t ~ U[t_eps, T], ε_x, ε_v and the DSM's z₀ for v₀."""
    n = x0.shape[0]
    t = t_eps + (T - t_eps) * torch.rand(n, generator=generator, dtype=x0.dtype)
    z = torch.randn((3, *x0.shape), generator=generator, dtype=x0.dtype)
    return dict(t=t.to(x0.device), eps_x=z[0].to(x0.device), eps_v=z[1].to(x0.device),
                z0=z[2].to(x0.device))


def _dsm_state(model: CLDModel, x0: Tensor, t: Tensor, eps_x: Tensor, eps_v: Tensor,
               z0: Tensor) -> tuple[Tensor, Tensor]:
    """(u_t from u₀ = (x₀, v₀), the α-unit target (ℓ'_t/ℓ_t) ε_v)."""
    cld = model.sde
    t64 = t.double()
    B = cld.B(t64)
    e11, e12, e21, e22 = (bcast(c.to(x0.dtype), x0) for c in cld.propagator(B))
    l11, l21, l22 = (bcast(c.to(x0.dtype), x0) for c in cld.cholesky(*cld.noise_cov(B)))
    v0 = math.sqrt(cld.gamma * cld.M) * z0
    x = e11 * x0 + e12 * v0 + l11 * eps_x
    v = e21 * x0 + e22 * v0 + l21 * eps_x + l22 * eps_v
    ratio = bcast((1.0 / cld.cholesky(*cld.noise_cov(B))[2] / cld.ell(t64)).to(x0.dtype), x0)
    return join_state(x, v), ratio * eps_v


def cld_loss(model: CLDModel, x0: Tensor, noise: dict[str, Tensor], *, loss: str = "hsm",
             weighting: str = "eps", cond: dict | None = None, reduce: bool = True) -> Tensor:
    """HSM or DSM (module docstring) with the draws of :func:`draw_cld_noise`; the mean over
    the batch, or per sample with ``reduce=False``."""
    if loss not in CLD_LOSSES:
        raise ValueError(f"unknown CLD loss {loss!r}; choices: {list(CLD_LOSSES)}")
    if weighting not in CLD_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choices: {list(CLD_WEIGHTINGS)}")
    cld, t = model.sde, noise["t"]
    if loss == "hsm":
        u, target = cld.perturb(x0, t, noise["eps_x"], noise["eps_v"]), noise["eps_v"]
    else:
        u, target = _dsm_state(model, x0, t, noise["eps_x"], noise["eps_v"], noise["z0"])
    err = (model.alpha(u, t, **(cond or {})) - target).pow(2).reshape(len(x0), -1).mean(1)
    if weighting == "likelihood":
        err = err * (cld.Gamma * cld.beta(t) * cld.ell(t) ** 2)
    return err.mean() if reduce else err
