r"""SA-Solver: stochastic Adams predictor–corrector in log-SNR (Xue et al. 2023, "SA-Solver:
Stochastic Adams Solver for Fast Sampling of Diffusion Models", NeurIPS 2023).

For any SDE of the family x_t = s x0 + σ ε, the reverse-time processes
:math:`dx = [f x - \tfrac{1+\tau^2}{2}g^2\nabla\log p_t]dt + \tau g\,d\bar w` (the γ-family of
:mod:`sdeflow.reverse` with γ = τ) all have the marginals p_t; τ = 0 is the PF-ODE, τ = 1 the
reverse SDE. With λ = log(s/σ), g² dt = −2σ² dλ and the data prediction x̂0, the linear part is
solved exactly (variation of constants), so over [λ, λ'] (h = λ' − λ > 0)

.. math:: x_{t'} = \frac{\sigma'}{\sigma}e^{-\tau^2 h}x_t
    + \sigma'(1+\tau^2)\int_\lambda^{\lambda'} e^{-\tau^2(\lambda'-\ell)}e^{\ell}\,\hat x_0(\ell)\,d\ell
    + \sigma'\sqrt{1-e^{-2\tau^2 h}}\,\xi,\qquad \xi\sim\mathcal N(0, I).

With ℓ = λ + hv and x̂0 replaced by the Lagrange polynomial P through earlier evaluations at
:math:`v_j = (\lambda_j - \lambda)/h`, the integral is :math:`s'\,H\int_0^1 e^{-H(1-v)}P(v)\,dv`,
H = (1 + τ²)h: the exponential Adams weights of :func:`.adams.exp_adams_weights` evaluated at H.
One step:

* **SA-Predictor** with the ``predictor_order`` = p newest x̂0 (nodes 0, v₁, …, v_{p−1} ≤ 0);
* evaluate x̂0 at the prediction — the step's only network call, which the next step reuses;
* **SA-Corrector** with that new point (v = 1) and the ``corrector_order`` − 1 newest earlier ones,
  from the same x_t and the *same* ξ as the predictor (``corrector_order=0``: no corrector).

For τ = 0 this is a deterministic exponential Adams–Bashforth–Moulton pair of order
min(c, p + 1) in the step (measured: docs/solver_notes.md); the first steps use lower orders
(:func:`.exponential.step_order`), and so do the last ones with ``lower_order_final`` (default
for fewer than 15 steps). The last step is not corrected (it would need one more NFE), so
NFE = steps. A step that a corrector replaces ends at the corrected state: the constraint
(inpainting) is applied to it, once per step, and it is what the callback sees — the
prediction is only the point where x̂0 is evaluated. A step ending at σ' = 0 (a grid ending at
t = 0: λ' = h = ∞) takes the H → ∞ limit, in which :math:`e^{-\tau^2 h}`, the noise and every
weight but the newest point's vanish: x' = s'·x̂0 (order 1, no noise). p = 1 without
corrector is SDE-DPM-Solver-1 with η = τ² (and DDIM for τ = 0).
Defaults p = 3, c = 4 are the authors' for unconditional sampling (p = c = 2 for large
guidance). ``tau`` may be a function of t, the paper's τ(t): the authors use τ = 1 only in the
middle of the path (for VP, ``tau=lambda t: 1.0 if 0.2 <= t <= 0.8 else 0.0``); our default is
the reverse SDE, τ = 1 throughout. Weights are computed for the whole grid before the first
step (:func:`sa_weights`). diffusers' extra O(h³) term for order 2 is left out.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .adams import exp_adams_weights
from .exponential import step_order
from .registry import Context, register_solver

__all__ = ["sa_solver", "sa_weights", "sa_update"]


def sa_weights(lam: Tensor, taus: Tensor, orders: list[int], corrector: bool) -> list[Tensor | None]:
    """Weights w_i of every step i (grid log-SNRs ``lam``, τ_i = ``taus[i]``) with ``orders[i]``
    points: the predictor's at v_j = (λ_{i−j} − λ_i)/h_i, j < k; the corrector's at v = 1 and
    then j < k − 1 (k = 0: None). They depend on the grid only, so they are computed up front,
    one batched :func:`.adams.exp_adams_weights` call per order."""
    lam = lam.to(torch.float64)
    h = lam[1:] - lam[:-1]
    out: list[Tensor | None] = [None] * len(orders)
    lead = 1 if corrector else 0  # the corrector's new point at v = 1 comes first
    for k in sorted(set(orders) - {0}):
        idx = [i for i, o in enumerate(orders) if o == k]
        rows = [torch.stack([torch.ones_like(h[i])] * lead
                            + [(lam[i - j] - lam[i]) / h[i] for j in range(k - lead)])
                for i in idx]
        w = exp_adams_weights(torch.stack(rows), (1 + taus[idx] ** 2) * h[idx])
        for row, i in enumerate(idx):
            out[i] = w[row]
    return out


def sa_update(x: Tensor, ms: list[Tensor], w: Tensor, h: Tensor, tau: float, s1: Tensor,
              sig_ratio: Tensor, sig1: Tensor, noise: Tensor | None) -> Tensor:
    """One stochastic Adams update (the module's formula) of x over a log-SNR step h with the x̂0
    values ``ms`` and their weights ``w`` (:func:`sa_weights`); s₁ = s at the step's end,
    ``sig_ratio`` = σ₁/σ₀; ``noise`` ξ is used when τ > 0."""
    drift = sum(wj.to(x.dtype) * m for wj, m in zip(w, ms))
    out = sig_ratio * torch.exp(-tau**2 * h) * x + s1 * drift
    if tau > 0:
        out = out + sig1 * torch.sqrt(-torch.expm1(-2 * tau**2 * h)) * noise
    return out


def _taus(tau: float | Callable, ts: Tensor) -> list[float]:
    """τ at the start of every step."""
    values = [float(tau(t)) if callable(tau) else float(tau) for t in ts[:-1]]
    bad = [v for v in values if not v >= 0]  # NaN included
    if bad:
        raise ValueError(f"tau must be >= 0, got {bad[0]}")
    return values


def _orders(predictor_order: int, corrector_order: int, steps: int,
            lower_order_final: bool | None) -> tuple[list[int], list[int]]:
    """Predictor and corrector orders of every step: lower while the history fills up (and on
    the final steps), the corrector at most one above the predictor then (as diffusers'); the
    last step has no corrector (0)."""
    p = [step_order(predictor_order, i + 1, i, steps, lower_order_final) for i in range(steps)]
    c = [min(corrector_order, step_order(corrector_order - 1, i + 1, i, steps,
                                         lower_order_final) + 1)
         if corrector_order and i < steps - 1 else 0 for i in range(steps)]
    return p, c


def sa_solver(model, x: Tensor, ts: Tensor, ctx: Context, tau: float | Callable = 1.0,
              predictor_order: int = 3, corrector_order: int = 4,
              lower_order_final: bool | None = None) -> Tensor:
    """SA-Solver over the grid ``ts`` (module docstring): stochasticity ``tau`` ≥ 0 (a number,
    or a function of t evaluated at each step's start), SA-Predictor of ``predictor_order``
    (1–4) points, SA-Corrector of ``corrector_order`` points (0 = none, 1–4). One NFE per step."""
    if predictor_order not in (1, 2, 3, 4):
        raise ValueError(f"predictor_order must be 1, 2, 3 or 4, got {predictor_order}")
    if corrector_order not in (0, 1, 2, 3, 4):
        raise ValueError(f"corrector_order must be 0 (no corrector), 1, 2, 3 or 4, got "
                         f"{corrector_order}")
    sde = model.sde
    steps = len(ts) - 1
    lam, s_all, sig_all = sde.log_snr(ts), sde.s(ts), sde.sigma(ts)
    taus = _taus(tau, ts)
    tau_t = torch.tensor(taus, dtype=torch.float64, device=ts.device)
    p_orders, c_orders = _orders(predictor_order, corrector_order, steps, lower_order_final)
    clean = [bool(sig == 0) for sig in sig_all[1:]]  # σ' = 0, h = ∞: the limit, no weights
    p_orders = [0 if end else k for k, end in zip(p_orders, clean)]
    c_orders = [0 if end else k for k, end in zip(c_orders, clean)]
    w_pred = sa_weights(lam, tau_t, p_orders, corrector=False)
    w_corr = sa_weights(lam, tau_t, c_orders, corrector=True)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    ms: list[Tensor] = []  # x̂0 evaluations, newest first
    pending = None  # (i, x_i, ξ_i) of the last predictor step, to correct once x̂0 at its end exists

    def update(i: int, x_i: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        return sa_update(x_i, ms[:len(w)], w, lam[i + 1] - lam[i], taus[i], s_all[i + 1],
                         sig_all[i + 1] / sig_all[i], sig_all[i + 1], noise)

    for i in range(steps):
        ms = [model.x0(x, ts[i] * ones, **ctx.cond), *ms][:max(predictor_order, corrector_order)]
        if pending is not None:  # x was the prediction: the step ends at the corrected state
            j, x_j, noise_j = pending
            x = ctx.step_done(ts[i], update(j, x_j, w_corr[j], noise_j))
        if w_pred[i] is None:  # σ' = 0 (module docstring)
            x, pending = s_all[i + 1] * ms[0], None
        else:
            noise = ctx.randn_like(x) if taus[i] > 0 else None
            pending = (i, x, noise) if w_corr[i] is not None else None
            x = update(i, x, w_pred[i], noise)
        if pending is None:
            x = ctx.step_done(ts[i + 1], x)
    return x


@register_solver("sa_solver", kind="sde", order=1, default_steps=50,
                 description="SA-Solver: stochastic Adams predictor–corrector in log-SNR, tau=1 "
                             "(0: PF-ODE), predictor_order=3, corrector_order=4, 1 NFE/step")
def sample_sa_solver(model, x, ts, ctx: Context, **opts):
    return sa_solver(model, x, ts, ctx, **opts)
