r"""Samplers of a CLD model: the symmetric splitting sampler SSCS, Euler–Maruyama on the
reverse-time SDE, and our Runge–Kutta solvers on the (x, v) probability-flow ODE.

Generation runs the reverse-time SDE (τ = T − t, :math:`s_v = \nabla_v\log p_t`)

.. math:: dx = -\beta M^{-1}v\,d\tau,\qquad
          dv = \big(\beta x + \Gamma\beta M^{-1}v + 2\Gamma\beta\,s_v\big)d\tau + \sqrt{2\Gamma\beta}\,dW.

**SSCS** (Dockhorn et al. 2022, §3.3) splits it into

* **A** (linear, with all the noise): dx = −βM⁻¹v dτ, dv = (βx − ΓβM⁻¹v)dτ + √(2Γβ)dW — the
  forward CLD in (−x, v), solved exactly over a time-change increment Δ𝓑 by the propagator
  exp(Δ𝓑A) and the noise covariance of :class:`~sdeflow.cld.CLD`;
* **S** (the score): dv = 2Γβ (s_v + M⁻¹v) dτ at frozen x and t, one step from one network
  call — the paper's Euler step (``s_step="euler"``) or, by default, an *exponential* Euler
  step that integrates the linear part of s_v exactly, with the Jacobian J = ∂s_v/∂v of
  Gaussian data N(0, σ_d² I) at the midpoint time (σ_d: the model's ``sigma_data``):
  v ← v + 2ΓΔ𝓑 φ₁(2ΓΔ𝓑 (J + M⁻¹)) (s_v + M⁻¹v), φ₁(z) = (eᶻ − 1)/z,

composed symmetrically, A(h/2) ∘ S(h) ∘ A(h/2), with the score taken at the midpoint time
(Strang splitting, time advanced with the A parts). It is exact when the S part vanishes
(s_v = −v/M, the velocity's equilibrium score) and, with the exponential step, second order for
Gaussian data whose σ_d the model knows (both sub-flows exact); in general first order, as the
paper's Euler step always is (tests/cld measure both). Near the data J ≪ −1/M (the velocity's
score is stiff there), where the Euler step overshoots: on the 2-D ring the exponential step
halves the width error at every NFE (docs/benchmarks.md). This is the auxiliary-variable solver of the
overview's §3.3 — a higher-dimensional SDE with the data as a marginal, whose linear part is
integrated exactly so that larger steps stay stable. It differs from writing the auxiliary
dynamics into the reverse SDE of a scalar process: here the auxiliary variable is part of the
*forward* process, so the model is trained on (x, v) and only the velocity's score is learned.

**Adaptive SSCS** (``sscs_adaptive``) changes the step with the shared PI controller
(:class:`~sdeflow.samplers.adaptive.StepController`, one step for the batch) from an error
estimate that costs no extra network call — the Euler S step's error against the trapezoidal
rule, ΓΔ𝓑‖s_v(τ_n) − s_v(τ_{n−1})‖ (scaled by the step ratio) in RMS over atol + rtol|v|. No step
is rejected: a rejected step would redraw the exact A noise for a shorter interval and bias the
samples towards the draws that passed (measured on :mod:`~sdeflow.samplers.adaptive_sde`, whose
samples are 8–13 % too wide for that reason); the controller sets the *next* step only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..progress import progress_bar
from ..rng import make_generator
from ..samplers.adaptive import StepController, rms, select_rows
from ..samplers.registry import Context
from ..samplers.rk import DOPRI5, TABLEAUX, rk_adaptive, rk_fixed
from ..schedules import check_timesteps, get_timesteps
from ..sde import bcast
from .model import CLDModel
from .process import CLD, as_float64, join_state, split_state

__all__ = ["sample_cld", "list_cld_solvers", "CLD_SOLVERS", "sscs_step"]


@dataclass(frozen=True)
class CLDSolver:
    name: str
    fn: Callable
    kind: str  # "sde" or "ode"
    order: float | None
    default_steps: int | None  # None: adaptive
    description: str


CLD_SOLVERS: dict[str, CLDSolver] = {}


def _register(name: str, kind: str, order, default_steps, description: str):
    def wrap(fn):
        CLD_SOLVERS[name] = CLDSolver(name, fn, kind, order, default_steps, description)
        return fn
    return wrap


def list_cld_solvers() -> list[str]:
    """Names usable as ``solver=`` for a CLD model."""
    return sorted(CLD_SOLVERS)


def ou_half_step(cld: CLD, u: Tensor, dB: Tensor, ctx: Context) -> Tensor:
    """The A part over a time-change increment Δ𝓑 (exact: propagator and Gaussian noise)."""
    x, v = split_state(u)
    e11, e12, e21, e22 = (bcast(c.to(u.dtype), x) for c in cld.propagator(as_float64(dB)))
    l11, l21, l22 = (bcast(c.to(u.dtype), x) for c in cld.cholesky(*cld.noise_cov(as_float64(dB))))
    z1, z2 = ctx.randn_like(x), ctx.randn_like(x)
    return join_state(e11 * x - e12 * v - l11 * z1, -e21 * x + e22 * v + l21 * z1 + l22 * z2)


def _phi1(z: Tensor) -> Tensor:
    """φ₁(z) = (eᶻ − 1)/z, continuous at 0."""
    small = z.abs() < 1e-6
    return torch.where(small, 1 + z / 2, torch.expm1(z) / torch.where(small, torch.ones_like(z), z))


def _score_step_gain(model: CLDModel, tm: Tensor, dB: Tensor, s_step: str) -> Tensor:
    """The factor k of the S step v ← v + k·(s_v + v/M): 2ΓΔ𝓑 (Euler), or 2ΓΔ𝓑·φ₁(2ΓΔ𝓑·(J + 1/M))
    with J = ∂s_v/∂v of Gaussian data N(0, σ_d² I) (exponential Euler: exact where the score is
    that of the Gaussian, stable where J ≪ −1/M near the data)."""
    cld = model.sde
    gain = 2 * cld.Gamma * dB
    if s_step == "euler":
        return gain
    pxx, pxv, pvv = cld.data_cov(tm, model.sigma_data**2)
    jac = -pxx / (pxx * pvv - pxv**2)
    return gain * _phi1(gain * (jac + 1 / cld.M))


def sscs_step(model: CLDModel, u: Tensor, t: Tensor, t_next: Tensor, ctx: Context,
              s_step: str = "exponential"):
    """One SSCS step t → t_next < t: A(h/2) ∘ S(h) ∘ A(h/2). Returns (u, score at the midpoint)."""
    cld = model.sde
    t64, tn64 = as_float64(t), as_float64(t_next)
    tm = 0.5 * (t64 + tn64)
    u = ou_half_step(cld, u, cld.B(t64) - cld.B(tm), ctx)
    x, v = split_state(u)
    s = model.score_v(u, tm.to(u.dtype), **ctx.cond)
    gain = _score_step_gain(model, tm, cld.B(t64) - cld.B(tn64), s_step)
    v = v + bcast(gain.to(u.dtype), v) * (s + v / cld.M)
    u = ou_half_step(cld, join_state(x, v), cld.B(tm) - cld.B(tn64), ctx)
    return u, s


@_register("sscs", "sde", 1, 100, "symmetric splitting CLD sampler (Dockhorn et al. 2022): exact "
           "linear half-steps around one (exponential) Euler score step, 1 NFE/step")
def sscs(model: CLDModel, u: Tensor, ts: Tensor, ctx: Context,
         s_step: str = "exponential") -> Tensor:
    """SSCS over the grid ``ts`` (module docstring)."""
    _check_s_step(s_step)
    for t, t_next in zip(ts[:-1], ts[1:]):
        u, _ = sscs_step(model, u, t, t_next, ctx, s_step)
        u = ctx.step_done(t_next, u)
    return u


@_register("euler_maruyama", "sde", 0.5, 500, "Euler–Maruyama on the CLD reverse-time SDE, "
           "1 NFE/step")
def euler_maruyama(model: CLDModel, u: Tensor, ts: Tensor, ctx: Context) -> Tensor:
    """u ← u − h(βAu − (0, 2Γβ s_v)) + (0, √(2Γβh) z) per step of size h = t − t_next."""
    cld = model.sde
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = t - t_next
        tb = t.expand(u.shape[0])
        f = cld.pf_ode_drift(u, tb, 2 * model.score_v(u, tb, **ctx.cond))  # βAu − (0, 2Γβ s_v)
        x, v = split_state(u - h * f)
        v = v + (cld.g2(t) * h).sqrt() * ctx.randn_like(v)
        u = ctx.step_done(t_next, join_state(x, v))
    return u


def _pf_field(model: CLDModel, ctx: Context):
    def field(t, u, rows):
        return model.pf_ode_drift(u, t, **select_rows(ctx.cond, rows))
    return field


def _register_ode(tab):
    @_register(tab.name, "ode", tab.order, tab.default_steps,
               f"(x, v) probability-flow ODE, {tab.description}")
    def solve(model, u, ts, ctx):
        return rk_fixed(_pf_field(model, ctx), u, ts, tab, ctx)
    return solve


for _tab in TABLEAUX.values():
    if _tab.default_steps is not None:
        _register_ode(_tab)


@_register("rk45", "ode", 5, None, "(x, v) probability-flow ODE, adaptive Dormand–Prince 5(4)")
def rk45(model: CLDModel, u: Tensor, ts: Tensor, ctx: Context, rtol: float = 1e-5,
         atol: float = 1e-5) -> Tensor:
    return rk_adaptive(_pf_field(model, ctx), u, float(ts[0]), float(ts[-1]), DOPRI5, rtol=rtol,
                       atol=atol, ctx=ctx)


@_register("sscs_adaptive", "sde", 1, None, "SSCS with the PI step-size controller on a "
           "zero-cost error estimate, no rejections (rtol/atol)")
def sscs_adaptive(model: CLDModel, u: Tensor, ts: Tensor, ctx: Context, rtol: float = 0.02,
                  atol: float = 0.02, h0: float | None = None, h_min: float = 1e-5,
                  max_steps: int = 100_000, s_step: str = "exponential") -> Tensor:
    """Adaptive SSCS (module docstring); only ts[0] and ts[-1] are used."""
    _check_adaptive_opts(rtol, atol, h0, h_min, s_step)
    cld, control = model.sde, StepController(order=1.5, beta=0.3, max_factor=2.0)
    f64 = dict(dtype=torch.float64, device=u.device)
    t, t_end = float(ts[0]), float(ts[-1])
    h = (t - t_end) / 50 if h0 is None else float(h0)
    s_prev, h_prev, err_prev, n = None, h, torch.ones((), **f64), 0
    while t > t_end:
        if n >= max_steps:
            raise RuntimeError(f"sscs_adaptive did not reach t={t_end:g} in {max_steps} steps; "
                               "loosen the tolerances (rtol, atol) or raise max_steps")
        h = min(max(h, h_min), t - t_end)
        t_next = t_end if t - h <= t_end + 1e-12 else t - h
        tt, tn = torch.tensor(t, **f64), torch.tensor(t_next, **f64)
        u, s = sscs_step(model, u, tt, tn, ctx, s_step)
        u, n = ctx.step_done(tn.to(u.dtype), u), n + 1
        if s_prev is not None:
            dB = float(cld.B(tt) - cld.B(tn))
            v = split_state(u)[1]
            e = cld.Gamma * dB * (s - s_prev) * (h / h_prev) / (atol + rtol * v.abs())
            err = rms(e.reshape(1, -1)).double().squeeze()
            h_prev, h = h, h * float(control.factor(err, err_prev))
            err_prev = err.clamp_min(1e-10)
        s_prev, t = s, t_next
    ctx.stats["accepted"] = n
    return u


def _check_adaptive_opts(rtol, atol, h0, h_min, s_step: str) -> None:
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    if h0 is not None and not h0 > 0:
        raise ValueError(f"h0 must be positive, got {h0}")
    if not h_min > 0:
        raise ValueError(f"h_min must be positive, got {h_min}")
    _check_s_step(s_step)


def _grid(cld: CLD, info: CLDSolver, steps, schedule, t_end, timesteps, dtype, device):
    if info.default_steps is None:
        if steps is not None or timesteps is not None:
            raise ValueError(f"solver {info.name!r} is adaptive: set rtol/atol, not steps")
        steps = 1
    if timesteps is not None:
        if steps is not None or schedule is not None:
            raise ValueError("timesteps replaces steps/schedule")
        return check_timesteps(cld, timesteps).to(dtype=dtype, device=device)
    return get_timesteps(cld, info.default_steps if steps is None else steps, schedule,
                         t_end=t_end, dtype=dtype, device=device)


def sample_cld(model: CLDModel, u_T: Tensor | None = None, *, shape=None, solver: str = "sscs",
               steps: int | None = None, schedule: str | None = None, t_end: float | None = None,
               timesteps=None, generator: torch.Generator | None = None, seed: int | None = None,
               dtype=None, device=None, cond: dict | None = None, callback=None,
               progress: bool = False, return_stats: bool = False, return_velocity: bool = False,
               **solver_opts):
    """Samples x (the data half) of a CLD model from its prior u_T ~ N(0, I) × N(0, M I).

    Args:
        shape: the data's shape (B, C, …) — u has twice the channels — unless ``u_T`` is given.
        solver: one of :func:`list_cld_solvers` (``sscs`` by default; ``euler_maruyama``;
            ``sscs_adaptive``; the (x, v) PF-ODE with ``euler``, ``heun``, ``rk4``, ``rk45``).
        steps / schedule / timesteps: the grid (``quadratic`` in t by default, as the paper's
            SSCS; ``uniform``); t_end: where to stop (default ``t_min``).
        callback: ``callback(t, u)`` after every step, with the full state u = (x, v).
        return_velocity: return the state u = (x, v) instead of x.
        return_stats: also return ``nfe``, ``seconds``, ``steps``, ``solver``, ``schedule``.
    """
    if not isinstance(model, CLDModel):
        raise TypeError("model must be an sdeflow.cld.CLDModel")
    if solver not in CLD_SOLVERS:
        raise ValueError(f"unknown solver {solver!r} for a CLD model; choices: {list_cld_solvers()}")
    info, cld = CLD_SOLVERS[solver], model.sde
    generator = make_generator(seed, generator, u_T.device if u_T is not None else device)
    if u_T is None:
        if shape is None:
            raise ValueError("give u_T or shape")
        u_T = cld.prior_sample(tuple(shape), generator=generator,
                               dtype=dtype or torch.get_default_dtype(), device=device)
    split_state(u_T)
    ts = _grid(cld, info, steps, schedule, t_end, timesteps, u_T.dtype, u_T.device)
    bar = progress_bar(total=None if info.default_steps is None else len(ts) - 1,
                       desc=f"sampling ({solver})", leave=False) if progress else None
    ctx = Context(generator=generator, cond=cond or {}, callback=callback, progress=bar)
    nfe0, t0 = model.nfe, time.perf_counter()
    try:
        u = info.fn(model, u_T, ts, ctx, **solver_opts)
    finally:
        if bar is not None:
            bar.close()
    out = u if return_velocity else split_state(u)[0]
    if not return_stats:
        return out
    if info.default_steps is None:
        schedule = "adaptive"
    return out, dict(solver=solver, schedule=schedule or ("custom" if timesteps is not None else
                     cld.default_schedule), steps=None if info.default_steps is None
                     else len(ts) - 1, nfe=model.nfe - nfe0,
                     seconds=time.perf_counter() - t0, **ctx.stats)


S_STEPS = ("exponential", "euler")


def _check_s_step(s_step: str) -> None:
    if s_step not in S_STEPS:
        raise ValueError(f"unknown s_step {s_step!r}; choices: {list(S_STEPS)}")
