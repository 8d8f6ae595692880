r"""Predictor–corrector samplers for the reverse-time SDE (Song et al. 2021, Algorithms 2–3),
and annealed Langevin dynamics (Song & Ermon 2019, NCSN).

Predictors move x from t to t' < t (one NFE each):

* ``euler_maruyama``: :math:`x' = x + [f x - \frac{1+\gamma^2}{2}g^2\nabla\log p_t]h + \gamma g\sqrt{|h|}z`
  on the γ-family of :mod:`sdeflow.reverse` (γ = 1 reverse SDE, h = t' − t < 0);
* ``reverse_diffusion``: with the exact transition x_t = a x_{t'} + √v z of
  :meth:`SDE.transition`, :math:`x' = (2-a)x + v\nabla\log p_t + \sqrt v z`;
* ``ancestral``: the DDPM posterior step, i.e. DDIM with η = 1 (:mod:`.ddim`).

Correctors run MCMC at fixed t, ``n_corrector_steps`` steps at a time (one NFE per step):

* ``langevin``: :math:`x \leftarrow x + \epsilon\nabla\log p_t + \sqrt{2\epsilon}z`,
  :math:`\epsilon = 2\alpha(r\|z\|/\|\nabla\log p_t\|)^2`, r = ``snr``, α = a² of the step;
  the norms are averaged over the batch, as in score_sde;
* ``ald``: annealed Langevin, :math:`x \leftarrow x + \tfrac{\eta_i}{2}\nabla\log p_t + \sqrt{\eta_i}z`,
  :math:`\eta_i = r\,\sigma(t)^2/\sigma_L^2`, r = ``step_lr``, σ_L the smallest σ of the grid;
* ``hmc``: underdamped Langevin (HMC with partial momentum refreshment) by BAOAB, see :func:`hmc`.

A corrector is ``corr(model, x, t, t_next, ctx, n_steps, **opts)``: the block of ``n_steps`` MCMC
steps at t, with the constraint (inpainting) applied after each.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..reverse import drift_from_score, noise_scale
from ..sde import bcast
from .ddim import ddim_step
from .registry import Context, register_solver

__all__ = ["PREDICTORS", "CORRECTORS", "pc_sample"]


def euler_maruyama(model, x, t, t_next, ctx: Context, gamma: float = 1.0) -> Tensor:
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    h = t_next - t
    x_new = x + bcast(h, x) * drift_from_score(model, x, t, model.score(x, t, **ctx.cond), gamma)
    if gamma > 0:
        x_new = x_new + bcast(noise_scale(model, t, gamma) * (-h).sqrt(), x) * ctx.randn_like(x)
    return x_new


def reverse_diffusion(model, x, t, t_next, ctx: Context) -> Tensor:
    a, v = model.sde.transition(t_next, t)
    score = model.score(x, t, **ctx.cond)
    return bcast(2 - a, x) * x + bcast(v, x) * score + bcast(v.sqrt(), x) * ctx.randn_like(x)


def ancestral(model, x, t, t_next, ctx: Context) -> Tensor:
    return ddim_step(model, x, t, t_next, ctx, eta=1.0)


def _norm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)


def langevin(model, x, t, t_next, ctx: Context, snr: float = 0.16) -> Tensor:
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    a, _ = model.sde.transition(t_next, t)
    score = model.score(x, t, **ctx.cond)
    z = ctx.randn_like(x)
    # batch-averaged norms as in score_sde: per-sample ratios blow up in low dimension, where a
    # sample near a mode has ‖score‖ ≈ 0
    step = 2 * a**2 * (snr * _norm(z).mean() / _norm(score).mean().clamp_min(1e-30)) ** 2
    return x + bcast(step, x) * score + bcast((2 * step).sqrt(), x) * z


def ald(model, x, t, t_next, ctx: Context, sigma_L: Tensor, step_lr: float = 2e-5) -> Tensor:
    if not 0 < step_lr < 2 * sigma_L**2:
        # ULA on N(0, σ²) is stable only for η < 4σ²; keep a factor 2 of margin at σ_L
        raise ValueError(f"step_lr must lie in (0, 2·σ_L²) = (0, {2 * float(sigma_L)**2:.3g}) for "
                         f"stable annealed Langevin, got {step_lr}")
    step = step_lr * (model.sde.sigma(t) / sigma_L) ** 2
    score = model.score(x, t, **ctx.cond)
    return x + bcast(step / 2, x) * score + bcast(step.sqrt(), x) * ctx.randn_like(x)


def hmc(model, x, t, t_next, ctx: Context, n_steps: int, snr: float = 0.16,
        friction: float = 1.0) -> Tensor:
    r"""``n_steps`` of underdamped Langevin dynamics at fixed t — the HMC corrector that Song et
    al. 2021 (§4.2: score-based MCMC correctors such as Langevin MCMC or HMC) leave open — by
    the BAOAB splitting of Leimkuhler & Matthews (2013, "Rational construction of stochastic
    numerical methods for molecular sampling"; *Molecular Dynamics*, Springer 2015). For the target
    p_t ∝ e^{−U}, −∇U = ∇log p_t, momentum v ~ N(0, I) and friction γ̄,
    dx = v dt, dv = ∇log p_t(x) dt − γ̄v dt + √(2γ̄) dW; one step of size ε is

    .. math:: B:\ v \mathrel{+}= \tfrac\epsilon2\nabla\log p_t(x),\quad
              A:\ x \mathrel{+}= \tfrac\epsilon2 v,\quad
              O:\ v \leftarrow c\,v + \sqrt{1-c^2}\,\xi,\ c = e^{-\bar\gamma\epsilon},\quad
              A,\quad B.

    The score of the closing B is the next step's opening B, so each step costs one NFE; the
    closing B of the last step would only kick a momentum that is then dropped, so it is not
    taken: ``n_steps`` steps cost exactly ``n_steps`` NFE, as many Langevin steps do. The
    momentum is drawn afresh for every block (p_t changes between blocks; within a block the
    O step refreshes it partially), so one step per block is a Langevin step (of size
    ε²(1 + c)/4) and the momentum pays off from two steps per block on.

    Step rule as the Langevin corrector's: ε = 2a·r‖v₀‖/‖∇log p_t‖ (norms averaged over the
    batch, v₀ the initial momentum, r = ``snr``, a of the step), i.e. ε²/2 is Langevin's step
    at the same snr. ``friction`` γ is in units of ω = ‖∇log p_t‖/‖v₀‖ (≈ 1/σ for a Gaussian
    p_t of std σ): γ̄ = γω, so c = e^{−2arγ}. γ = 2 damps a Gaussian of std 1/ω critically; the
    default γ = 1 (under-damped) moved a wrong start to p_t faster than γ = 2 or 4
    (docs/solver_notes.md). BAOAB's configurational bias is O(ε²), and for a Gaussian p_t it
    samples x exactly at any stable ε. Stability on a Gaussian p_t needs εω_max < 2, i.e. a
    largest frequency below ω/r: the Langevin corrector's bound at the same snr. The default
    r = 0.16 (score_sde's Langevin value) keeps that margin of 6×; r = 0.3 was better still on
    our mixtures but leaves 3.3×."""
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if friction < 0:
        raise ValueError(f"friction must be >= 0, got {friction}")
    if n_steps == 0:
        return x
    a, _ = model.sde.transition(t_next, t)
    score = model.score(x, t, **ctx.cond)
    v = ctx.randn_like(x)
    omega = _norm(score).mean().clamp_min(1e-30) / _norm(v).mean()
    eps = bcast(2 * a * snr / omega, x)
    c = bcast(torch.exp(-2 * a * snr * friction), x)
    half, refresh = eps / 2, (1 - c**2).sqrt()
    for k in range(n_steps):
        v = v + half * score  # B
        x = x + half * v  # A
        v = c * v + refresh * ctx.randn_like(x)  # O
        x = ctx.constrain(t, x + half * v)  # A
        if k + 1 < n_steps:  # the last closing B would kick a momentum that is dropped
            score = model.score(x, t, **ctx.cond)
            v = v + half * score  # B; its score opens the next step
    return x


def _repeated(step: Callable) -> Callable:
    """The corrector block of a one-step corrector: ``n_steps`` steps, constrained after each."""
    def block(model, x, t, t_next, ctx: Context, n_steps: int, **opts) -> Tensor:
        for _ in range(n_steps):
            x = ctx.constrain(t, step(model, x, t, t_next, ctx, **opts))
        return x
    return block


PREDICTORS: dict[str, Callable | None] = {
    "euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral, "none": None}
CORRECTORS: dict[str, Callable | None] = {"langevin": _repeated(langevin), "ald": _repeated(ald),
                                          "hmc": hmc, "none": None}

_CORRECTOR_OPTS = {"langevin": ("snr",), "ald": ("step_lr",), "hmc": ("snr", "friction"),
                   "none": ()}
_PREDICTOR_OPTS = {"euler_maruyama": ("gamma",), "reverse_diffusion": (), "ancestral": (),
                   "none": ()}


def pc_sample(model, x, ts, ctx: Context, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", n_corrector_steps: int = 1, **opts) -> Tensor:
    """At each grid interval [t, t']: ``n_corrector_steps`` corrector steps at t, then one
    predictor step to t'. With ``predictor="none"`` the corrector runs at every time of ``ts``
    (annealed Langevin over len(ts) noise levels). Options are routed to the step that takes them (``snr``, ``step_lr``,
    ``gamma``); an option neither takes is an error."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choices: {sorted(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; choices: {sorted(CORRECTORS)}")
    if predictor == "none" and corrector == "none":
        raise ValueError("predictor and corrector cannot both be 'none'")
    if not isinstance(n_corrector_steps, int) or n_corrector_steps < 0:
        raise ValueError(f"n_corrector_steps must be a non-negative integer, got {n_corrector_steps}")
    p_opts = {k: opts.pop(k) for k in _PREDICTOR_OPTS[predictor] if k in opts}
    c_opts = {k: opts.pop(k) for k in _CORRECTOR_OPTS[corrector] if k in opts}
    if opts:
        raise TypeError(f"options {sorted(opts)} are not used by predictor={predictor!r}, "
                        f"corrector={corrector!r}")
    if corrector == "ald":  # annealed Langevin scales its steps by the smallest σ of the grid
        c_opts["sigma_L"] = model.sde.sigma(ts[-1])
    pred, corr = PREDICTORS[predictor], CORRECTORS[corrector]
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    if pred is None:  # pure annealed MCMC: one block of corrector steps at every level of ts
        for t in ts:
            x = ctx.step_done(t, corr(model, x, t * ones, t * ones, ctx, n_corrector_steps,
                                      **c_opts))
        return x
    for t, t_next in zip(ts[:-1], ts[1:]):
        tb, tnb = t * ones, t_next * ones
        if corr is not None:
            x = corr(model, x, tb, tnb, ctx, n_corrector_steps, **c_opts)
        x = ctx.step_done(t_next, pred(model, x, tb, tnb, ctx, **p_opts))
    return x


def _register_predictor(name: str, order: float, steps: int, description: str):
    @register_solver(name, kind="sde", order=order, default_steps=steps, description=description)
    def solve(model, x, ts, ctx: Context, **opts):
        return pc_sample(model, x, ts, ctx, predictor=name, corrector="none", **opts)
    solve.__doc__ = f"Reverse-time SDE with the {name} predictor only."
    return solve


# strong order 1, not the general ½: the noise is additive (g independent of x) on every
# reverse SDE here, where Euler–Maruyama is Milstein (tests/samplers/test_sde_order.py)
sample_euler_maruyama = _register_predictor(
    "euler_maruyama", 1.0, 500, "Euler–Maruyama on the reverse SDE; gamma= picks the family "
    "member (1: reverse SDE, 0: PF-ODE)")
sample_reverse_diffusion = _register_predictor(
    "reverse_diffusion", 0.5, 500, "reverse-diffusion predictor (score_sde)")
sample_ancestral = _register_predictor(
    "ancestral", 0.5, 500, "ancestral sampling, the DDPM posterior step (= ddim with eta=1)")


@register_solver("pc", kind="sde", order=0.5, default_steps=500,
                 description="predictor–corrector: predictor= (reverse_diffusion), corrector= "
                             "(langevin | hmc | ald), snr=0.16, n_corrector_steps=1")
def sample_pc(model, x, ts, ctx: Context, **opts):
    return pc_sample(model, x, ts, ctx, **opts)


@register_solver("annealed_langevin", kind="sde", order=None, default_steps=10,
                 description="NCSN annealed Langevin dynamics: n_corrector_steps=100 per noise "
                             "level, step_lr=2e-5")
def sample_annealed_langevin(model, x, ts, ctx: Context, n_corrector_steps: int = 100, **opts):
    return pc_sample(model, x, ts, ctx, predictor="none", corrector="ald",
                     n_corrector_steps=n_corrector_steps, **opts)
