r"""The reverse-time processes of a forward SDE (Song et al. 2021, eqs. 6 and 13).

For :math:`dx = f(t)x\,dt + g(t)\,dw`, the one-parameter family

.. math:: dx = \Big[f(t)x - \frac{1+\gamma^2}{2}\,g(t)^2\,\nabla_x\log p_t(x)\Big]dt
              + \gamma\,g(t)\,d\bar w

run backwards in time has the same marginals p_t for every γ ≥ 0: γ = 1 is the reverse-time SDE,
γ = 0 the probability-flow ODE. Samplers call :func:`drift` and :func:`noise_scale`; the score
comes from a :class:`~sdeflow.denoiser.Denoiser`.
"""
from __future__ import annotations

from torch import Tensor

from .denoiser import Denoiser
from .sde import bcast

__all__ = ["drift", "drift_from_score", "pf_ode_drift", "noise_scale"]


def drift_from_score(model: Denoiser, x: Tensor, t: Tensor, score: Tensor,
                     gamma: float = 0.0) -> Tensor:
    """Reverse drift f(t)x − (1+γ²)/2 · g(t)² · score, given a score already computed."""
    sde = model.sde
    return bcast(sde.f(t), x) * x - bcast(0.5 * (1 + gamma**2) * sde.g2(t), x) * score


def drift(model: Denoiser, x: Tensor, t: Tensor, gamma: float = 0.0, **cond) -> Tensor:
    """Drift of the γ-family at (x, t) (one network evaluation)."""
    return drift_from_score(model, x, t, model.score(x, t, **cond), gamma)


def pf_ode_drift(model: Denoiser, x: Tensor, t: Tensor, **cond) -> Tensor:
    """Probability-flow ODE dx/dt = f(t)x − ½ g(t)² ∇log p_t(x)."""
    return drift(model, x, t, 0.0, **cond)


def noise_scale(model: Denoiser, t: Tensor, gamma: float = 1.0) -> Tensor:
    """Diffusion of the γ-family: γ·g(t)."""
    return gamma * model.sde.g2(t).sqrt()
