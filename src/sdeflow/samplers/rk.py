r"""Explicit Runge–Kutta methods as Butcher tableaux, one fixed-step loop and one adaptive loop.

A method is data (:class:`Tableau`); :func:`rk_fixed` integrates any vector field
``F(t, x)`` over a given grid, :func:`rk_adaptive` with an embedded pair and per-sample step-size
control (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4). The PF-ODE solvers ``euler``,
``heun``, ``rk4`` and ``rk45`` (Dormand & Prince 1980) register at the bottom.

The adaptive loop controls each sample's step size separately, so a sample's trajectory and
result do not depend on which other samples share its batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..reverse import pf_ode_drift
from ..sde import bcast
from .registry import Context, register_solver

__all__ = ["Tableau", "TABLEAUX", "rk_fixed", "rk_adaptive", "select_rows", "report_step_counts",
           "rms"]

# F(t of shape (B,), x, rows) -> dx/dt. ``rows`` indexes the batch rows that x holds (the
# adaptive solver evaluates only unfinished samples), or is None for the whole batch: per-sample
# data such as conditioning or Hutchinson probes must be sliced with it.
Field = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau: stages k_i = F(t + c_i h, x + h Σ_j a_ij k_j), x' = x + h Σ b_i k_i.

    ``b_low`` (optional) is the embedded lower-order solution used for error control; ``fsal``
    marks methods whose last stage is F at the new point (reused as the next step's first stage).
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_low: tuple[float, ...] | None = None
    fsal: bool = False


EULER = Tableau("euler", 1, (0.0,), ((),), (1.0,))
HEUN = Tableau("heun", 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))
RK4 = Tableau("rk4", 4, (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
              (1 / 6, 1 / 3, 1 / 3, 1 / 6))
DOPRI5 = Tableau(
    "dopri5", 5,
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    ((),
     (1 / 5,),
     (3 / 40, 9 / 40),
     (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
     (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
    fsal=True,
)
TABLEAUX = {tab.name: tab for tab in (EULER, HEUN, RK4, DOPRI5)}


def _stages(F: Field, tab: Tableau, t: Tensor, x: Tensor, h: Tensor, k1: Tensor | None,
            rows: Tensor | None = None):
    """All stages of one step (per-sample h of shape (B,)); returns (x_new, stages)."""
    hb = bcast(h, x)
    ks = [F(t, x, rows) if k1 is None else k1]
    for c_i, a_i in zip(tab.c[1:], tab.a[1:]):
        dx = sum(a * k for a, k in zip(a_i, ks) if a != 0.0)
        ks.append(F(t + c_i * h, x + hb * dx, rows))
    x_new = x + hb * sum(b * k for b, k in zip(tab.b, ks) if b != 0.0)
    return x_new, ks


def rk_fixed(F: Field, x: Tensor, ts: Tensor, tab: Tableau, ctx: Context | None = None) -> Tensor:
    """Integrate dx/dt = F(t, x) over the grid ``ts`` (increasing or decreasing), one RK step per
    interval. NFE = (#stages) × (len(ts) − 1)."""
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x, _ = _stages(F, tab, t * ones, x, (t_next - t) * ones, None, None)
        if ctx is not None:
            x = ctx.step_done(t_next, x)
    return x


def rms(e: Tensor) -> Tensor:
    """Per-sample root-mean-square over all but the batch dimension."""
    return e.reshape(e.shape[0], -1).pow(2).mean(1).sqrt()


def check_error_finite(err: Tensor, solver: str) -> None:
    """Adaptive loops: a non-finite error estimate would reject every step until max_steps."""
    if not torch.isfinite(err).all():
        raise FloatingPointError(f"{solver}: non-finite values in the solution (a NaN or inf "
                                 "from the model?)")


def rk_adaptive(F: Field, x: Tensor, t0: float, t1: float, tab: Tableau = DOPRI5, *,
                rtol: float = 1e-5, atol: float = 1e-5, h0: float | None = None,
                safety: float = 0.9, max_factor: float = 10.0, max_steps: int = 100_000,
                ctx: Context | None = None) -> Tensor:
    r"""Integrate from t0 to t1 with an embedded pair and per-sample step control.

    Each sample's error is the RMS of :math:`(x_{high} - x_{low}) / (atol + rtol\max(|x|,|x'|))`;
    a step is accepted when it is ≤ 1 and the next step is
    :math:`h \cdot \mathrm{clip}(0.9\,err^{-1/(q+1)}, 0.2, 10)` with q the lower order.
    The first step follows Hairer's starting-step heuristic (one extra evaluation).
    ``ctx.stats`` receives ``accepted``/``rejected`` step counts (mean and max over samples).
    """
    if tab.b_low is None:
        raise ValueError(f"tableau {tab.name!r} has no embedded pair for error control")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    B = x.shape[0]
    dev, dt = x.device, x.dtype
    direction = 1.0 if t1 > t0 else -1.0
    t = torch.full((B,), float(t0), dtype=dt, device=dev)
    x = x.clone()
    expo = -1.0 / tab.order  # embedded order q = order − 1, exponent −1/(q+1)
    db = [b - bl for b, bl in zip(tab.b, tab.b_low)]

    def scale(*xs):
        return atol + rtol * torch.stack([v.abs() for v in xs]).amax(0)

    k1 = F(t, x, None)
    if h0 is None:  # Hairer, Nørsett & Wanner, algorithm of §II.4
        d0, d1 = rms(x / scale(x)), rms(k1 / scale(x))
        h_a = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        x_try = x + bcast(direction * h_a, x) * k1
        d2 = rms((F(t + direction * h_a, x_try, None) - k1) / scale(x)) / h_a
        dmax = torch.maximum(d1, d2)
        h_b = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h_a, 1e-6), h_a * 1e-3),
                          (0.01 / dmax) ** (1.0 / tab.order))
        h = torch.minimum(100 * h_a, h_b)
    else:
        h = torch.full((B,), abs(float(h0)), dtype=dt, device=dev)
    h = torch.minimum(h, torch.full_like(h, abs(t1 - t0)))

    accepted = torch.zeros(B, dtype=torch.long, device=dev)
    rejected = torch.zeros_like(accepted)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    just_rejected = torch.zeros_like(active)
    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        ti, xi, hi = t[idx], x[idx], h[idx]
        remaining = (t1 - ti) * direction
        hi = torch.minimum(hi, remaining)
        x_new, ks = _stages(F, tab, ti, xi, direction * hi, k1[idx] if tab.fsal else None,
                            None if idx.numel() == B else idx)
        err_vec = bcast(direction * hi, xi) * sum(d * k for d, k in zip(db, ks) if d != 0.0)
        err = rms(err_vec / scale(xi, x_new))
        check_error_finite(err, "rk_adaptive")
        ok = err <= 1.0
        factor = (safety * err.clamp_min(1e-10) ** expo).clamp(0.2, max_factor)
        # no growth on a rejection, nor on the step right after one (as scipy's RK45)
        factor = torch.where(ok & ~just_rejected[idx], factor, factor.clamp(max=1.0))
        just_rejected[idx] = ~ok
        acc = idx[ok]
        x[acc] = x_new[ok]
        t[acc] = torch.where(hi[ok] >= remaining[ok], torch.full_like(hi[ok], float(t1)),
                             ti[ok] + direction * hi[ok])
        if tab.fsal:
            k1[acc] = ks[-1][ok]
        accepted[acc] += 1
        rejected[idx[~ok]] += 1
        h[idx] = hi * factor
        active[acc] = (t[acc] - t1) * direction < 0
        if ctx is not None and ok.any():
            ctx.step_done(t, x, advance=0)
    else:
        raise RuntimeError(f"adaptive solver did not reach t={t1} in {max_steps} steps "
                           f"(rtol={rtol}, atol={atol}); loosen the tolerances")
    if ctx is not None:
        report_step_counts(ctx, accepted, rejected)
    return x


def report_step_counts(ctx: Context, accepted: Tensor, rejected: Tensor) -> None:
    """Per-sample accepted/rejected step counts of an adaptive solver → ``ctx.stats``."""
    ctx.stats.update(accepted_mean=accepted.double().mean().item(), accepted_max=int(accepted.max()),
                     rejected_mean=rejected.double().mean().item(), rejected_max=int(rejected.max()))


def _pf_field(model, ctx: Context) -> Field:
    def field(t, x, rows):
        return pf_ode_drift(model, x, t, **select_rows(ctx.cond, rows))
    return field


def select_rows(cond: dict, rows: Tensor | None) -> dict:
    """Per-sample conditioning restricted to ``rows`` (tensors with a batch dim are sliced)."""
    if rows is None:
        return cond
    return {k: v[rows] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in cond.items()}


def _fixed_solver(tab: Tableau, description: str):
    @register_solver(tab.name, kind="ode", order=tab.order,
                     default_steps={1: 100, 2: 35, 4: 20}[tab.order], description=description)
    def solve(model, x, ts, ctx: Context):
        return rk_fixed(_pf_field(model, ctx), x, ts, tab, ctx)
    solve.__doc__ = f"PF-ODE with the {tab.name} method ({description})."
    return solve


sample_euler = _fixed_solver(EULER, "explicit Euler, order 1, 1 NFE/step")
sample_heun = _fixed_solver(HEUN, "Heun's method (EDM's 2nd-order sampler), order 2, 2 NFE/step")
sample_rk4 = _fixed_solver(RK4, "classical Runge–Kutta, order 4, 4 NFE/step")


@register_solver("rk45", kind="ode", order=5, default_steps=None,
                 description="adaptive Dormand–Prince 5(4) with rtol/atol (torchdiffeq's dopri5)")
def sample_rk45(model, x, ts, ctx: Context, rtol: float = 1e-5, atol: float = 1e-5,
                h0: float | None = None, max_steps: int = 100_000):
    """PF-ODE with adaptive Dormand–Prince 5(4), per-sample step control; only ts[0], ts[-1] used."""
    return rk_adaptive(_pf_field(model, ctx), x, float(ts[0]), float(ts[-1]), DOPRI5,
                       rtol=rtol, atol=atol, h0=h0, max_steps=max_steps, ctx=ctx)


@register_solver("rk45_logsnr", kind="ode", order=5, default_steps=None,
                 description="adaptive Dormand–Prince 5(4) on the PF-ODE in log noise level: "
                             "dx̃/du = x̃ − x̂0, x̃ = x/s, u = log σ̃ = −λ (rtol/atol on x̃)")
def sample_rk45_logsnr(model, x, ts, ctx: Context, rtol: float = 1e-5, atol: float = 1e-5,
                       h0: float | None = None, max_steps: int = 100_000):
    r"""The PF-ODE written in the variables of EDM's ODE: with x̃ = x/s and u = log(σ/s),

    .. math:: \frac{d\tilde x}{du} = \tilde x - \hat x_0(s\tilde x, t(u)),

    which is nearly autonomous in u for every SDE of the family, so the step size barely has to
    change over the trajectory (in t it must shrink ∝ t near the data)."""
    sde = model.sde
    t0, t1 = ts[0], ts[-1]

    def field(u, xt, rows):
        t = sde.t_from_noise_level(u.exp())
        t = torch.minimum(torch.maximum(t, t1.expand_as(t)), t0.expand_as(t))  # bisection slack
        return xt - model.x0(bcast(sde.s(t), xt) * xt, t, **select_rows(ctx.cond, rows))

    u0, u1 = sde.noise_level(t0).log(), sde.noise_level(t1).log()
    xt = rk_adaptive(field, x / sde.s(t0), float(u0), float(u1), DOPRI5, rtol=rtol, atol=atol,
                     h0=h0, max_steps=max_steps, ctx=ctx)
    return sde.s(t1) * xt
