r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any SDE of the family.

In EDM's variables x̃ = x/s and σ̃ = σ/s the PF-ODE is dx̃/dσ̃ = (x̃ − D(x̃; σ̃))/σ̃. Each step
first "churns": it raises the noise level to σ̂ = σ̃_i(1 + γ_i) by adding fresh noise,

.. math:: \hat x = \tilde x_i + \sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_{noise}\,z,\qquad
          \gamma_i = \min(S_{churn}/N,\ \sqrt2 - 1)\ \text{if}\ \tilde\sigma_i \in [S_{tmin}, S_{tmax}]\ \text{else}\ 0,

then takes a Heun step of the PF-ODE from σ̂ to σ̃_{i+1}. S_churn = 0 gives EDM's deterministic
Heun sampler (Algorithm 1). σ̂ is capped at the SDE's σ̃(T).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .registry import Context, register_solver

__all__ = ["sample_edm_stochastic"]


@register_solver("edm_stochastic", kind="sde", order=None, default_steps=40,
                 description="EDM stochastic sampler: Heun + churn (S_churn=40, S_tmin=0.05, "
                             "S_tmax=50, S_noise=1.003)")
def sample_edm_stochastic(model, x: Tensor, ts: Tensor, ctx: Context, S_churn: float = 40.0,
                          S_tmin: float = 0.05, S_tmax: float = 50.0,
                          S_noise: float = 1.003) -> Tensor:
    if S_churn < 0 or S_noise <= 0 or S_tmin > S_tmax:
        raise ValueError("need S_churn >= 0, S_noise > 0 and S_tmin <= S_tmax")
    sde = model.sde
    n = len(ts) - 1
    nu = sde.noise_level(ts)
    nu_cap = sde.noise_level(torch.as_tensor(sde.T, dtype=ts.dtype, device=ts.device))
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    gamma_max = min(S_churn / n, math.sqrt(2) - 1)

    def slope(xt: Tensor, level: Tensor, t: Tensor) -> Tensor:
        return (xt - model.x0(sde.s(t) * xt, t * ones, **ctx.cond)) / level

    xt = x / sde.s(ts[0])
    for i in range(n):
        gamma = gamma_max if S_tmin <= float(nu[i]) <= S_tmax else 0.0
        nu_hat = torch.minimum(nu[i] * (1 + gamma), nu_cap)
        t_hat = ts[i]
        if nu_hat > nu[i]:
            xt = xt + (nu_hat**2 - nu[i] ** 2).sqrt() * S_noise * ctx.randn_like(xt)
            t_hat = sde.t_from_noise_level(nu_hat)  # the only time not on the grid
        d = slope(xt, nu_hat, t_hat)
        x_next = xt + (nu[i + 1] - nu_hat) * d
        xt = xt + (nu[i + 1] - nu_hat) * 0.5 * (d + slope(x_next, nu[i + 1], ts[i + 1]))
        xt = ctx.step_done(ts[i + 1], sde.s(ts[i + 1]) * xt) / sde.s(ts[i + 1])
    return sde.s(ts[-1]) * xt
