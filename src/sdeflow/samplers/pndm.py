r"""PNDM (Liu, Ren, Lin & Zhao, ICLR 2022, "Pseudo Numerical Methods for Diffusion Models on
Manifolds") for any SDE of the family x_t = s(t)x_0 + σ(t)ε.

**The transfer part** φ is DDIM's step with a given noise estimate e (paper, eq. 9; with
ᾱ = s² it reads :math:`\sqrt{\bar\alpha_{t'}/\bar\alpha_t}\,x_t - \frac{\bar\alpha_{t'} - \bar\alpha_t}
{\sqrt{\bar\alpha_t}(\sqrt{(1-\bar\alpha_{t'})\bar\alpha_t} + \sqrt{(1-\bar\alpha_t)\bar\alpha_{t'}})}\,e`):

.. math:: \varphi(x_t, e, t, t') = \frac{s(t')}{s(t)}x_t + s(t')\big(\tilde\sigma(t') - \tilde\sigma(t)\big)\,e,
          \qquad \tilde\sigma = \sigma/s = e^{-\lambda},

i.e. the Euler step of the PF-ODE :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon(x, t)` in
x̃ = x/s — exact when ε̂ is constant along the path. PNDM keeps φ and replaces ε̂(x_t, t) by a
higher-order estimate e′ of the mean of ε̂ over the step (the "gradient part"), on the grid
t_0 > t_1 > … > t_n:

**Pseudo linear multistep (PLMS)**, 1 NFE per step, with e_j = ε̂(x_{t_j}, t_j) (eq. 12):

.. math:: e' = \tfrac{1}{24}(55e_i - 59e_{i-1} + 37e_{i-2} - 9e_{i-3}),\qquad
          x_{t_{i+1}} = \varphi(x_{t_i}, e', t_i, t_{i+1}).

**Pseudo Runge–Kutta (PRK) warm start**, the first three steps (the history e_{i−1…i−3} does not
exist yet), 4 NFE per step (eq. 11), with t_m the midpoint of the step:

.. math:: e_1 = \hat\varepsilon(x_t, t),\ x_1 = \varphi(x_t, e_1, t, t_m),\
          e_2 = \hat\varepsilon(x_1, t_m),\ x_2 = \varphi(x_t, e_2, t, t_m),\
          e_3 = \hat\varepsilon(x_2, t_m),

.. math:: x_3 = \varphi(x_t, e_3, t, t'),\ e_4 = \hat\varepsilon(x_3, t'),\
          x_{t'} = \varphi\big(x_t, \tfrac16(e_1 + 2e_2 + 2e_3 + e_4), t, t'\big).

Each step's e_1 joins the history, so the fourth step is already PLMS with four terms. The
paper's t − δ/2 is a midpoint in the DDPM time index; in continuous time we take the midpoint in
the noise level, :math:`\tilde\sigma(t_m) = \tfrac12(\tilde\sigma(t) + \tilde\sigma(t'))`, which
makes a PRK step exactly the classical RK4 step of dx̃/dσ̃ = ε̂ (order 4 on any grid; for the EDM
SDE, σ̃ = t, it *is* ``rk4``). NFE: 4·min(n, 3) + max(n − 3, 0) for n steps.

``warm_start="plms"`` is diffusers' ``PNDMScheduler(skip_prk_steps=True)`` (crowsonkb's PLMS
for latent diffusion): no PRK; the first step evaluates ε̂ twice — e_0 at x_{t_0} and ε̂ at
φ(x_{t_0}, e_0, t_0, t_1) — and moves with their mean (Heun's step in (σ̃, x̃)); the second
evaluation is then dropped from the history. Steps 2 and 3 use the 2- and 3-term
Adams–Bashforth combinations (3e_i − e_{i−1})/2 and (23e_i − 16e_{i−1} + 5e_{i−2})/12, later ones
the four-term e′ above. NFE: n + 1 (diffusers takes a single DDIM step when n = 1, here the first
step is Heun's for every n).

Order: the Adams–Bashforth weights are those of equal steps in σ̃ (the variable in which φ is
Euler's step), so PNDM is a 4th-order method on grids uniform in σ̃ (the EDM SDE's
``uniform`` grid, or ``timesteps=`` built with :meth:`SDE.t_from_noise_level`); on other grids
(Karras, log-SNR, VP's uniform t) fixed weights are second-order, as for ``ipndm``, which is
PNDM with a first-order (DDIM) start instead of the warm starts here. With ``plms`` the first two
steps have local error O(h³), which bounds the global order by 3; at high noise ε̂ barely
changes, so their share of the error is small.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..sde import bcast
from .exponential import AB_WEIGHTS
from .registry import Context, register_solver

__all__ = ["pndm_transfer", "pndm"]

WARM_STARTS = ("prk", "plms")


def pndm_transfer(sde, x: Tensor, e: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    r"""The transfer part φ(x_t, e, t, t′) = (s′/s)x_t + s′(σ̃′ − σ̃)e (DDIM's step with noise
    estimate e; the paper's eq. 9). t and t_next: scalars or shape (B,)."""
    s, s_next = sde.s(t), sde.s(t_next)
    step = s_next * (sde.noise_level(t_next) - sde.noise_level(t))
    return bcast(s_next / s, x) * x + bcast(step, x) * e


def _prk_step(model, x: Tensor, t: Tensor, t_mid: Tensor, t_next: Tensor,
              ctx: Context) -> tuple[Tensor, Tensor]:
    """One pseudo Runge–Kutta step (4 NFE): (x at t_next, e_1 = ε̂(x, t))."""
    sde = model.sde
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    e1 = model.eps(x, t * ones, **ctx.cond)
    e2 = model.eps(pndm_transfer(sde, x, e1, t, t_mid), t_mid * ones, **ctx.cond)
    e3 = model.eps(pndm_transfer(sde, x, e2, t, t_mid), t_mid * ones, **ctx.cond)
    e4 = model.eps(pndm_transfer(sde, x, e3, t, t_next), t_next * ones, **ctx.cond)
    return pndm_transfer(sde, x, (e1 + 2 * e2 + 2 * e3 + e4) / 6, t, t_next), e1


def _plms_first_step(model, x: Tensor, t: Tensor, t_next: Tensor,
                     ctx: Context) -> tuple[Tensor, Tensor]:
    """diffusers' first PLMS step (2 NFE): φ with the mean of ε̂ at x and at DDIM's prediction;
    returns (x at t_next, ε̂(x, t)), the only value that enters the history."""
    sde = model.sde
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    e0 = model.eps(x, t * ones, **ctx.cond)
    e_pred = model.eps(pndm_transfer(sde, x, e0, t, t_next), t_next * ones, **ctx.cond)
    return pndm_transfer(sde, x, (e0 + e_pred) / 2, t, t_next), e0


def pndm(model, x: Tensor, ts: Tensor, ctx: Context, warm_start: str = "prk") -> Tensor:
    """PNDM over the grid ``ts`` (module docstring): PLMS after a warm start of three pseudo
    Runge–Kutta steps (``"prk"``, the paper's) or diffusers' lower-order PLMS start
    (``"plms"``)."""
    if warm_start not in WARM_STARTS:
        raise ValueError(f"unknown PNDM warm_start {warm_start!r}; choices: {list(WARM_STARTS)}")
    sde = model.sde
    steps = len(ts) - 1
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    n_prk = min(steps, 3) if warm_start == "prk" else 0
    nu = sde.noise_level(ts[:n_prk + 1])
    t_mid = sde.t_from_noise_level((nu[:-1] + nu[1:]) / 2).to(ts.dtype)
    hist: list[Tensor] = []  # ε̂ at the grid points, newest first
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        if i < n_prk:
            x, e = _prk_step(model, x, t, t_mid[i], t_next, ctx)
            hist = [e, *hist]
        elif warm_start == "plms" and i == 0:
            x, e = _plms_first_step(model, x, t, t_next, ctx)
            hist = [e]
        else:
            hist = [model.eps(x, t * ones, **ctx.cond), *hist][:4]
            e_prime = sum(c * e for c, e in zip(AB_WEIGHTS[len(hist)], hist))
            x = pndm_transfer(sde, x, e_prime, t, t_next)
        x = ctx.step_done(t_next, x)
    return x


@register_solver("pndm", kind="ode", order=4, default_steps=50,
                 description="PNDM: pseudo linear multistep (4-term Adams–Bashforth of ε̂ in "
                             "DDIM's transfer), 1 NFE/step after a pseudo Runge–Kutta warm start "
                             "(3 steps × 4 NFE); warm_start='plms': diffusers' PLMS start, "
                             "n + 1 NFE")
def sample_pndm(model, x, ts, ctx: Context, warm_start: str = "prk"):
    return pndm(model, x, ts, ctx, warm_start=warm_start)
