r"""Consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1), for any SDE.

A consistency model f(x, t) (a :class:`~sdeflow.Denoiser`, usually with
``precondition="consistency"``) maps any point of a PF-ODE trajectory to its start x̂₀, so one
evaluation at T is a sample. Multistep sampling on the grid τ₀ = T > τ₁ > … > τₙ alternates
denoising and re-noising with fresh noise:

.. math:: \hat x_0 \leftarrow f(x_T, \tau_0),\qquad
          x_{\tau_i} = s(\tau_i)\,\hat x_0 + \sigma(\tau_i)\,z_i,\quad
          \hat x_0 \leftarrow f(x_{\tau_i}, \tau_i)\quad (i = 1, …, n-1).

The last time τₙ (t_min by default) only ends the grid, as for every solver: ``steps`` = n
evaluations. The solver returns the data estimate x̂₀ itself — sample with ``denoise=False``
(``denoise=True`` would spend one more NFE on f(x̂₀, t_min) = x̂₀/s(t_min)).

Zero-shot editing (inpainting, colorization; the paper's Algorithm 4) is the context's
constraint applied to every state the model sees: to x_T, and to each re-noised x_{τ_i}.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..sde import bcast
from .registry import Context, register_solver

__all__ = ["sample_consistency"]


@register_solver("consistency", kind="sde", order=None, default_steps=1, returns_data=True,
                 description="consistency-model sampling: x̂0 = f(x, τ_i), re-noised to τ_{i+1} "
                             "(1 NFE/step; returns x̂0, no final denoising call)")
def sample_consistency(model, x: Tensor, ts: Tensor, ctx: Context) -> Tensor:
    sde, ones = model.sde, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    x = ctx.constrain(ts[0], x)
    for i in range(len(ts) - 1):
        x0 = model.x0(x, ts[i] * ones, **ctx.cond)
        t_next = ts[i + 1]
        x = bcast(sde.s(t_next), x0) * x0
        if i < len(ts) - 2:  # re-noise for the next evaluation; the last state is x̂0 itself
            x = x + bcast(sde.sigma(t_next), x0) * ctx.randn_like(x0)
        x = ctx.step_done(t_next, x)
    return x / bcast(sde.s(ts[-1]), x)
