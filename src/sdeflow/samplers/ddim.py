r"""DDIM (Song, Meng & Ermon 2021) for any SDE of the family x_t = s(t)x_0 + σ(t)ε.

One step from t to t' < t with the model's x̂0 and ε̂ at (x_t, t):

.. math:: x_{t'} = s(t')\hat x_0 + \sqrt{\sigma(t')^2 - c^2}\,\hat\varepsilon + c\,z,\qquad
          c = \eta\,\sqrt{\frac{v\,\sigma(t')^2}{\sigma(t)^2}},

where (a, v) is the exact forward transition t' → t (:meth:`SDE.transition`). η = 0 is the
deterministic DDIM, a first-order discretisation of the PF-ODE (the Euler method for
d(x/s)/dσ̃ = ε̂); η = 1 draws from the DDPM posterior q(x_{t'} | x_t, x̂0), i.e. the ancestral
sampler of Ho et al. 2020 — so ``ancestral`` is this step with η = 1.

A model with a learned variance (``Denoiser.learn_sigma``) takes, at η = 1, the same posterior
mean with Improved DDPM's variance :math:`\exp(\hat v\log\beta + (1-\hat v)\log\tilde\beta)`
(Nichol & Dhariwal 2021, eq. 15; v̂ the network's interpolation) in place of the posterior's
:math:`c^2 = \tilde\beta = \beta\,\sigma(t')^2/\sigma(t)^2`, where β is the forward variance
of this step (v above) — on any grid, as their strided sampling does; at η ≠ 1 the learned
variance is not used. v̂ is not clamped (Improved DDPM does not clamp it either), so a step
with β̃ = 0 (one ending at σ(t') = 0, t' = 0) is noise-free rather than log 0 = −∞ times
(1 − v̂): its posterior is a point, and so is the model's step there.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import learned_log_variance
from ..sde import bcast
from .registry import Context, register_solver

__all__ = ["ddim_step", "sample_ddim"]


def ddim_step(model, x: Tensor, t: Tensor, t_next: Tensor, ctx: Context, eta: float = 0.0) -> Tensor:
    """One DDIM step (1 NFE) from time t to t_next (both shape (B,))."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    sde = model.sde
    learned = eta == 1 and getattr(model, "learn_sigma", False)
    pred, v_hat = model.predict_variance(x, t, **ctx.cond) if learned else \
        (model.predict(x, t, **ctx.cond), None)
    sig, sig_next = sde.sigma(t), sde.sigma(t_next)
    _, v = sde.transition(t_next, t)
    c2 = (eta**2 * v * sig_next**2 / sig**2).clamp(max=sig_next**2)
    x_next = bcast(sde.s(t_next), x) * pred.x0 + bcast((sig_next**2 - c2).sqrt(), x) * pred.eps
    if eta > 0:
        std = bcast(c2.sqrt(), x)
        if v_hat is not None:  # where c² = 0 the step stays noise-free (module docstring)
            std = torch.where(std > 0, (0.5 * learned_log_variance(v_hat, v.log(), c2.log())).exp(),
                              std)
        x_next = x_next + std * ctx.randn_like(x)
    return x_next


@register_solver("ddim", kind="ode", order=1, default_steps=50,
                 description="DDIM with eta (eta=0: deterministic PF-ODE discretisation; "
                             "eta=1: DDPM-like)")
def sample_ddim(model, x, ts, ctx: Context, eta: float = 0.0):
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = ddim_step(model, x, t * ones, t_next * ones, ctx, eta)
        x = ctx.step_done(t_next, x)
    return x
