r"""Adaptive step sizes for the reverse-time SDE (Jolicoeur-Martineau et al. 2021, "Gotta Go
Fast When Generating Data with Score-Based Models", Algorithm 1).

Each attempt from t with step h (integrating backwards, t → t − h) shares one noise draw z:

.. math::
    x' = x - h\,b(x, t) + g(t)\sqrt h\,z,\qquad
    \tilde x = x - h\,b(x', t-h) + g(t-h)\sqrt h\,z,\qquad x'' = \tfrac12(x' + \tilde x),

with b = f − g²∇log p_t the reverse drift. x' (Euler–Maruyama) and x'' (stochastic Improved
Euler) form an embedded pair; the error :math:`E = \|(x' - x'')/\delta\|_{RMS}` with the mixed
tolerance :math:`\delta = \max(\epsilon_{abs}, \epsilon_{rel}\max(|x'|, |x'_{prev}|))` accepts
the step (x ← x'') when E ≤ 1, and the next step is h·θ·E^{−r} (θ = 0.9, r = 0.9). Two NFE per
attempt; each sample controls its own step size.

Acceptance depends on the noise draw, which biases the accepted noise towards small draws when
E is dominated by a few coordinates: the method is meant for high-dimensional data (images),
not low-dimensional data (measurements: docs/solver_notes.md).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..reverse import drift_from_score, noise_scale
from ..sde import bcast
from .adaptive import AdaptiveState, StepController, Trial, adaptive_loop, rms, select_rows
from .registry import Context, register_solver

__all__ = ["sample_adaptive_sde"]


@register_solver("adaptive_sde", kind="sde", order=None, default_steps=None,
                 description="Gotta Go Fast: adaptive Euler–Maruyama / Improved Euler pair on the "
                             "reverse SDE, rtol=0.05, atol=0.0078")
def sample_adaptive_sde(model, x: Tensor, ts: Tensor, ctx: Context, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.01, safety: float = 0.9,
                        exponent: float = 0.9, max_steps: int = 100_000) -> Tensor:
    """Reverse SDE from ts[0] to ts[-1] with Algorithm 1 (module docstring); the first step is
    ``h_init`` of the interval, the controller θ = ``safety``, r = ``exponent`` (no clipping)."""
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    B = x.shape[0]
    t = torch.full((B,), float(ts[0]), dtype=x.dtype, device=x.device)
    h = torch.full_like(t, h_init * float(ts[0] - ts[-1]))
    x_prev = x.clone()

    def b(xx, tt, rows):
        return drift_from_score(model, xx, tt, model.score(xx, tt, **select_rows(ctx.cond, rows)), 1.0)

    def step(ti: Tensor, xi: Tensor, dt: Tensor, rows: Tensor) -> Trial:
        hi, sub = -dt, None if rows.numel() == B else rows
        z = ctx.randn_like(xi)
        hb, sq = bcast(hi, xi), bcast(hi.sqrt(), xi)
        x1 = xi - hb * b(xi, ti, sub) + bcast(noise_scale(model, ti), xi) * sq * z
        x2 = xi - hb * b(x1, ti - hi, sub) + bcast(noise_scale(model, ti - hi), xi) * sq * z
        xh = 0.5 * (x1 + x2)
        delta = torch.maximum(torch.full_like(x1, atol), rtol * torch.maximum(x1.abs(), x_prev[rows].abs()))

        def accept(ok: Tensor, acc: Tensor, t_acc: Tensor) -> None:
            x_prev[acc] = x1[ok]
        return Trial(xh, rms((x1 - xh) / delta), accept=accept)

    control = StepController(order=1 / exponent, safety=safety, min_factor=0.0,
                             max_factor=math.inf, hold_after_reject=False)
    return adaptive_loop(step, AdaptiveState(t, x.clone(), h, float(ts[-1])), control, ctx,
                         name="adaptive_sde", max_steps=max_steps)
