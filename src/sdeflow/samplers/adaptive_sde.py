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
E is dominated by a few coordinates: the method is meant for high-dimensional data (images);
in 2-D its samples are visibly too concentrated (measured MMD² 10–30× the noise floor on the
8-Gaussian ring), where a fixed-step sampler should be used instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..reverse import drift_from_score, noise_scale
from ..sde import bcast
from .registry import Context, register_solver
from .rk import check_error_finite, report_step_counts, rms, select_rows

__all__ = ["sample_adaptive_sde"]


@register_solver("adaptive_sde", kind="sde", order=None, default_steps=None,
                 description="Gotta Go Fast: adaptive Euler–Maruyama / Improved Euler pair on the "
                             "reverse SDE, rtol=0.05, atol=0.0078")
def sample_adaptive_sde(model, x: Tensor, ts: Tensor, ctx: Context, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.01, safety: float = 0.9,
                        exponent: float = 0.9, max_steps: int = 100_000) -> Tensor:
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    B = x.shape[0]
    t_end = float(ts[-1])
    t = torch.full((B,), float(ts[0]), dtype=x.dtype, device=x.device)
    h = torch.full_like(t, h_init * float(ts[0] - ts[-1]))
    x = x.clone()
    x_prev = x.clone()
    accepted = torch.zeros(B, dtype=torch.long, device=x.device)
    rejected = torch.zeros_like(accepted)
    active = torch.ones(B, dtype=torch.bool, device=x.device)

    def b(xx, tt, rows):
        return drift_from_score(model, xx, tt, model.score(xx, tt, **select_rows(ctx.cond, rows)), 1.0)

    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        rows = None if idx.numel() == B else idx
        ti, xi = t[idx], x[idx]
        hi = torch.minimum(h[idx], ti - t_end)
        z = ctx.randn_like(xi)
        hb, sq = bcast(hi, xi), bcast(hi.sqrt(), xi)
        x1 = xi - hb * b(xi, ti, rows) + bcast(noise_scale(model, ti), xi) * sq * z
        x2 = xi - hb * b(x1, ti - hi, rows) + bcast(noise_scale(model, ti - hi), xi) * sq * z
        xh = 0.5 * (x1 + x2)
        delta = torch.maximum(torch.full_like(x1, atol), rtol * torch.maximum(x1.abs(), x_prev[idx].abs()))
        err = rms((x1 - xh) / delta)
        check_error_finite(err, "adaptive_sde")
        ok = err <= 1.0
        acc = idx[ok]
        x[acc], x_prev[acc] = xh[ok], x1[ok]
        t[acc] = torch.where(hi[ok] >= ti[ok] - t_end, torch.full_like(hi[ok], t_end), ti[ok] - hi[ok])
        accepted[acc] += 1
        rejected[idx[~ok]] += 1
        h[idx] = safety * hi * err.clamp_min(1e-10) ** (-exponent)
        active[acc] = t[acc] > t_end
        if ok.any():
            ctx.step_done(t, x, advance=0)
    else:
        raise RuntimeError(f"adaptive SDE solver did not reach t={t_end} in {max_steps} steps")
    report_step_counts(ctx, accepted, rejected)
    return x
