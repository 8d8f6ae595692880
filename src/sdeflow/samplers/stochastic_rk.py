r"""Stochastic Runge–Kutta methods over a generic Itô SDE, registered as samplers of the
reverse-time SDE.

A problem is an :class:`ItoSDE`, dx = f(t, x) dt + g(t, x) dW with diagonal noise. A step of
signed size h (t → t + h, either direction) takes the increments of :mod:`.brownian` over the
elapsed time |h|: ΔW ~ N(0, |h|) and ΔZ = I_(1,0) = ∫(W_s − W_t) ds. Going backwards in t is
going forwards in τ = −t with drift −f, so the formulas below hold with the signed h in the
drift terms and |h| with the noise. :func:`reverse_sde` adapts a Denoiser's γ-family
(:mod:`sdeflow.reverse`): drift f(t)x − (1+γ²)/2 · g(t)² ∇log p_t, diffusion γ g(t) — additive
noise on every SDE (VE, VP, sub-VP, EDM).

* ``milstein`` (Kloeden & Platen 1992, §10.3), diagonal noise, Itô:
  :math:`x' = x + hf + g\Delta W + \tfrac12 g\,\partial_x g\,(\Delta W^2 - |h|)`, with
  (∂g/∂x)·g by reverse-mode autograd. Strong order 1 (Euler–Maruyama: ½). For additive
  noise ∂g/∂x = 0 and Milstein *is* Euler–Maruyama: on our reverse SDEs ``milstein`` returns
  ``euler_maruyama``'s samples (the same noise stream) to round-off.
* ``sra1``, ``sra3`` (Rößler 2010, "Runge–Kutta methods for the strong approximation of
  solutions of stochastic differential equations", SIAM J. Numer. Anal. 48(3)): additive noise
  g = g(t), strong order 1.5, s drift stages (1 NFE each, so NFE = s per step):

  .. math::
      H_i = x + h\sum_j A^{(0)}_{ij} f(t + c^{(0)}_j h, H_j)
              + \sum_j B^{(0)}_{ij}\, g(t + c^{(1)}_j h)\,\frac{\Delta Z}{|h|},

      x' = x + h\sum_i \alpha_i f(t + c^{(0)}_i h, H_i)
             + \sum_i \Big(\beta^{(1)}_i \Delta W + \beta^{(2)}_i\frac{\Delta Z}{|h|}\Big)
               g(t + c^{(1)}_i h).

  SRA1's drift part is the two-stage 2nd-order RK with c₂ = 3/4, b = (1/3, 2/3) (not
  Ralston's, whose c₂ = 2/3), SRA3's the 3rd-order SSPRK3 of Shu & Osher, c = (0, 1, ½),
  b = (1/6, 1/6, 2/3) (not Kutta's, c = (0, ½, 1)). A tableau is data
  (:class:`SRATableau`); :func:`sra_step` steps them all. The order-1.5 error terms carry
  f'' (g² f'' I_(1,1,0)): on linear drift — Ornstein–Uhlenbeck, the reverse SDE of Gaussian
  data — they vanish and SRA converges with order 2.
* ``sra_adaptive``: SRA on the shared step-size loop of :mod:`.adaptive`. The error estimate is
  the SRA step minus the Euler–Maruyama step from its first stage, x + h f(t, x) + g(t)ΔW: the
  terms EM misses, f′g I_(1,0) and g′ I_(0,1), O(|h|^{3/2}) (an embedding in the spirit of
  Rackauckas & Nie 2017; no extra NFE); the SRA solution is kept (local extrapolation). The
  noise comes from a :class:`~.brownian.BrownianMemory`: a rejected step's increments are kept
  and the shorter retry is bridged from them, so every sample follows one fixed Brownian path
  whatever the accept/reject decisions — no bias towards small draws, the failure of drawing
  new noise after a rejection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor

from ..reverse import drift, noise_scale
from ..sde import bcast
from .adaptive import AdaptiveState, StepController, Trial, adaptive_loop, rms, select_rows
from .brownian import BrownianMemory, brownian_increment
from .registry import Context, register_solver

__all__ = ["ItoSDE", "reverse_sde", "euler_maruyama_step", "milstein_step", "SRATableau",
           "SRA_TABLEAUX", "sra_step", "sde_fixed", "ctx_increments", "sra_adaptive"]


@dataclass(frozen=True)
class ItoSDE:
    """dx = f(t, x) dt + g(t, x) dW, diagonal noise. ``f(t, x, rows)``: ``rows`` are the batch
    rows x holds (None: all), for per-sample conditioning; ``g(t, x)`` has x's shape or is
    per-sample (B,); ``additive``: g does not depend on x (what SRA needs)."""

    f: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    g: Callable[[Tensor, Tensor], Tensor]
    additive: bool = False

    def drift(self, t: Tensor, x: Tensor, rows: Tensor | None = None) -> Tensor:
        return self.f(t, x, rows)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        g = torch.as_tensor(self.g(t, x), dtype=x.dtype, device=x.device)
        return g if g.shape == x.shape else bcast(g, x)


def reverse_sde(model, ctx: Context, gamma: float = 1.0) -> ItoSDE:
    """The γ-family member of ``model.sde`` (:mod:`sdeflow.reverse`) as an :class:`ItoSDE`
    (one NFE per drift evaluation)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")

    def f(t, x, rows):
        return drift(model, x, t, gamma, **select_rows(ctx.cond, rows))

    def g(t, x):
        return noise_scale(model, t, gamma)
    return ItoSDE(f, g, additive=True)


def euler_maruyama_step(sde: ItoSDE, t: Tensor, x: Tensor, h: Tensor, dW: Tensor,
                        dZ: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
    """x + h f(t, x) + g(t, x) ΔW (``dZ`` unused)."""
    return x + bcast(h, x) * sde.drift(t, x, rows) + sde.diffusion(t, x) * dW


def milstein_step(sde: ItoSDE, t: Tensor, x: Tensor, h: Tensor, dW: Tensor,
                  dZ: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
    """Euler–Maruyama plus ½ g ∂g/∂x (ΔW² − |h|); the correction vanishes for additive noise."""
    if sde.additive:
        return euler_maruyama_step(sde, t, x, h, dW, dZ, rows)
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        g = sde.diffusion(t, y)
        # (∂g/∂x)ᵀg, which is (∂g/∂x)g = g ∂g/∂x componentwise for diagonal noise
        g_dg = (torch.autograd.grad(g, y, g.detach(), allow_unused=True)[0]
                if g.requires_grad else None)
    g = g.detach()
    x_em = x + bcast(h, x) * sde.drift(t, x, rows) + g * dW
    return x_em if g_dg is None else x_em + 0.5 * g_dg * (dW**2 - bcast(h.abs(), x))


@dataclass(frozen=True)
class SRATableau:
    """Rößler's SRA coefficients (module docstring); rows of A0/B0 list the earlier stages."""

    name: str
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    A0: tuple[tuple[float, ...], ...]
    B0: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]
    default_steps: int
    description: str


SRA1 = SRATableau("sra1", c0=(0.0, 3 / 4), c1=(1.0, 0.0), A0=((), (3 / 4,)), B0=((), (3 / 2,)),
                  alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0), default_steps=100,
                  description="Rößler's SRA1 on the reverse SDE (additive noise): strong order "
                              "1.5, 2 NFE/step")
SRA3 = SRATableau("sra3", c0=(0.0, 1.0, 1 / 2), c1=(1.0, 0.0, 0.0),
                  A0=((), (1.0,), (1 / 4, 1 / 4)), B0=((), (0.0,), (1.0, 1 / 2)),
                  alpha=(1 / 6, 1 / 6, 2 / 3), beta1=(1.0, 0.0, 0.0), beta2=(-1.0, 1.0, 0.0),
                  default_steps=100,
                  description="Rößler's SRA3 on the reverse SDE (additive noise): strong order "
                              "1.5, deterministic order 3, 3 NFE/step")
SRA_TABLEAUX = {tab.name: tab for tab in (SRA1, SRA3)}


def _dot(coefs, terms):
    return sum(c * v for c, v in zip(coefs, terms) if c != 0.0)


def sra_step(sde: ItoSDE, tab: SRATableau, t: Tensor, x: Tensor, h: Tensor, dW: Tensor,
             dZ: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One SRA step t → t + h (module docstring); returns (x', the Euler–Maruyama step
    x + h f(t, x) + g(t) ΔW from the first stage, for error estimates)."""
    if not sde.additive:
        raise ValueError(f"{tab.name} needs additive noise (g independent of x); use milstein")
    hb, chi = bcast(h, x), dZ / bcast(h.abs(), x)  # chi = I_(1,0)/|h|
    G = [sde.diffusion(t + c * h, x) for c in tab.c1]
    F: list[Tensor] = []
    for c, a_i, b_i in zip(tab.c0, tab.A0, tab.B0):
        F.append(sde.drift(t + c * h, x + hb * _dot(a_i, F) + chi * _dot(b_i, G), rows))
    noise = sum((b1 * dW + b2 * chi) * g for b1, b2, g in zip(tab.beta1, tab.beta2, G))
    x_em = x + hb * F[0] + sde.diffusion(t, x) * dW
    return x + hb * _dot(tab.alpha, F) + noise, x_em


# step(sde, t (B,), x, signed h (B,), ΔW, ΔZ or None) -> x'
Step = Callable[[ItoSDE, Tensor, Tensor, Tensor, Tensor, Tensor | None], Tensor]


def sde_fixed(sde: ItoSDE, x: Tensor, ts: Tensor, step: Step,
              increments: Iterable[tuple[Tensor, Tensor | None]], ctx: Context | None = None
              ) -> Tensor:
    """One ``step`` per interval of ``ts`` (either direction) with the (ΔW, ΔZ) of
    ``increments`` (a :class:`~.brownian.BrownianPath` or :func:`ctx_increments`)."""
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for t, t_next, (dW, dZ) in zip(ts[:-1], ts[1:], increments):
        x = step(sde, t * ones, x, (t_next - t) * ones, dW, dZ)
        if ctx is not None:
            x = ctx.step_done(t_next, x)
    return x


def ctx_increments(ctx: Context, ts: Tensor, like: Tensor, iterated: bool = True):
    """(ΔW, ΔZ) for each interval of ``ts``, drawn with ``ctx.randn_like`` when needed; without
    ``iterated`` ΔZ is None and each step draws one normal (Euler–Maruyama's stream)."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = (t_next - t).abs()
        z1 = ctx.randn_like(like)
        yield brownian_increment(h, z1, ctx.randn_like(like)) if iterated else (h.sqrt() * z1, None)


def _sra(tab: SRATableau) -> Step:
    def step(sde, t, x, h, dW, dZ):
        return sra_step(sde, tab, t, x, h, dW, dZ)[0]
    return step


def _register_fixed(name: str, step: Step, iterated: bool, order: float, steps: int,
                    description: str):
    @register_solver(name, kind="sde", order=order, default_steps=steps, description=description)
    def solve(model, x, ts, ctx: Context, gamma: float = 1.0):
        sde = reverse_sde(model, ctx, gamma)
        return sde_fixed(sde, x, ts, step, ctx_increments(ctx, ts, x, iterated), ctx)
    solve.__doc__ = f"Reverse-time SDE (γ-family, gamma=1) with {name}: {description}."
    return solve


sample_milstein = _register_fixed(
    "milstein", milstein_step, False, 1.0, 500,
    "Milstein on the reverse SDE; noise is additive there, so it equals euler_maruyama")
for _tab in SRA_TABLEAUX.values():
    _register_fixed(_tab.name, _sra(_tab), True, 1.5, _tab.default_steps, _tab.description)


def sra_adaptive(sde: ItoSDE, x: Tensor, t0: float, t1: float, tab: SRATableau = SRA1, *,
                 rtol: float = 1e-2, atol: float = 1e-2, h_init: float = 0.01,
                 safety: float = 0.9, path: BrownianMemory | None = None,
                 ctx: Context | None = None, max_steps: int = 100_000) -> Tensor:
    r"""Integrate from t0 to t1 with ``tab`` and per-sample step-size control (module
    docstring): err = RMS of (x'_SRA − x'_EM)/(atol + rtol·max(|x|, |x'|)) ≤ 1 accepts, the
    next step is h·clip(safety·err^{−1/1.5}, 0.2, 10). The first step is ``h_init`` of the
    interval. ``path`` (default: a new one drawing with ``ctx.randn_like``) is the
    :class:`~.brownian.BrownianMemory` the noise is read from; its ``W`` is W(t1) − W(t0) at
    the end."""
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    B, d = x.shape[0], 1.0 if t1 > t0 else -1.0
    if path is None:
        path = BrownianMemory(x, ctx.randn_like if ctx is not None else torch.randn_like)
    t = torch.full((B,), float(t0), dtype=x.dtype, device=x.device)
    h = torch.full_like(t, h_init * abs(t1 - t0))

    def step(ti: Tensor, xi: Tensor, dt: Tensor, rows: Tensor) -> Trial:
        rev = path.reveal(rows, d * ti, d * (ti + dt))
        x_new, x_em = sra_step(sde, tab, ti, xi, dt, rev.dW, rev.dZ,
                               None if rows.numel() == B else rows)
        scale = atol + rtol * torch.maximum(xi.abs(), x_new.abs())

        def accept(ok: Tensor, acc: Tensor, t_acc: Tensor) -> None:
            path.keep(rev, ok)
        return Trial(x_new, rms((x_new - x_em) / scale), accept=accept)

    control = StepController(order=1.5, safety=safety)
    return adaptive_loop(step, AdaptiveState(t, x.clone(), h, t1), control, ctx,
                         name=f"{tab.name}_adaptive", max_steps=max_steps)


@register_solver("sra_adaptive", kind="sde", order=1.5, default_steps=None,
                 description="adaptive SRA (tableau='sra1' or 'sra3') on the reverse SDE: "
                             "embedded Euler–Maruyama error, rejected noise kept by a Brownian "
                             "bridge; rtol=0.01, atol=0.01")
def sample_sra_adaptive(model, x: Tensor, ts: Tensor, ctx: Context, rtol: float = 1e-2,
                        atol: float = 1e-2, gamma: float = 1.0, tableau: str = "sra1",
                        h_init: float = 0.01, max_steps: int = 100_000) -> Tensor:
    """Reverse SDE from ts[0] to ts[-1] with :func:`sra_adaptive`."""
    if tableau not in SRA_TABLEAUX:
        raise ValueError(f"unknown tableau {tableau!r}; choices: {sorted(SRA_TABLEAUX)}")
    return sra_adaptive(reverse_sde(model, ctx, gamma), x, float(ts[0]), float(ts[-1]),
                        SRA_TABLEAUX[tableau], rtol=rtol, atol=atol, h_init=h_init, ctx=ctx,
                        max_steps=max_steps)
